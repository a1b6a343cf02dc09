#!/usr/bin/env python3
"""torchvision.ops.roi_align peer timings for the RoIAlign section of `make bench` (bench/bench_roi.cpp).

Same feature shapes, the same RoIs (make_rois: the formula of bench_roi.cpp) and protocol as the C++ side
(warm-up, then median and minimum of --reps timed runs; waits up to --wait-idle seconds for a quiet machine).
7x7, aligned=True, sampling_ratio=0, FP32. "fwd" runs under no_grad; "fwdbwd" is the forward plus the features'
gradient for a random output gradient. Prints one JSON object per line.
"""
import argparse
import json
import os
import sys

import torch
import torchvision
from torchvision.ops import roi_align

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peers import time_fwd_fwdbwd  # noqa: E402

# name, N, C, H, W, stride, #rois, side lo, side hi — kept in step with bench/bench_roi.cpp
CASES = [
    ("roi_p2_16_112", 2, 256, 128, 128, 4, 1024, 16.0, 112.0),
    ("roi_p4_224_448", 2, 256, 32, 32, 16, 1024, 224.0, 448.0),
]


def make_rois(n, h, w, stride, k_total, lo, hi):
    img_h, img_w = float(h * stride), float(w * stride)
    rows = []
    for k in range(k_total):
        bw = lo + (hi - lo) * ((k * 37) % 101) / 100.0
        bh = lo + (hi - lo) * ((k * 61) % 103) / 102.0
        x1 = max(0.0, img_w - bw) * ((k * 53) % 97) / 96.0
        y1 = max(0.0, img_h - bh) * ((k * 29) % 89) / 88.0
        rows.append([float(k % n), x1, y1, min(img_w, x1 + bw), min(img_h, y1 + bh)])
    return torch.tensor(rows, dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--wait-idle", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(json.dumps({"name": "info", "torch": torch.__version__, "torchvision": torchvision.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for name, n, c, h, w, stride, k, lo, hi in CASES:
        feat = torch.randn(n, c, h, w)
        rois = make_rois(n, h, w, stride, k, lo, hi)
        gy = torch.randn(k, c, 7, 7)
        leaf = feat.clone().requires_grad_()

        def fwd():
            with torch.no_grad():
                roi_align(feat, rois, 7, spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True)

        def fwdbwd():
            leaf.grad = None
            roi_align(leaf, rois, 7, spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True).backward(gy)

        time_fwd_fwdbwd(name, fwd, fwdbwd, args.warmup, args.reps, args.wait_idle)


if __name__ == "__main__":
    main()
