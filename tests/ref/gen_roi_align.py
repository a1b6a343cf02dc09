"""Parity fixtures for engine/ops/roi_align: torchvision.ops.roi_align (== mmcv RoIAlign, mode avg) forward
and backward (torch autograd), on random features and RoIs including RoIs partly or wholly outside the
map, tiny and degenerate RoIs; sampling_ratio 0 (adaptive) and 2; aligned True (and False once)."""
import torch
import torchvision


def rand_rois(g, n_img, k, img_h, img_w, dtype):
    """RoIs in image coordinates: regular, partly outside, tiny (< 1 px on the map), degenerate."""
    b = torch.randint(0, n_img, (k,), generator=g).to(dtype)
    x1 = torch.rand(k, generator=g, dtype=dtype) * img_w * 1.2 - 0.1 * img_w
    y1 = torch.rand(k, generator=g, dtype=dtype) * img_h * 1.2 - 0.1 * img_h
    w = torch.rand(k, generator=g, dtype=dtype) * img_w * 0.8 + 0.5
    h = torch.rand(k, generator=g, dtype=dtype) * img_h * 0.8 + 0.5
    rois = torch.stack([b, x1, y1, x1 + w, y1 + h], 1)
    extra = torch.tensor([
        [0, 1.0, 1.0, 2.5, 3.0],                 # tiny
        [1 % n_img, -30.0, -20.0, 5.0, 6.0],      # mostly outside top-left
        [0, img_w - 3.0, img_h - 2.0, img_w + 40.0, img_h + 30.0],  # outside bottom-right
        [0, img_w + 10.0, 3.0, img_w + 30.0, 9.0],  # wholly outside
        [1 % n_img, 5.0, 5.0, 5.0, 5.0],           # zero size
        [0, 8.0, 8.0, 6.0, 7.0],                   # x2 < x1
        [0, 0.0, 0.0, float(img_w), float(img_h)],  # whole image
    ], dtype=dtype)
    return torch.cat([rois, extra], 0)


def case(g, n, c, h, w, scale, out, ratio, aligned, k, dtype):
    feat = torch.randn(n, c, h, w, generator=g, dtype=dtype, requires_grad=True)
    rois = rand_rois(g, n, k, h / scale, w / scale, dtype)
    y = torchvision.ops.roi_align(feat, rois, out, spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
    gy = torch.randn(y.shape, generator=g, dtype=dtype)
    (gf,) = torch.autograd.grad(y, feat, gy)
    return {"feat": feat.detach(), "rois": rois, "out": y.detach(), "grad_out": gy, "grad_feat": gf}


def generate(w):
    g = torch.Generator().manual_seed(9)
    cases = [
        # name, n, c, h, w, spatial_scale, (out_h, out_w), sampling_ratio, aligned, k, dtype
        ("adaptive_f64", 2, 3, 11, 13, 0.25, (7, 7), 0, True, 12, torch.float64),
        ("ratio2_f64", 2, 2, 9, 10, 0.5, (3, 4), 2, True, 10, torch.float64),
        ("unaligned_f64", 1, 2, 8, 12, 0.125, (5, 5), 0, False, 8, torch.float64),
        ("adaptive_f32", 3, 8, 40, 36, 0.25, (7, 7), 0, True, 30, torch.float32),
    ]
    for name, n, c, h, wd, scale, out, ratio, aligned, k, dtype in cases:
        t = case(g, n, c, h, wd, scale, out, ratio, aligned, k, dtype)
        w.save("roi_align_" + name, t, {"spatial_scale": scale, "out_h": out[0], "out_w": out[1],
                                        "sampling_ratio": ratio, "aligned": int(aligned)})
