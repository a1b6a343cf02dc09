"""Parity fixtures for detectors/rpn_head: a replica of MMDetection 2.25's RPNHead (forward, AnchorHead
targets with sampling, BCE + L1 / SmoothL1 losses, _get_bboxes_single / _bbox_post_process proposals)
written from specs/detectors.md 7.1-7.3 and 5, with torchvision.ops.nms as the NMS kernel.

The random sampler is made deterministic by a sampler that takes every candidate (num larger than the
number of anchors), so targets and losses are exactly mmdet's for that configuration. The head runs in
float64 (losses and weight gradients compared tightly); proposals are computed from its outputs cast to
float32, like mmdet."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_detectors import (bbox2delta, delta2bbox, mmdet_base_anchors, mmdet_batched_nms, mmdet_grid_anchors,
                           mmdet_max_iou_assign, mmdet_valid_flags)

STRIDES = [4, 8, 16, 32, 64]
RATIOS = torch.Tensor([0.5, 1.0, 2.0])
SCALES = torch.Tensor([8.0])
EPS = torch.finfo(torch.float32).eps


class RPNHeadRef(nn.Module):
    def __init__(self, cin, feat, A=3):
        super().__init__()
        self.rpn_conv = nn.Conv2d(cin, feat, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat, A, 1)
        self.rpn_reg = nn.Conv2d(feat, A * 4, 1)

    def forward(self, feats):
        cls, reg = [], []
        for x in feats:
            x = F.relu(self.rpn_conv(x))
            cls.append(self.rpn_cls(x))
            reg.append(self.rpn_reg(x))
        return cls, reg


def rpn_anchors(sizes):
    return [mmdet_grid_anchors(mmdet_base_anchors(s, SCALES, RATIOS), h, w, s) for s, (h, w) in zip(STRIDES, sizes)]


def rpn_loss(cls_scores, bbox_preds, gts, img_shapes, pad_shapes, allowed_border, beta):
    """mmdet AnchorHead.loss for the RPN with a take-everything RandomSampler."""
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    mlvl = rpn_anchors(sizes)
    anchors = torch.cat(mlvl)
    n = cls_scores[0].shape[0]
    all_labels, all_lw, all_bt, all_bw = [], [], [], []
    num_pos, num_neg = 0, 0
    for i in range(n):
        valid = torch.cat([mmdet_valid_flags(h, w, pad_shapes[i][0], pad_shapes[i][1], s, 3)
                           for s, (h, w) in zip(STRIDES, sizes)])
        if allowed_border >= 0:
            ih, iw = img_shapes[i]
            inside = valid & (anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border) & \
                (anchors[:, 2] < iw + allowed_border) & (anchors[:, 3] < ih + allowed_border)
        else:
            inside = valid
        a_in = anchors[inside]
        gt = gts[i]
        no_labels = torch.zeros(gt.shape[0], dtype=torch.long)  # the RPN ignores gt labels
        assigned, _, _ = mmdet_max_iou_assign(a_in, gt, no_labels, pos_iou_thr=0.7, neg_iou_thr=0.3,
                                              min_pos_iou=0.3)
        pos = torch.nonzero(assigned > 0).view(-1)  # sampler takes all; .unique() sorts
        neg = torch.nonzero(assigned == 0).view(-1)
        labels = torch.full((a_in.shape[0],), 1, dtype=torch.long)
        lw = torch.zeros(a_in.shape[0])
        bt = torch.zeros(a_in.shape[0], 4)
        bw = torch.zeros(a_in.shape[0], 4)
        if pos.numel() > 0:
            bt[pos] = bbox2delta(a_in[pos], gt[assigned[pos] - 1])
            bw[pos] = 1.0
            labels[pos] = 0
            lw[pos] = 1.0
        lw[neg] = 1.0

        def unmap(x, fill):
            out = x.new_full((anchors.shape[0],) + x.shape[1:], fill)
            out[inside] = x
            return out
        all_labels.append(unmap(labels, 1))
        all_lw.append(unmap(lw, 0))
        all_bt.append(unmap(bt, 0))
        all_bw.append(unmap(bw, 0))
        num_pos += max(pos.numel(), 1)
        num_neg += max(neg.numel(), 1)
    avg = num_pos + num_neg
    labels, lw, bt, bw = (torch.stack(x) for x in (all_labels, all_lw, all_bt, all_bw))
    loss_cls, loss_bbox = 0.0, 0.0
    start = 0
    for c, r in zip(cls_scores, bbox_preds):  # per level, same avg_factor, summed (mmdet)
        m = c.shape[1] * c.shape[2] * c.shape[3]
        sl = slice(start, start + m)
        start += m
        pred = c.permute(0, 2, 3, 1).reshape(-1, 1)
        lab = labels[:, sl].reshape(-1)
        bin_lab = torch.zeros_like(pred)
        fg = (lab >= 0) & (lab < 1)
        bin_lab[fg, lab[fg]] = 1.0
        w = lw[:, sl].reshape(-1, 1).to(pred)
        l = F.binary_cross_entropy_with_logits(pred, bin_lab, reduction="none")
        loss_cls = loss_cls + (l * w).sum() / (avg + EPS)
        rp = r.permute(0, 2, 3, 1).reshape(-1, 4)
        t = bt[:, sl].reshape(-1, 4).to(rp)
        bwl = bw[:, sl].reshape(-1, 4).to(rp)
        d = (rp - t).abs()
        if beta > 0:
            d = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
        loss_bbox = loss_bbox + (d * bwl).sum() / (avg + EPS)
    return loss_cls, loss_bbox, labels, lw, avg


def rpn_proposals(cls_scores, bbox_preds, img_shape, nms_pre, max_per_img, iou, min_bbox_size=0.0):
    """mmdet RPNHead._get_bboxes_single + _bbox_post_process for one image (maps [A,H,W], [4A,H,W])."""
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    mlvl_anchors = rpn_anchors(sizes)
    scores_l, preds_l, anchors_l, ids_l = [], [], [], []
    for lvl, (c, r, anc) in enumerate(zip(cls_scores, bbox_preds, mlvl_anchors)):
        s = c.permute(1, 2, 0).reshape(-1).sigmoid()
        p = r.permute(1, 2, 0).reshape(-1, 4)
        if 0 < nms_pre < s.shape[0]:
            ranked, inds = s.sort(descending=True, stable=True)
            inds = inds[:nms_pre]
            s = ranked[:nms_pre]
            p = p[inds]
            anc = anc[inds]
        scores_l.append(s)
        preds_l.append(p)
        anchors_l.append(anc)
        ids_l.append(torch.full((s.shape[0],), lvl, dtype=torch.long))
    scores = torch.cat(scores_l)
    proposals = delta2bbox(torch.cat(anchors_l), torch.cat(preds_l), max_shape=img_shape)
    ids = torch.cat(ids_l)
    if min_bbox_size >= 0:
        w = proposals[:, 2] - proposals[:, 0]
        h = proposals[:, 3] - proposals[:, 1]
        valid = (w > min_bbox_size) & (h > min_bbox_size)
        if not valid.all():
            proposals, scores, ids = proposals[valid], scores[valid], ids[valid]
    if proposals.numel() == 0:
        return proposals.new_zeros(0, 5)
    keep = mmdet_batched_nms(proposals, scores, ids, iou)
    dets = torch.cat([proposals[keep], scores[keep][:, None]], 1)
    return dets[:max_per_img]


def generate(w):
    g = torch.Generator().manual_seed(17)
    cin, feat = 8, 8
    torch.manual_seed(17)
    head = RPNHeadRef(cin, feat).double()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.15)
        head.rpn_cls.bias.add_(-1.0)
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # a 64x96 batch tensor
    feats = [torch.randn(3, cin, h, wd, generator=g, dtype=torch.float64) for h, wd in sizes]
    img_shapes = [(64, 96), (30, 60), (60, 90)]
    pad_shapes = [(64, 96), (32, 64), (64, 96)]
    gts = [torch.tensor([[10.0, 8.0, 40.0, 50.0], [50.0, 20.0, 90.0, 40.0], [2.0, 30.0, 20.0, 62.0],
                         [60.0, 5.0, 95.0, 60.0]]),
           torch.tensor([[5.0, 3.0, 33.0, 28.0], [30.0, 10.0, 58.0, 29.0], [40.0, 2.0, 48.0, 12.0]]),
           torch.zeros(0, 4)]
    t = {}
    for i, x in enumerate(feats):
        t[f"feat{i}"] = x
    for k, v in head.state_dict().items():
        t["w." + k] = v
    for i, gt in enumerate(gts):
        t[f"gt{i}"] = gt
    cls, reg = head(feats)
    for l, (c, r) in enumerate(zip(cls, reg)):
        t[f"cls{l}"], t[f"reg{l}"] = c.detach(), r.detach()
    for name, border, beta in [("faster", -1, 0.0), ("cascade", 0, 1.0 / 9.0)]:
        head.zero_grad()
        lc, lb, labels, lw, avg = rpn_loss(cls, reg, gts, img_shapes, pad_shapes, border, beta)
        (lc + lb).backward(retain_graph=True)
        t[f"{name}_loss_cls"], t[f"{name}_loss_bbox"] = lc.detach(), lb.detach()
        t[f"{name}_labels"], t[f"{name}_label_weights"] = labels.reshape(-1), lw.reshape(-1)
        t[f"{name}_avg_factor"] = torch.tensor(float(avg))
        for k, p in head.named_parameters():
            t[f"{name}_grad.{k}"] = p.grad.detach().clone()
    # proposals from the float32 maps (train-like config: no top-k at most levels; test-like: top-k 40)
    for name, nms_pre, max_per, iou in [("train", 2000, 1000, 0.7), ("test", 40, 30, 0.7), ("tight", 25, 12, 0.3)]:
        for i in range(3):
            props = rpn_proposals([c[i].float().detach() for c in cls], [r[i].float().detach() for r in reg],
                                  img_shapes[i], nms_pre, max_per, iou)
            t[f"props_{name}_{i}"] = props
    w.save("rpn_head", t, {"img_shapes": str(img_shapes), "pad_shapes": str(pad_shapes),
                           "proposal_cfgs": "train 2000/1000/0.7, test 40/30/0.7, tight 25/12/0.3"})
