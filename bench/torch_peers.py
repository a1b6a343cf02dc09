#!/usr/bin/env python3
"""PyTorch peer timings for `make bench` (bench/kdet_bench.cpp runs this and prints the ratio).

Same shapes, same FLOP counting, same protocol (warm-up, then the median and minimum of --reps timed runs) as the C++
side. NCHW, FP32, bias=False, torch.set_num_threads(--threads). "fwd" runs under no_grad; "fwdbwd" is the
forward plus backward of sum(y * gy) for the weight gradient and, except for the stem, the input gradient.
Prints one JSON object per line: {"name", "fwd_ms", "fwdbwd_ms", "load"} and one {"name": "sgemm2048", "ms"};
"load" is the CPU (in cores) other processes used while the case ran. Before each case it waits (up to
--wait-idle seconds) for the machine to be quiet.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

# name, N, C, H, W, O, k, stride, pad, input_grad
CASES = [
    ("stem7x7s2", 2, 3, 512, 512, 64, 7, 2, 3, False),
    ("3x3_64_128", 2, 64, 128, 128, 64, 3, 1, 1, True),
    ("3x3_256_64", 2, 256, 64, 64, 256, 3, 1, 1, True),
    ("3x3_512_16", 2, 512, 16, 16, 512, 3, 1, 1, True),
    ("1x1_256_1024_32", 2, 256, 32, 32, 1024, 1, 1, 0, True),
]


def _busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def _self():
    t = os.times()
    return t.user + t.system


def other_load(window=0.5):
    b0, s0, t0 = _busy(), _self(), time.perf_counter()
    time.sleep(window)
    return ((_busy() - b0) - (_self() - s0)) / (time.perf_counter() - t0)


def wait_idle(max_s):
    t0 = time.perf_counter()
    load = other_load()
    while load > 0.15 and time.perf_counter() - t0 < max_s:
        load = other_load()
    return load


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def time_fwd_fwdbwd(name, fwd, fwdbwd, warmup, reps, wait_s):
    """Waits for a quiet machine, times fwd and fwdbwd (median, min) and prints the case's JSON line."""
    wait_idle(wait_s)
    b0, s0, t0 = _busy(), _self(), time.perf_counter()
    f, fmin = timed(fwd, warmup, reps)
    fb, fbmin = timed(fwdbwd, warmup, reps)
    load = ((_busy() - b0) - (_self() - s0)) / (time.perf_counter() - t0)
    print(json.dumps({"name": name, "fwd_ms": f, "fwdbwd_ms": fb, "fwd_min_ms": fmin,
                      "fwdbwd_min_ms": fbmin, "load": load}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--wait-idle", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = set(x for x in args.only.split(",") if x)
    print(json.dumps({"name": "info", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "mkldnn": torch.backends.mkldnn.is_available()}), flush=True)
    for name, n, c, h, w, o, k, s, p, igrad in CASES:
        if only and name not in only:
            continue
        x = torch.randn(n, c, h, w)
        wt = torch.randn(o, c, k, k) * 0.05
        with torch.no_grad():
            y = F.conv2d(x, wt, None, s, p)
        gy = torch.randn_like(y)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, wt, None, s, p)

        xg = x.clone().requires_grad_(igrad)
        wg = wt.clone().requires_grad_(True)

        def fwdbwd():
            xg.grad = None
            wg.grad = None
            F.conv2d(xg, wg, None, s, p).backward(gy)

        wait_idle(args.wait_idle)
        b0, s0, t0 = _busy(), _self(), time.perf_counter()
        f, fmin = timed(fwd, args.warmup, args.reps)
        fb, fbmin = timed(fwdbwd, args.warmup, args.reps)
        load = ((_busy() - b0) - (_self() - s0)) / (time.perf_counter() - t0)
        print(json.dumps({"name": name, "fwd_ms": f, "fwdbwd_ms": fb, "fwd_min_ms": fmin,
                          "fwdbwd_min_ms": fbmin, "load": load}), flush=True)
    if not only or "sgemm2048" in only:
        a = torch.randn(2048, 2048)
        b = torch.randn(2048, 2048)
        med, mn = timed(lambda: torch.mm(a, b), args.warmup, args.reps)
        print(json.dumps({"name": "sgemm2048", "ms": med, "min_ms": mn}), flush=True)


if __name__ == "__main__":
    main()
