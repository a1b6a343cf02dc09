#!/usr/bin/env python3
"""torchvision.ops.deform_conv2d peer timings for the DCN section of `make bench` (bench/bench_dcn.cpp).

Same shapes, offsets and protocol as the C++ side (warm-up, then median and minimum of --reps timed runs; waits
up to --wait-idle seconds for a quiet machine before each case). FP32, NCHW, no bias. "fwd" runs under no_grad;
"fwdbwd" is the forward plus the backward of sum(y * gy) for the input, offset, (mask) and weight gradients.
Prints one JSON object per line: {"name", "fwd_ms", "fwdbwd_ms", "fwd_min_ms", "fwdbwd_min_ms", "fwd_cpu_ms",
"fwdbwd_cpu_ms" (process CPU time per call, all threads, warm-up included), "load"}.
--device cuda (kdet_bench --cuda --only dcn): the same cases on the GPU, each call followed by
torch.cuda.synchronize() (--tf32 allows TF32 in cuDNN / cuBLAS; torchvision's DCN kernel itself is plain f32).
"""
import argparse
import json
import os
import sys
import time

import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peers import _busy, _self, timed, wait_idle  # noqa: E402

# name, N, C, H, W, O, stride, mask (3x3, pad 1, deform_groups 1) — kept in step with bench/bench_dcn.cpp
CASES = [
    ("dcn_reppoints_256_64", 2, 256, 64, 64, 256, 1, False),
    ("dcn_r50_c4_256_32", 2, 256, 32, 32, 256, 1, False),
    ("dcnv2_r50_c4_256_32", 2, 256, 32, 32, 256, 1, True),
    ("dcn_r50_c3s2_128_64", 2, 128, 64, 64, 128, 2, False),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--wait-idle", type=float, default=20.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tf32", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    if gpu:
        if not torch.cuda.is_available():
            sys.exit("torch_dcn.py: no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = set(x for x in args.only.split(",") if x)
    info = {"name": "info", "torch": torch.__version__, "threads": torch.get_num_threads()}
    if gpu:
        info["device"] = torch.cuda.get_device_name(dev)
    print(json.dumps(info), flush=True)
    for name, n, c, h, w, o, s, use_mask in CASES:
        if only and name not in only:
            continue
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        x = torch.randn(n, c, h, w)
        wt = torch.randn(o, c, 3, 3) * 0.05
        off = torch.randn(n, 18, ho, wo) * 2.0
        mask = torch.rand(n, 9, ho, wo) if use_mask else None
        gy = torch.randn(n, o, ho, wo)
        x, wt, off, gy = x.to(dev), wt.to(dev), off.to(dev), gy.to(dev)
        mask = mask.to(dev) if use_mask else None

        def fwd():
            with torch.no_grad():
                deform_conv2d(x, off, wt, None, stride=s, padding=1, mask=mask)
            sync()

        leaves = [t.clone().requires_grad_() for t in (x, off, wt)]
        mg = mask.clone().requires_grad_() if use_mask else None

        def fwdbwd():
            for t in leaves:
                t.grad = None
            if mg is not None:
                mg.grad = None
            deform_conv2d(leaves[0], leaves[1], leaves[2], None, stride=s, padding=1, mask=mg).backward(gy)
            sync()

        wait_idle(args.wait_idle)
        b0, s0, t0 = _busy(), _self(), time.perf_counter()
        calls = args.warmup + args.reps
        c0 = _self()
        f, fmin = timed(fwd, args.warmup, args.reps)
        c1 = _self()
        fb, fbmin = timed(fwdbwd, args.warmup, args.reps)
        c2 = _self()
        load = ((_busy() - b0) - (_self() - s0)) / (time.perf_counter() - t0)
        print(json.dumps({"name": name, "fwd_ms": f, "fwdbwd_ms": fb, "fwd_min_ms": fmin, "fwdbwd_min_ms": fbmin,
                          "fwd_cpu_ms": (c1 - c0) * 1e3 / calls, "fwdbwd_cpu_ms": (c2 - c1) * 1e3 / calls,
                          "load": load}), flush=True)


if __name__ == "__main__":
    main()
