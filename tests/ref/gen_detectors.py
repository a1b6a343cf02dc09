"""Parity fixtures for detectors/: replicas of MMDetection 2.25 code (AnchorGenerator, bbox_overlaps,
DeltaXYWHBBoxCoder, MaxIoUAssigner, batched_nms, RetinaHead inference and loss) written from
specs/detectors.md, with torchvision.ops.nms as the NMS kernel. All float32 like mmdet."""
import math

import numpy as np
import torch
import torchvision


# ----------------------------------------------------------------------------------------- anchors
def mmdet_base_anchors(base_size, scales, ratios, center_offset=0.0, scale_major=True):
    w = base_size
    h = base_size
    x_center = center_offset * w
    y_center = center_offset * h
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
    else:
        ws = (w * scales[:, None] * w_ratios[None, :]).view(-1)
        hs = (h * scales[:, None] * h_ratios[None, :]).view(-1)
    base_anchors = [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs]
    return torch.stack(base_anchors, dim=-1)


def retina_scales():
    octave_scales = np.array([2 ** (i / 3) for i in range(3)])
    return torch.Tensor(octave_scales * 4)


def mmdet_grid_anchors(base, feat_h, feat_w, stride):
    shift_x = torch.arange(0, feat_w).to(torch.float32) * stride
    shift_y = torch.arange(0, feat_h).to(torch.float32) * stride
    xx = shift_x.repeat(len(shift_y))
    yy = shift_y.view(-1, 1).repeat(1, len(shift_x)).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)


def mmdet_valid_flags(feat_h, feat_w, pad_h, pad_w, stride, num_base):
    valid_h = min(int(np.ceil(pad_h / stride)), feat_h)
    valid_w = min(int(np.ceil(pad_w / stride)), feat_w)
    valid_x = torch.zeros(feat_w, dtype=torch.bool)
    valid_y = torch.zeros(feat_h, dtype=torch.bool)
    valid_x[:valid_w] = 1
    valid_y[:valid_h] = 1
    vx = valid_x.repeat(len(valid_y))
    vy = valid_y.view(-1, 1).repeat(1, len(valid_x)).view(-1)
    valid = vx & vy
    return valid[:, None].expand(valid.size(0), num_base).contiguous().view(-1)


STRIDES = [8, 16, 32, 64, 128]
RATIOS = torch.Tensor([0.5, 1.0, 2.0])


def retina_anchors(sizes):
    scales = retina_scales()
    return [mmdet_grid_anchors(mmdet_base_anchors(s, scales, RATIOS), h, w, s) for s, (h, w) in zip(STRIDES, sizes)]


def gen_anchors(w):
    scales = retina_scales()
    t = {}
    for l, s in enumerate(STRIDES):
        t[f"base{l}"] = mmdet_base_anchors(s, scales, RATIOS)
    sizes = [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)]  # a 100x150-ish padded input
    for l, (s, (h, wd)) in enumerate(zip(STRIDES, sizes)):
        t[f"grid{l}"] = mmdet_grid_anchors(t[f"base{l}"], h, wd, s)
        t[f"valid{l}"] = mmdet_valid_flags(h, wd, 90, 130, s, 9)
    # RPN-style (scales [8]) and scale_major False
    t["rpn_base0"] = mmdet_base_anchors(4, torch.Tensor([8.0]), RATIOS)
    t["minor_base0"] = mmdet_base_anchors(8, torch.Tensor([1.0, 2.0]), RATIOS, center_offset=0.5, scale_major=False)
    w.save("det_anchors", t, {"sizes": str(sizes), "pad": "90x130"})


