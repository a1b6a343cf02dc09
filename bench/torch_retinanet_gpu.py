#!/usr/bin/env python3
"""PyTorch + cuDNN side of the GPU RetinaNet training-step comparison (issue 6; kdet side: `kdet_bench --cuda`).

    python3 bench/torch_retinanet_gpu.py [--depth 50] [--height 800] [--width 1333] [--batch 2] [--reps 20]
                                         [--warmup 5] [--recipe mmdet|torchvision] [--tf32] [--benchmark]
                                         [--deterministic]

One step = loss (torchvision RetinaNet: focal + L1, 80 classes) -> sum -> backward -> SGD step (lr 0.01,
momentum 0.9, weight decay 1e-4) -> zero_grad(set_to_none), on batch x 3 x H x W uniform [0, 1) images with 4
random boxes each, exactly the protocol of bench/bench_detector.cpp's train case. The model's transform is told
min_size = H, max_size = W so that it does not rescale (it still normalises and pads to a multiple of 32, like
the kdet batch: 800 x 1333 -> 800 x 1344). Timing: torch.cuda.synchronize() before and after each step; the
median, min and max of --reps steps after --warmup untimed ones.

Precision: by default TF32 is off for both matmul and cuDNN (full f32, what kdet computes by default); --tf32
turns it on for both (then compare with `kdet_bench --cuda --cuda-tf32`). --benchmark sets
torch.backends.cudnn.benchmark (kdet: --cuda-benchmark); --deterministic sets torch.backends.cudnn.deterministic
(what kdet does by default; `kdet_bench --cuda` passes it unless --cuda-nondeterministic). Recipes as bench/torch_detectors.py (mmdet: frozen
stem + layer1, FrozenBatchNorm2d, P6 from C5; torchvision: BatchNorm in train mode, all stages trainable).

Prints one JSON line: name, device, ms, min_ms, max_ms, all_ms, first_losses, peak_mem_mib
(torch.cuda.max_memory_allocated), versions, settings.
"""
import argparse
import json
import statistics
import sys
import time


def build(depth, recipe, h, w):
    """bench/torch_detectors.py's model (same recipes), with the transform sized for h x w inputs."""
    from torch_detectors import build as build_square  # bench/ is sys.path[0] when run as a script

    model = build_square(depth, recipe, min(h, w))
    model.transform.min_size = (min(h, w),)
    model.transform.max_size = max(h, w)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--recipe", default="mmdet")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--benchmark", action="store_true")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    import torchvision

    if not torch.cuda.is_available():
        print(json.dumps({"name": "torch_retinanet_gpu", "skipped": "torch.cuda.is_available() is False"}))
        return 0
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = a.benchmark
    torch.backends.cudnn.deterministic = a.deterministic
    torch.manual_seed(a.seed)
    dev = torch.device("cuda")

    model = build(a.depth, a.recipe, a.height, a.width).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

    g = torch.Generator().manual_seed(a.seed)
    images = [torch.rand(3, a.height, a.width, generator=g).to(dev) for _ in range(a.batch)]
    targets = []
    for _ in range(a.batch):
        side = torch.empty(4, 2).uniform_(min(a.height, a.width) / 16, min(a.height, a.width) / 2, generator=g)
        x1 = torch.rand(4, generator=g) * (a.width - side[:, 0])
        y1 = torch.rand(4, generator=g) * (a.height - side[:, 1])
        boxes = torch.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1)
        labels = torch.randint(0, 80, (4,), generator=g)
        targets.append({"boxes": boxes.to(dev), "labels": labels.to(dev)})

    first = {}

    def step():
        losses = model(images, targets)
        total = sum(losses.values())
        if not first:
            first.update({k: float(v) for k, v in losses.items()})
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    out = {
        "name": "torch_retinanet_r%d_train_b%d_%dx%d" % (a.depth, a.batch, a.height, a.width),
        "device": torch.cuda.get_device_name(0),
        "ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "all_ms": times,
        "first_losses": first,
        "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()},
        "settings": {"recipe": a.recipe, "tf32": a.tf32, "cudnn_benchmark": a.benchmark, "cudnn_deterministic": a.deterministic, "reps": a.reps,
                     "warmup": a.warmup},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
