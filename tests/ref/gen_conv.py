"""conv2d and pooling parity fixtures (tests/engine/test_conv.cpp, tests/engine/test_pool.cpp).

Inputs are float32 (what the engine computes in); references are computed by torch in float64 from those
same float32 values, so the C++ side can check its f32 result against torch with an f32 tolerance and its
f64 path tightly. Each case stores x, w, (b), r (a random output weighting), y = conv(x), and the gradients
of sum(y * r) w.r.t. x, w, b. Args go in the metadata as "sh,sw,ph,pw,dh,dw,groups".
"""
import torch
import torch.nn.functional as F

# (N, C, H, W, O, KH, KW, stride, pad, dilation, groups, bias)
CONV_CASES = [
    (2, 3, 9, 11, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    (2, 4, 10, 9, 6, 3, 3, (2, 2), (1, 1), (1, 1), 2, False),
    (1, 4, 12, 12, 8, 3, 3, (1, 1), (2, 2), (2, 2), 1, True),
    (2, 6, 8, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 6, True),      # depthwise
    (2, 8, 7, 9, 16, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),     # 1x1 direct path
    (1, 3, 33, 30, 16, 7, 7, (2, 2), (3, 3), (1, 1), 1, False),  # stem-like
    (2, 8, 9, 9, 12, 1, 1, (2, 2), (0, 0), (1, 1), 4, False),    # strided grouped 1x1
    (2, 4, 11, 13, 6, 3, 5, (2, 1), (1, 2), (1, 2), 2, True),    # asymmetric everything
    (2, 32, 20, 18, 40, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),  # several GEMM panels
    (1, 64, 6, 5, 128, 3, 3, (1, 1), (1, 1), (1, 1), 32, True),  # ResNeXt-like grouped 3x3
]

# (kind, N, C, H, W, kernel, stride, pad, ceil_mode, count_include_pad)
POOL_CASES = [
    ("max", 2, 3, 9, 10, 3, 2, 1, False, True),
    ("max", 1, 2, 7, 7, 2, 2, 0, True, True),
    ("max", 2, 2, 8, 11, 3, 2, 1, True, True),
    ("max", 1, 4, 6, 6, 2, 1, 1, False, True),
    ("avg", 2, 3, 9, 10, 3, 2, 1, False, True),
    ("avg", 2, 3, 9, 10, 3, 2, 1, False, False),
    ("avg", 1, 2, 8, 11, 3, 2, 1, True, True),
    ("avg", 1, 2, 8, 11, 3, 2, 1, True, False),
    ("avg", 2, 2, 7, 7, 2, 2, 0, True, True),
]


def generate(w):
    g = torch.Generator().manual_seed(20261121)
    for i, (n, c, h, wd, o, kh, kw, s, p, d, grp, bias) in enumerate(CONV_CASES):
        x = torch.randn(n, c, h, wd, generator=g)
        wt = torch.randn(o, c // grp, kh, kw, generator=g) * (1.0 / (c // grp * kh * kw) ** 0.5)
        b = torch.randn(o, generator=g) if bias else None
        x64 = x.double().requires_grad_()
        w64 = wt.double().requires_grad_()
        b64 = b.double().requires_grad_() if bias else None
        y = F.conv2d(x64, w64, b64, stride=s, padding=p, dilation=d, groups=grp)
        r = torch.randn(y.shape, generator=g)
        (y * r.double()).sum().backward()
        t = {"x": x, "w": wt, "r": r, "y": y.detach(), "gx": x64.grad, "gw": w64.grad}
        if bias:
            t["b"] = b
            t["gb"] = b64.grad
        args = f"{s[0]},{s[1]},{p[0]},{p[1]},{d[0]},{d[1]},{grp}"
        w.save(f"conv2d_{i}", t, {"args": args, "bias": int(bias)})
    for i, (kind, n, c, h, wd, k, s, p, ceil, cip) in enumerate(POOL_CASES):
        x = torch.randn(n, c, h, wd, generator=g)
        x64 = x.double().requires_grad_()
        if kind == "max":
            y = F.max_pool2d(x64, k, s, p, ceil_mode=ceil)
        else:
            y = F.avg_pool2d(x64, k, s, p, ceil_mode=ceil, count_include_pad=cip)
        r = torch.randn(y.shape, generator=g)
        (y * r.double()).sum().backward()
        w.save(f"pool2d_{i}", {"x": x, "r": r, "y": y.detach(), "gx": x64.grad},
               {"kind": kind, "kernel": k, "stride": s, "pad": p, "ceil_mode": int(ceil), "count_include_pad": int(cip)})