# ----------------------------------------------------------------------------------------- boxes
def mmdet_bbox_overlaps(b1, b2, mode="iou", eps=1e-6):
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    lt = torch.max(b1[..., :, None, :2], b2[..., None, :, :2])
    rb = torch.min(b1[..., :, None, 2:], b2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    if mode in ["iou", "giou"]:
        union = area1[..., None] + area2[..., None, :] - overlap
    else:
        union = area1[..., None]
    if mode == "giou":
        enclosed_lt = torch.min(b1[..., :, None, :2], b2[..., None, :, :2])
        enclosed_rb = torch.max(b1[..., :, None, 2:], b2[..., None, :, 2:])
    eps = union.new_tensor([eps])
    union = torch.max(union, eps)
    ious = overlap / union
    if mode in ["iou", "iof"]:
        return ious
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = enclose_wh[..., 0] * enclose_wh[..., 1]
    enclose_area = torch.max(enclose_area, eps)
    return ious - (enclose_area - union) / enclose_area


def rand_boxes(g, n, lo=0.0, hi=100.0, min_wh=1.0, max_wh=60.0):
    xy = torch.rand(n, 2, generator=g) * (hi - lo) + lo
    wh = torch.rand(n, 2, generator=g) * (max_wh - min_wh) + min_wh
    return torch.cat([xy, xy + wh], 1)


def bbox2delta(proposals, gt, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0)):
    proposals = proposals.float()
    gt = gt.float()
    px = (proposals[..., 0] + proposals[..., 2]) * 0.5
    py = (proposals[..., 1] + proposals[..., 3]) * 0.5
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]
    gx = (gt[..., 0] + gt[..., 2]) * 0.5
    gy = (gt[..., 1] + gt[..., 3]) * 0.5
    gw = gt[..., 2] - gt[..., 0]
    gh = gt[..., 3] - gt[..., 1]
    dx = (gx - px) / pw
    dy = (gy - py) / ph
    dw = torch.log(gw / pw)
    dh = torch.log(gh / ph)
    deltas = torch.stack([dx, dy, dw, dh], dim=-1)
    means = deltas.new_tensor(means).unsqueeze(0)
    stds = deltas.new_tensor(stds).unsqueeze(0)
    return deltas.sub_(means).div_(stds)


def delta2bbox(rois, deltas, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0), max_shape=None,
               wh_ratio_clip=16 / 1000):
    num_bboxes, num_classes = deltas.size(0), deltas.size(1) // 4
    deltas = deltas.reshape(-1, 4)
    means = deltas.new_tensor(means).view(1, -1)
    stds = deltas.new_tensor(stds).view(1, -1)
    denorm_deltas = deltas * stds + means
    dxy = denorm_deltas[:, :2]
    dwh = denorm_deltas[:, 2:]
    rois_ = rois.repeat(1, num_classes).reshape(-1, 4)
    pxy = (rois_[:, :2] + rois_[:, 2:]) * 0.5
    pwh = rois_[:, 2:] - rois_[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = np.abs(np.log(wh_ratio_clip))
    dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    x1y1 = gxy - (gwh * 0.5)
    x2y2 = gxy + (gwh * 0.5)
    bboxes = torch.cat([x1y1, x2y2], dim=-1)
    if max_shape is not None:
        bboxes[..., 0::2].clamp_(min=0, max=max_shape[1])
        bboxes[..., 1::2].clamp_(min=0, max=max_shape[0])
    return bboxes.reshape(num_bboxes, -1)


def gen_boxes(w):
    g = torch.Generator().manual_seed(1)
    a = rand_boxes(g, 37)
    b = rand_boxes(g, 23)
    b[3] = a[5]  # an exact duplicate (IoU 1)
    b[4] = torch.tensor([200.0, 200.0, 210.0, 210.0])  # disjoint
    t = {"a": a, "b": b}
    for mode in ["iou", "iof", "giou"]:
        t[mode] = mmdet_bbox_overlaps(a, b, mode)
    # coder
    p = rand_boxes(g, 50, min_wh=4.0)
    gt = rand_boxes(g, 50, min_wh=4.0)
    means, stds = (0.01, -0.02, 0.03, 0.0), (0.1, 0.1, 0.2, 0.2)
    t["p"], t["gt"] = p, gt
    t["enc"] = bbox2delta(p, gt)
    t["enc_ms"] = bbox2delta(p, gt, means, stds)
    d = torch.randn(50, 8, generator=g) * 2.0  # some dw/dh beyond +-4.135 after * 2.5 below
    d[:, 2] *= 2.5
    d[:, 7] *= 2.5
    t["d"] = d
    t["dec"] = delta2bbox(p, d)
    t["dec_ms_clip"] = delta2bbox(p, d, means, stds, max_shape=(90, 120))
    w.save("det_boxes", t, {})


# ----------------------------------------------------------------------------------------- assigner
def mmdet_max_iou_assign(bboxes, gt_bboxes, gt_labels, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                         gt_max_assign_all=True, ignore_iof_thr=-1, gt_bboxes_ignore=None, match_low_quality=True):
    overlaps = mmdet_bbox_overlaps(gt_bboxes, bboxes)
    if ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0 and bboxes.numel() > 0:
        ignore_overlaps = mmdet_bbox_overlaps(bboxes, gt_bboxes_ignore, mode="iof")
        ignore_max_overlaps, _ = ignore_overlaps.max(dim=1)
        overlaps[:, ignore_max_overlaps > ignore_iof_thr] = -1
    num_gts, num_bboxes = overlaps.size(0), overlaps.size(1)
    assigned = overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
    if num_gts == 0 or num_bboxes == 0:
        max_overlaps = overlaps.new_zeros((num_bboxes,))
        if num_gts == 0:
            assigned[:] = 0
        return assigned, max_overlaps, overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)
    if isinstance(neg_iou_thr, float):
        assigned[(max_overlaps >= 0) & (max_overlaps < neg_iou_thr)] = 0
    else:
        assigned[(max_overlaps >= neg_iou_thr[0]) & (max_overlaps < neg_iou_thr[1])] = 0
    pos_inds = max_overlaps >= pos_iou_thr
    assigned[pos_inds] = argmax_overlaps[pos_inds] + 1
    if match_low_quality:
        for i in range(num_gts):
            if gt_max_overlaps[i] >= min_pos_iou:
                if gt_max_assign_all:
                    max_iou_inds = overlaps[i, :] == gt_max_overlaps[i]
                    assigned[max_iou_inds] = i + 1
                else:
                    assigned[gt_argmax_overlaps[i]] = i + 1
    labels = assigned.new_full((num_bboxes,), -1)
    pos = torch.nonzero(assigned > 0, as_tuple=False).squeeze()
    if pos.numel() > 0:
        labels[pos] = gt_labels[assigned[pos] - 1]
    return assigned, max_overlaps, labels


