"""Bilinear resize reference for data/transforms.cpp: torch.nn.functional.interpolate(bilinear,
align_corners=False, no antialias) = the continuous version of cv2 INTER_LINEAR (half-pixel centres,
edge clamp). kdet's uint8 fixed-point resize must agree to within 1 grey level.
When OpenCV (cv2) is importable, its INTER_LINEAR output is stored too (case<i>.cv2) and the test
requires kdet to match it exactly (mmcv.imresize calls cv2.resize)."""
import torch
import torch.nn.functional as F


def generate(w):
    try:
        import cv2
    except ImportError:
        cv2 = None
    g = torch.Generator().manual_seed(7)
    tensors, meta = {}, {}
    cases = [((37, 53), (80, 100)), ((120, 90), (61, 47)), ((64, 64), (64, 99)), ((50, 70), (23, 140)),
             ((9, 300), (27, 1000)), ((480, 640), (800, 1067))]
    for i, ((h, wd), (nh, nw)) in enumerate(cases):
        img = torch.randint(0, 256, (h, wd, 3), generator=g, dtype=torch.uint8)
        if i % 2 == 1:  # smooth images too (where rounding, not aliasing, dominates)
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
            img[..., 0] = ((xx * 255) // max(wd - 1, 1)).to(torch.uint8)
            img[..., 1] = ((yy * 255) // max(h - 1, 1)).to(torch.uint8)
        x = img.permute(2, 0, 1)[None].double()
        y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        tensors[f"case{i}.input"] = img
        tensors[f"case{i}.output"] = y.contiguous()
        if cv2 is not None:
            r = cv2.resize(img.numpy(), (nw, nh), interpolation=cv2.INTER_LINEAR)
            tensors[f"case{i}.cv2"] = torch.from_numpy(r.copy())
            meta["cv2"] = cv2.__version__
    meta["num_cases"] = len(cases)
    w.save("data_resize", tensors, meta)
