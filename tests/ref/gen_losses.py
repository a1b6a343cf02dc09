"""PyTorch references for engine/ops/losses (float64): outputs (reduction='none') and the gradient of
sum(loss * gy) w.r.t. the prediction for a fixed upstream gradient gy."""
import torch
import torch.nn.functional as F
import torchvision


def _grad(fn, pred, gen):
    p = pred.clone().requires_grad_(True)
    y = fn(p)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(gy)
    return y.detach(), gy, p.grad


def mmdet_giou_loss(pred, target, eps=1e-6):
    """mmdet giou_loss = 1 - bbox_overlaps(pred, target, mode='giou', is_aligned=True, eps)."""
    area1 = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = area1 + area2 - overlap
    e = union.new_tensor([eps])
    union = torch.max(union, e)
    ious = overlap / union
    elt = torch.min(pred[:, :2], target[:, :2])
    erb = torch.max(pred[:, 2:], target[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = torch.max(ewh[:, 0] * ewh[:, 1], e)
    gious = ious - (enclose - union) / enclose
    return 1 - gious


def mmdet_iou(pred, target, eps=1e-6):
    area1 = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = torch.max(area1 + area2 - overlap, area1.new_tensor([eps]))
    return overlap / union


def _boxes(gen, n, scale=20.0):
    xy = torch.rand((n, 2), generator=gen, dtype=torch.float64) * scale
    wh = torch.rand((n, 2), generator=gen, dtype=torch.float64) * scale * 0.5 + 1.0
    return torch.cat([xy, xy + wh], 1)


def generate(w):
    gen = torch.Generator().manual_seed(777)
    # Focal loss: hard one-hot and soft targets, including large |logits|.
    x = torch.randn((64, 10), generator=gen, dtype=torch.float64) * 3.0
    x[0, :5] = torch.tensor([-30.0, -12.0, 15.0, 40.0, 0.0], dtype=torch.float64)
    lab = torch.randint(0, 11, (64,), generator=gen)
    t_hard = torch.zeros((64, 10), dtype=torch.float64)
    for i, l in enumerate(lab.tolist()):
        if l < 10:
            t_hard[i, l] = 1.0
    t_soft = torch.rand((64, 10), generator=gen, dtype=torch.float64)
    for name, t, gamma, alpha in [("loss_focal_hard", t_hard, 2.0, 0.25), ("loss_focal_soft", t_soft, 2.0, 0.25),
                                  ("loss_focal_g15", t_hard, 1.5, 0.4), ("loss_focal_noalpha", t_soft, 2.0, -1.0)]:
        y, gy, gx = _grad(lambda p: torchvision.ops.sigmoid_focal_loss(p, t, alpha=alpha, gamma=gamma,
                                                                       reduction="none"), x, gen)
        w.save(name, {"x": x, "t": t, "gy": gy, "y": y, "gx": gx}, {"gamma": gamma, "alpha": alpha})

    # GIoU / IoU: random overlapping, non-overlapping and nested boxes.
    tgt = _boxes(gen, 48)
    pred = tgt + torch.randn((48, 4), generator=gen, dtype=torch.float64) * 2.0
    pred[:, 2:] = torch.max(pred[:, 2:], pred[:, :2] + 0.5)
    pred[0] = torch.tensor([0.0, 0.0, 2.0, 3.0], dtype=torch.float64)      # disjoint
    tgt[0] = torch.tensor([5.0, 6.0, 9.0, 8.5], dtype=torch.float64)
    pred[1] = torch.tensor([1.0, 1.0, 10.0, 12.0], dtype=torch.float64)    # target nested inside
    tgt[1] = torch.tensor([3.0, 2.5, 6.0, 7.0], dtype=torch.float64)
    pred[2] = torch.tensor([3.2, 2.7, 5.1, 6.3], dtype=torch.float64)      # prediction nested inside
    tgt[2] = torch.tensor([1.0, 1.0, 10.0, 12.0], dtype=torch.float64)
    pred[3] = torch.tensor([0.0, 0.0, 4.0, 4.0], dtype=torch.float64)      # disjoint diagonally
    tgt[3] = torch.tensor([-7.0, -9.0, -2.0, -1.0], dtype=torch.float64)
    pred[4] = torch.tensor([6.0, 5.5, 3.0, 4.0], dtype=torch.float64)      # inverted (decoded, unclipped) box
    tgt[4] = torch.tensor([2.0, 3.0, 7.0, 6.5], dtype=torch.float64)
    y, gy, gx = _grad(lambda p: mmdet_giou_loss(p, tgt, 1e-6), pred, gen)
    w.save("loss_giou", {"pred": pred, "t": tgt, "gy": gy, "y": y, "gx": gx})
    # Cross-check of the formula against torchvision (differs only by eps handling).
    tv = torchvision.ops.generalized_box_iou_loss(pred, tgt, reduction="none")
    assert torch.allclose(tv, y, atol=1e-6), (tv - y).abs().max()
    for mode in ("linear", "square", "log"):
        def f(p, mode=mode):
            ious = mmdet_iou(p, tgt).clamp(min=1e-6)
            return {"linear": 1 - ious, "square": 1 - ious ** 2, "log": -ious.log()}[mode]
        y, gy, gx = _grad(f, pred, gen)
        w.save(f"loss_iou_{mode}", {"pred": pred, "t": tgt, "gy": gy, "y": y, "gx": gx})

    # Cross entropy with ignored rows.
    x = torch.randn((40, 81), generator=gen, dtype=torch.float64) * 2.5
    lab = torch.randint(0, 81, (40,), generator=gen)
    lab[3] = -100
    lab[17] = -100
    y, gy, gx = _grad(lambda p: F.cross_entropy(p, lab, reduction="none", ignore_index=-100), x, gen)
    w.save("loss_ce", {"x": x, "labels": lab, "gy": gy, "y": y, "gx": gx})

    x = torch.randn((30, 7), generator=gen, dtype=torch.float64) * 4.0
    x[0, :3] = torch.tensor([-50.0, 50.0, 0.0], dtype=torch.float64)
    t = torch.rand((30, 7), generator=gen, dtype=torch.float64)
    t[1:10] = (t[1:10] > 0.5).double()
    y, gy, gx = _grad(lambda p: F.binary_cross_entropy_with_logits(p, t, reduction="none"), x, gen)
    w.save("loss_bce_logits", {"x": x, "t": t, "gy": gy, "y": y, "gx": gx})

    p = torch.rand((30, 7), generator=gen, dtype=torch.float64) * 0.98 + 0.01
    y, gy, gx = _grad(lambda q: F.binary_cross_entropy(q, t, reduction="none"), p, gen)
    w.save("loss_bce", {"x": p, "t": t, "gy": gy, "y": y, "gx": gx})

    pred = torch.randn((50, 4), generator=gen, dtype=torch.float64)
    t = torch.randn((50, 4), generator=gen, dtype=torch.float64)
    for beta, name in [(1.0, "loss_smooth_l1_1"), (1.0 / 9.0, "loss_smooth_l1_19"), (0.11, "loss_smooth_l1_011"),
                       (0.0, "loss_smooth_l1_0")]:
        y, gy, gx = _grad(lambda q: F.smooth_l1_loss(q, t, reduction="none", beta=beta), pred, gen)
        w.save(name, {"x": pred, "t": t, "gy": gy, "y": y, "gx": gx}, {"beta": beta})
    y, gy, gx = _grad(lambda q: F.l1_loss(q, t, reduction="none"), pred, gen)
    w.save("loss_l1", {"x": pred, "t": t, "gy": gy, "y": y, "gx": gx})