def gen_assigner(w):
    g = torch.Generator().manual_seed(2)
    anchors = torch.cat(retina_anchors([(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]))  # 96x96 input
    gt = rand_boxes(g, 6, 0.0, 80.0, 8.0, 70.0)
    gt[5] = gt[1]  # duplicate gt: ties between gts (first argmax wins; low-quality last wins)
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    ign = torch.tensor([[60.0, 0.0, 96.0, 30.0]])
    t = {"anchors": anchors, "gt": gt, "labels": labels, "ignore": ign}
    for name, kw in [("retina", {}),
                     ("rpn", dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3)),
                     ("single", dict(gt_max_assign_all=False)),
                     ("tuple", dict(neg_iou_thr=(0.1, 0.4))),
                     ("noLQ", dict(match_low_quality=False)),
                     ("ignore", dict(ignore_iof_thr=0.5, gt_bboxes_ignore=ign))]:
        a, mo, lab = mmdet_max_iou_assign(anchors, gt, labels, **kw)
        t[name + "_inds"], t[name + "_max"], t[name + "_labels"] = a, mo, lab
    # integer boxes on a grid: many exact ties of IoU between priors
    pri = torch.tensor([[x, y, x + 16.0, y + 16.0] for y in range(0, 64, 8) for x in range(0, 64, 8)])
    gt2 = torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 50.0, 60.0], [8.0, 8.0, 24.0, 24.0]])
    t["tie_priors"], t["tie_gt"] = pri, gt2
    a, mo, lab = mmdet_max_iou_assign(pri, gt2, torch.tensor([0, 1, 2]))
    t["tie_inds"], t["tie_max"], t["tie_labels"] = a, mo, lab
    w.save("det_assigner", t, {})


