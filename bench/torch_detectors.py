#!/usr/bin/env python3
"""PyTorch/torchvision peers of the detector section of `make bench` (bench/bench_detector.cpp).

One case per process (the C++ bench starts one process per case, so that the peak RSS is that case's peak, model
building, interpreter and torch import included, as in specs/cpu_peers.md §4; read as VmHWM, see status_mib):

    python3 bench/torch_detectors.py --case r50_train --size 512 --reps 5 --warmup 1 --recipe mmdet --threads 2

Cases: {r18,r50}_{train,infer}. RetinaNet with num_classes=80 (the cls head outputs 80 x 9 logits per location,
as MMDetection's 80-class COCO RetinaNet), min_size = max_size = --size, weights=None.
  train: model.train(), 2 images of 3 x size x size (uniform [0, 1), normalised by the model's transform),
         4 random boxes per image (side size/16..size/2, labels 0..79); loss = sum of the loss dict; zero_grad
         (set_to_none), backward, SGD step (lr 0.01, momentum 0.9, weight decay 1e-4).
  infer: model.eval(), 1 image under torch.no_grad(), transform + postprocess included.
Recipes:
  mmdet:       resnet_fpn_backbone(norm_layer=FrozenBatchNorm2d, trainable_layers=3,
               extra_blocks=LastLevelP6P7(C5 channels, 256)), i.e. stem + layer1 frozen, BN frozen, P6 from C5
               (MMDetection retinanet_r{18,50}_fpn_1x: frozen_stages=1, norm_eval, add_extra_convs='on_input').
  torchvision: the cpu_peers §4 recipe: norm_layer=BatchNorm2d, trainable_layers=5,
               extra_blocks=LastLevelP6P7(256, 256) (= retinanet_resnet50_fpn(weights=None, weights_backbone=None)).
Prints one JSON line: name, ms (median), min_ms, max_ms, all_ms, load, maxrss_mib, gflop (forward, 1 image,
conv + linear, 2 x MACs, counted with forward hooks after the timed part), first_losses or detections, versions.
"""
import argparse
import json
import os
import statistics
import time


def status_mib(key):
    """A "Vm<key>:  1234 kB" line of /proc/self/status, in MiB (-1 when missing). Peak RSS is VmHWM, this address
    space's own high-water mark: ru_maxrss of a process spawned by the bench starts at the bench's peak (Linux keeps
    the replaced address space's mark across exec). Also used by bench/torch_faster_rcnn.py."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def _busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def _self():
    t = os.times()
    return t.user + t.system


def timed_reps(step, warmup, reps):
    """Runs step() warmup + reps times: per-rep wall and process-CPU ms of the reps, and the cores other
    processes used over the whole run (load)."""
    b0, s0, t0 = _busy(), _self(), time.perf_counter()
    for _ in range(warmup):
        step()
    ts, cs = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), _self()
        step()
        ts.append((time.perf_counter() - t) * 1e3)
        cs.append((_self() - c) * 1e3)
    load = ((_busy() - b0) - (_self() - s0)) / (time.perf_counter() - t0)
    return ts, cs, load


def build(depth, recipe, size):
    import torch
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    name = "resnet%d" % depth
    c5 = 2048 if depth >= 50 else 512
    if recipe == "mmdet":
        backbone = resnet_fpn_backbone(backbone_name=name, weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d,
                                       trainable_layers=3, returned_layers=[2, 3, 4],
                                       extra_blocks=LastLevelP6P7(c5, 256))
    elif recipe == "torchvision":
        backbone = resnet_fpn_backbone(backbone_name=name, weights=None, norm_layer=torch.nn.BatchNorm2d,
                                       trainable_layers=5, returned_layers=[2, 3, 4],
                                       extra_blocks=LastLevelP6P7(256, 256))
    else:
        raise SystemExit("--recipe must be mmdet or torchvision")
    return RetinaNet(backbone, num_classes=80, min_size=size, max_size=size)


def count_gflop(model, size):
    """Forward GFLOP of one image (conv + linear, 2 x MACs), with forward hooks."""
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        g = hooked_gflop(model, lambda: model([torch.rand(3, size, size)]))
    model.train(was)
    return g


def hooked_gflop(model, fn):
    """GFLOP (conv + linear, 2 x MACs) of the forward that fn() runs on `model`, counted with forward hooks (also
    used by bench/torch_faster_rcnn.py)."""
    import torch

    total = [0.0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            k = m.in_features
        total[0] += 2.0 * out.numel() * k

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    fn()
    for h in hs:
        h.remove()
    return total[0] / 1e9


def random_targets(s, n=2, label_lo=0, label_hi=80):
    """n images 3 x s x s (uniform [0, 1)) and 4 random boxes each (side s/16..s/2, inside), labels in
    [label_lo, label_hi) (also used by bench/torch_faster_rcnn.py)."""
    import torch

    images = [torch.rand(3, s, s) for _ in range(n)]
    targets = []
    for _ in range(n):
        wh = torch.empty(4, 2).uniform_(s / 16, s / 2)
        xy = torch.rand(4, 2) * (s - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(label_lo, label_hi, (4,))})
    return images, targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--recipe", default="mmdet")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_name, pass_name = args.case.split("_")
    depth = {"r18": 18, "r50": 50}[model_name]
    model = build(depth, args.recipe, args.size)
    s = args.size
    out = {"name": args.case, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "threads": torch.get_num_threads()}

    if pass_name == "train":
        model.train()
        images, targets = random_targets(s)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                              weight_decay=1e-4)
        first = {}

        def step():
            losses = model(images, targets)
            loss = sum(losses.values())
            if not first:
                first.update({k: float(v) for k, v in losses.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif pass_name == "infer":
        model.eval()
        image = [torch.rand(3, s, s)]
        ndet = [0]

        def step():
            with torch.no_grad():
                d = model(image)
            ndet[0] = int(d[0]["boxes"].shape[0])
    else:
        raise SystemExit("case must be <r18|r50>_<train|infer>")

    ts, _, load = timed_reps(step, args.warmup, args.reps)
    # peak RSS now, before the FLOP-counting forward (1 image, no_grad: no larger than inference anyway).
    out["maxrss_mib"] = status_mib("VmHWM")
    out.update({"ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "all_ms": ts, "load": load})
    if pass_name == "train":
        out["first_losses"] = first
    else:
        out["detections"] = ndet[0]
    out["gflop"] = count_gflop(model, s)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