# ----------------------------------------------------------------------------------------- nms
def mmdet_batched_nms(boxes, scores, idxs, iou_thr, class_agnostic=False, split_thr=10000):
    if class_agnostic:
        boxes_for_nms = boxes
    else:
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    if boxes_for_nms.shape[0] < split_thr or class_agnostic:
        keep = torchvision.ops.nms(boxes_for_nms, scores, iou_thr)
    else:
        total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
        for idx in torch.unique(idxs):
            mask = (idxs == idx).nonzero(as_tuple=False).view(-1)
            k = torchvision.ops.nms(boxes_for_nms[mask], scores[mask], iou_thr)
            total_mask[mask[k]] = True
        keep = total_mask.nonzero(as_tuple=False).view(-1)
        _, inds = scores[keep].sort(descending=True, stable=True)
        keep = keep[inds]
    return keep


def gen_nms(w):
    g = torch.Generator().manual_seed(3)
    t = {}
    # small: clustered boxes, quantised scores (ties), 5 classes
    n = 300
    centers = torch.rand(12, 2, generator=g) * 200
    c = centers[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    wh = torch.rand(n, 2, generator=g) * 30 + 10
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    scores = torch.round(torch.rand(n, generator=g) * 20) / 20  # many ties
    idxs = torch.randint(0, 5, (n,), generator=g)
    t["boxes"], t["scores"], t["idxs"] = boxes, scores, idxs
    t["nms05"] = torchvision.ops.nms(boxes, scores, 0.5)
    t["nms07"] = torchvision.ops.nms(boxes, scores, 0.7)
    t["bnms05"] = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)  # coordinate trick below 4000
    t["bnms05_mmdet"] = mmdet_batched_nms(boxes, scores, idxs, 0.5)
    t["bnms05_agn"] = mmdet_batched_nms(boxes, scores, idxs, 0.5, class_agnostic=True)
    # large: per-class path (>= 10000 boxes), continuous scores
    n = 12000
    c = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 60 + 5
    bl = torch.cat([c - wh / 2, c + wh / 2], 1)
    sl = torch.rand(n, generator=g)
    il = torch.randint(0, 20, (n,), generator=g)
    t["big_boxes"], t["big_scores"], t["big_idxs"] = bl, sl, il
    t["big_bnms"] = mmdet_batched_nms(bl, sl, il, 0.5)
    t["big_tv"] = torchvision.ops.batched_nms(bl, sl, il, 0.5)
    w.save("det_nms", t, {})


# ----------------------------------------------------------------------------------------- postprocess
def filter_scores_and_topk(scores, score_thr, topk):
    valid_mask = scores > score_thr
    scores = scores[valid_mask]
    valid_idxs = torch.nonzero(valid_mask)
    num_topk = min(topk, valid_idxs.size(0))
    scores, idxs = scores.sort(descending=True, stable=True)
    scores = scores[:num_topk]
    topk_idxs = valid_idxs[idxs[:num_topk]]
    keep_idxs, labels = topk_idxs.unbind(dim=1)
    return scores, labels, keep_idxs


def mmdet_retina_postprocess(cls_scores, bbox_preds, priors, img_shape, scale_factor, C, nms_pre=1000,
                             score_thr=0.05, iou=0.5, max_per_img=100):
    mb, ms, ml = [], [], []
    for cls_score, bbox_pred, pri in zip(cls_scores, bbox_preds, priors):
        cls_score = cls_score.permute(1, 2, 0).reshape(-1, C)
        bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
        scores = cls_score.sigmoid()
        s, lab, keep = filter_scores_and_topk(scores, score_thr, nms_pre)
        bboxes = delta2bbox(pri[keep], bbox_pred[keep], max_shape=img_shape)
        mb.append(bboxes)
        ms.append(s)
        ml.append(lab)
    b = torch.cat(mb)
    b = b / b.new_tensor(scale_factor)
    s = torch.cat(ms)
    lab = torch.cat(ml)
    keep = mmdet_batched_nms(b, s, lab, iou)
    keep = keep[:max_per_img]
    return b[keep], s[keep], lab[keep]


def mmdet_retina_postprocess_legacy(cls_scores, bbox_preds, priors, img_shape, scale_factor, C, nms_pre=1000,
                                    score_thr=0.05, iou=0.5, max_per_img=100):
    mb, ms = [], []
    for cls_score, bbox_pred, pri in zip(cls_scores, bbox_preds, priors):
        scores = cls_score.permute(1, 2, 0).reshape(-1, C).sigmoid()
        bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
        if 0 < nms_pre < scores.shape[0]:
            max_scores, _ = scores.max(dim=1)
            _, topk_inds = max_scores.topk(nms_pre)
            pri, bbox_pred, scores = pri[topk_inds], bbox_pred[topk_inds], scores[topk_inds]
        mb.append(delta2bbox(pri, bbox_pred, max_shape=img_shape))
        ms.append(scores)
    b = torch.cat(mb) / torch.tensor(scale_factor)
    s = torch.cat(ms)
    # multiclass_nms
    valid = s > score_thr
    bb = b[:, None].expand(b.size(0), C, 4)[valid]
    ss = s[valid]
    lab = torch.arange(C)[None].expand_as(s)[valid]
    keep = mmdet_batched_nms(bb, ss, lab, iou)[:max_per_img]
    return bb[keep], ss[keep], lab[keep]


def gen_postprocess(w):
    g = torch.Generator().manual_seed(4)
    C, A = 6, 9
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]  # padded 128x160
    priors = retina_anchors(sizes)
    t = {}
    cls, reg = [], []
    for l, (h, wd) in enumerate(sizes):
        c = torch.randn(A * C, h, wd, generator=g) * 1.5 - 3.0
        r = torch.randn(A * 4, h, wd, generator=g) * 0.3
        t[f"cls{l}"], t[f"reg{l}"], t[f"priors{l}"] = c, r, priors[l]
        cls.append(c)
        reg.append(r)
    sf = [1.25, 1.2, 1.25, 1.2]
    b, s, lab = mmdet_retina_postprocess(cls, reg, priors, (120, 150), sf, C, nms_pre=200, max_per_img=60)
    t["boxes"], t["scores"], t["labels"] = b, s, lab
    b, s, lab = mmdet_retina_postprocess_legacy(cls, reg, priors, (120, 150), sf, C, nms_pre=200, max_per_img=60)
    t["lboxes"], t["lscores"], t["llabels"] = b, s, lab
    w.save("det_postprocess", t, {"C": str(C), "img_shape": "120x150", "nms_pre": "200", "max": "60"})


# ----------------------------------------------------------------------------------------- RetinaHead
class _ConvModule(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class RetinaHeadRef(torch.nn.Module):
    """mmdet RetinaHead (norm_cfg None), same module names."""

    def __init__(self, C, cin, feat, stacked, A=9):
        super().__init__()
        self.cls_convs = torch.nn.ModuleList([_ConvModule(cin if i == 0 else feat, feat) for i in range(stacked)])
        self.reg_convs = torch.nn.ModuleList([_ConvModule(cin if i == 0 else feat, feat) for i in range(stacked)])
        self.retina_cls = torch.nn.Conv2d(feat, A * C, 3, padding=1)
        self.retina_reg = torch.nn.Conv2d(feat, A * 4, 3, padding=1)

    def forward(self, feats):
        cls, reg = [], []
        for x in feats:
            c, r = x, x
            for m in self.cls_convs:
                c = m(c)
            for m in self.reg_convs:
                r = m(r)
            cls.append(self.retina_cls(c))
            reg.append(self.retina_reg(r))
        return cls, reg


def py_sigmoid_focal_loss(pred, target, gamma=2.0, alpha=0.25):
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    pt = (1 - pred_sigmoid) * target + pred_sigmoid * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight


def aligned_giou(pred, target, eps=1e-6):
    area1 = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = area1 + area2 - overlap
    elt = torch.min(pred[:, :2], target[:, :2])
    erb = torch.max(pred[:, 2:], target[:, 2:])
    eps_t = union.new_tensor([eps])
    union = torch.max(union, eps_t)
    ious = overlap / union
    ewh = (erb - elt).clamp(min=0)
    enclose = torch.max(ewh[:, 0] * ewh[:, 1], eps_t)
    return ious - (enclose - union) / enclose


def mmdet_retina_loss(cls_scores, bbox_preds, gt_bboxes, gt_labels, img_shapes, pad_shapes, C, giou=False):
    """AnchorHead.loss (mmdet 2.25) with RetinaNet's train_cfg: allowed_border -1, PseudoSampler."""
    N = cls_scores[0].size(0)
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    level_anchors = retina_anchors(sizes)
    flat = torch.cat(level_anchors)
    all_labels, all_lw, all_bt, all_bw = [], [], [], []
    num_total_pos = 0
    for n in range(N):
        valid = torch.cat([mmdet_valid_flags(h, w_, pad_shapes[n][0], pad_shapes[n][1], s, 9)
                           for s, (h, w_) in zip(STRIDES, sizes)])
        anchors = flat[valid]
        assigned, _, labels_a = mmdet_max_iou_assign(anchors, gt_bboxes[n], gt_labels[n])
        pos = torch.nonzero(assigned > 0, as_tuple=False).squeeze(-1).unique()
        neg = torch.nonzero(assigned == 0, as_tuple=False).squeeze(-1).unique()
        nv = anchors.size(0)
        bt = torch.zeros_like(anchors)
        bw = torch.zeros_like(anchors)
        labels = anchors.new_full((nv,), C, dtype=torch.long)
        lw = anchors.new_zeros(nv, dtype=torch.float)
        if len(pos) > 0:
            pos_gt = gt_bboxes[n][assigned[pos] - 1]
            bt[pos] = pos_gt if giou else bbox2delta(anchors[pos], pos_gt)
            bw[pos] = 1.0
            labels[pos] = gt_labels[n][assigned[pos] - 1]
            lw[pos] = 1.0
        if len(neg) > 0:
            lw[neg] = 1.0
        num_total_pos += max(pos.numel(), 1)

        def unmap(data, fill):
            ret = data.new_full((flat.size(0),) + data.size()[1:], fill)
            ret[valid] = data
            return ret
        all_labels.append(unmap(labels, C))
        all_lw.append(unmap(lw, 0))
        all_bt.append(unmap(bt, 0))
        all_bw.append(unmap(bw, 0))
    eps = torch.finfo(torch.float32).eps
    loss_cls, loss_bbox = 0, 0
    start = 0
    for l, (cs, bp) in enumerate(zip(cls_scores, bbox_preds)):
        k = level_anchors[l].size(0)
        lab = torch.stack([x[start:start + k] for x in all_labels]).reshape(-1)
        lw = torch.stack([x[start:start + k] for x in all_lw]).reshape(-1)
        bt = torch.stack([x[start:start + k] for x in all_bt]).reshape(-1, 4)
        bw = torch.stack([x[start:start + k] for x in all_bw]).reshape(-1, 4)
        start += k
        cs = cs.permute(0, 2, 3, 1).reshape(-1, C)
        target = torch.nn.functional.one_hot(lab, num_classes=C + 1)[:, :C]
        lc = py_sigmoid_focal_loss(cs, target) * lw.view(-1, 1)
        loss_cls = loss_cls + lc.sum() / (num_total_pos + eps)
        bp = bp.permute(0, 2, 3, 1).reshape(-1, 4)
        if giou:
            anchors = level_anchors[l].repeat(N, 1)
            dec = delta2bbox(anchors, bp)
            lb = (1 - aligned_giou(dec, bt)) * bw.mean(-1)
        else:
            lb = (bp - bt).abs() * bw
        loss_bbox = loss_bbox + lb.sum() / (num_total_pos + eps)
    return loss_cls, loss_bbox


def gen_retina_head(w):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    C, cin, feat, S = 4, 8, 8, 2
    head = RetinaHeadRef(C, cin, feat, S)
    with torch.no_grad():
        for name, p in head.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.08 if name.endswith("weight") else 0.05))
        head.retina_cls.bias.sub_(2.0)
    N, H, W = 2, 64, 96
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    feats = [torch.randn(N, cin, h, w_, generator=g) for h, w_ in sizes]
    img_shapes = [(64, 90), (40, 60)]
    pad_shapes = [(64, 96), (64, 64)]
    gt_bboxes = [torch.tensor([[5.0, 6.0, 40.0, 30.0], [50.0, 10.0, 88.0, 60.0], [20.0, 20.0, 36.0, 52.0]]),
                 torch.tensor([[10.0, 4.0, 50.0, 38.0]])]
    gt_labels = [torch.tensor([0, 3, 1]), torch.tensor([2])]
    t = {}
    for k, v in head.state_dict().items():
        t["head." + k] = v
    for l, f in enumerate(feats):
        t[f"feat{l}"] = f
    cls, reg = head(feats)
    for l in range(5):
        t[f"cls{l}"], t[f"reg{l}"] = cls[l], reg[l]
    for n in range(N):
        t[f"gt_boxes{n}"], t[f"gt_labels{n}"] = gt_bboxes[n], gt_labels[n]
    lc, lb = mmdet_retina_loss(cls, reg, gt_bboxes, gt_labels, img_shapes, pad_shapes, C)
    t["loss_cls"], t["loss_bbox"] = lc, lb
    head.zero_grad()
    (lc + lb).backward()
    for k, p in head.named_parameters():
        t["grad." + k] = p.grad.clone()
    cls, reg = head(feats)
    lcg, lbg = mmdet_retina_loss(cls, reg, gt_bboxes, gt_labels, img_shapes, pad_shapes, C, giou=True)
    t["giou_loss_cls"], t["giou_loss_bbox"] = lcg, lbg
    head.zero_grad()
    lbg.backward()
    for k in ["retina_reg.weight", "retina_reg.bias"]:
        t["giou_grad." + k] = dict(head.named_parameters())[k].grad.clone()
    # detections (mmdet 2.18+ inference) per image, scale factors (1.5, 1.6)
    with torch.no_grad():
        cls, reg = head(feats)
        priors = retina_anchors(sizes)
        for n in range(N):
            sf = [1.5, 1.6, 1.5, 1.6]
            b, s, lab = mmdet_retina_postprocess([c[n] for c in cls], [r[n] for r in reg], priors, img_shapes[n], sf, C)
            t[f"det_boxes{n}"], t[f"det_scores{n}"], t[f"det_labels{n}"] = b, s, lab
    w.save("det_retina_head", t, {"C": str(C), "in": str(cin), "feat": str(feat), "stacked": str(S)})


# ----------------------------------------------------------------------------------------- RetinaNet
class _BasicBlock(torch.nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + idt)


class ResNet18Ref(torch.nn.Module):
    """mmdet ResNet-18 (pytorch style) with base_channels b (b = 64 is torchvision's resnet18)."""

    def __init__(self, b):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, b, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(b)
        inpl = b
        for i in range(4):
            planes = b * 2 ** i
            layer = torch.nn.Sequential(_BasicBlock(inpl, planes, 1 if i == 0 else 2), _BasicBlock(planes, planes, 1))
            inpl = planes
            setattr(self, f"layer{i + 1}", layer)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(x, 3, 2, 1)
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs


class _Conv(torch.nn.Module):
    def __init__(self, cin, cout, k, s=1, p=0):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, s, p)

    def forward(self, x):
        return self.conv(x)


class FPNRef(torch.nn.Module):
    """mmdet FPN, start_level 1, add_extra_convs 'on_input', num_outs 5, no norm / activation."""

    def __init__(self, in_channels, out):
        super().__init__()
        self.lateral_convs = torch.nn.ModuleList([_Conv(c, out, 1) for c in in_channels[1:]])
        convs = [_Conv(out, out, 3, 1, 1) for _ in in_channels[1:]]
        convs.append(_Conv(in_channels[-1], out, 3, 2, 1))
        convs.append(_Conv(out, out, 3, 2, 1))
        self.fpn_convs = torch.nn.ModuleList(convs)

    def forward(self, inputs):
        inputs = inputs[1:]
        lat = [m(x) for m, x in zip(self.lateral_convs, inputs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + torch.nn.functional.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        outs = [self.fpn_convs[i](lat[i]) for i in range(len(lat))]
        outs.append(self.fpn_convs[3](inputs[-1]))
        outs.append(self.fpn_convs[4](outs[-1]))
        return outs


class RetinaNetRef(torch.nn.Module):
    def __init__(self, b, width, stacked, C):
        super().__init__()
        self.backbone = ResNet18Ref(b)
        self.neck = FPNRef([b, 2 * b, 4 * b, 8 * b], width)
        self.bbox_head = RetinaHeadRef(C, width, width, stacked)

    def forward(self, x):
        c = self.backbone(x)
        p = self.neck(c)
        cls, reg = self.bbox_head(p)
        return c, p, cls, reg


def gen_retinanet(w):
    g = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    C = 3
    model = RetinaNetRef(8, 16, 1, C)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        model.bbox_head.retina_cls.bias.sub_(1.5)
    model.eval()  # norm_eval: BN uses running statistics (gradients still flow to the affine)
    N = 2
    x = torch.randn(N, 3, 64, 96, generator=g)
    x[1, :, 48:, :] = 0
    x[1, :, :, 64:] = 0  # image 1 is 48x64 padded into the batch
    img_shapes = [(64, 90), (48, 60)]
    pad_shapes = [(64, 96), (64, 64)]
    gt_bboxes = [torch.tensor([[5.0, 6.0, 40.0, 30.0], [50.0, 10.0, 88.0, 60.0]]),
                 torch.tensor([[10.0, 4.0, 50.0, 38.0], [30.0, 30.0, 44.0, 46.0]])]
    gt_labels = [torch.tensor([0, 2]), torch.tensor([1, 1])]
    t = {}
    for k, v in model.state_dict().items():
        t["model." + k] = v
    c, p, cls, reg = model(x)
    t["images"] = x
    for l in range(4):
        t[f"c{l}"] = c[l]
    for l in range(5):
        t[f"p{l}"], t[f"cls{l}"], t[f"reg{l}"] = p[l], cls[l], reg[l]
    lc, lb = mmdet_retina_loss(cls, reg, gt_bboxes, gt_labels, img_shapes, pad_shapes, C)
    t["loss_cls"], t["loss_bbox"] = lc, lb
    (lc + lb).backward()
    for k in ["backbone.layer4.1.conv2.weight", "backbone.layer2.0.bn1.weight", "backbone.layer2.0.downsample.0.weight",
              "neck.lateral_convs.0.conv.weight", "neck.fpn_convs.3.conv.weight", "neck.fpn_convs.4.conv.bias",
              "bbox_head.cls_convs.0.conv.weight", "bbox_head.retina_cls.bias", "bbox_head.retina_reg.weight"]:
        t["grad." + k] = dict(model.named_parameters())[k].grad.clone()
    with torch.no_grad():
        priors = retina_anchors([tuple(q.shape[-2:]) for q in cls])
        for n in range(N):
            sf = [0.8, 0.75, 0.8, 0.75]
            b, s, lab = mmdet_retina_postprocess([q[n] for q in cls], [r[n] for r in reg], priors, img_shapes[n], sf, C)
            t[f"det_boxes{n}"], t[f"det_scores{n}"], t[f"det_labels{n}"] = b, s, lab
    w.save("det_retinanet", t, {"model": "RetinaNet R18 base 8, FPN/head width 16, 1 stacked conv, 3 classes"})
    # mmdet state-dict keys and shapes of the full-size R50 RetinaNet (80 classes)
    import torchvision
    bb = torchvision.models.resnet50()
    keys = {"backbone." + k: list(v.shape) for k, v in bb.state_dict().items() if not k.startswith("fc.")}
    neck = FPNRef([256, 512, 1024, 2048], 256)
    keys.update({"neck." + k: list(v.shape) for k, v in neck.state_dict().items()})
    head = RetinaHeadRef(80, 256, 256, 4)
    keys.update({"bbox_head." + k: list(v.shape) for k, v in head.state_dict().items()})
    import json
    w.save("det_retinanet_r50_keys", {"dummy": torch.zeros(1)}, {"keys": json.dumps(keys)})


def generate(w):
    gen_anchors(w)
    gen_boxes(w)
    gen_assigner(w)
    gen_nms(w)
    gen_postprocess(w)
    gen_retina_head(w)
    gen_retinanet(w)
