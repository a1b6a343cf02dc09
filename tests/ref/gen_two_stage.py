"""Parity fixtures for the two-stage detectors' RoI side (issue 9): replicas of MMDetection 2.25's
SingleRoIExtractor (with torchvision.ops.roi_align(aligned=True, sampling_ratio=0) as the RoIAlign kernel),
Shared2FCBBoxHead (targets, loss, get_bboxes), StandardRoIHead and CascadeRoIHead (training on given
proposals with every candidate sampled, refine_bboxes, test-time logit averaging), written from
specs/detectors.md 7-8 and 11. float32 like mmdet. Box helpers come from gen_detectors.py."""
import torch
import torch.nn.functional as F
import torchvision

from gen_detectors import bbox2delta, delta2bbox, mmdet_batched_nms, mmdet_max_iou_assign

FLT_EPS = torch.finfo(torch.float32).eps
CASCADE_STDS = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]


# ----------------------------------------------------------------------------------------- RoI extractor
def map_roi_levels(rois, num_levels, finest_scale=56):
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    target_lvls = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return target_lvls.clamp(min=0, max=num_levels - 1).long()


def roi_extract(feats, rois, strides=(4, 8, 16, 32), out=7):
    lv = map_roi_levels(rois, len(strides))
    res = feats[0].new_zeros(rois.size(0), feats[0].size(1), out, out)
    for i, s in enumerate(strides):
        inds = (lv == i).nonzero(as_tuple=False).squeeze(1)
        if inds.numel() > 0:
            res[inds] = torchvision.ops.roi_align(feats[i], rois[inds], (out, out), spatial_scale=1.0 / s,
                                                  sampling_ratio=0, aligned=True)
    return res


def bbox2roi(bbox_list):
    rois = []
    for i, b in enumerate(bbox_list):
        rois.append(torch.cat([b.new_full((b.size(0), 1), float(i)), b[:, :4]], 1))
    return torch.cat(rois, 0)


# ----------------------------------------------------------------------------------------- bbox head
class BBoxHeadRef(torch.nn.Module):
    def __init__(self, in_ch, fc, C, agnostic, roi=7):
        super().__init__()
        self.shared_fcs = torch.nn.ModuleList([torch.nn.Linear(in_ch * roi * roi, fc), torch.nn.Linear(fc, fc)])
        self.fc_cls = torch.nn.Linear(fc, C + 1)
        self.fc_reg = torch.nn.Linear(fc, 4 if agnostic else 4 * C)
        self.C, self.agnostic = C, agnostic

    def forward(self, x):
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


def get_targets(samples, C, stds):
    labels, lw, bt, bw = [], [], [], []
    for s in samples:
        P, Ng = s["pos_bboxes"].size(0), s["neg_bboxes"].size(0)
        n = P + Ng
        lab = torch.full((n,), C, dtype=torch.long)
        w = torch.zeros(n)
        t = torch.zeros(n, 4)
        wt = torch.zeros(n, 4)
        if P > 0:
            lab[:P] = s["pos_gt_labels"]
            w[:P] = 1.0
            t[:P] = bbox2delta(s["pos_bboxes"], s["pos_gt_bboxes"], stds=stds)
            wt[:P] = 1.0
        if Ng > 0:
            w[-Ng:] = 1.0
        labels.append(lab), lw.append(w), bt.append(t), bw.append(wt)
    return torch.cat(labels), torch.cat(lw), torch.cat(bt), torch.cat(bw)


def bbox_loss(cls_score, bbox_pred, labels, label_weights, bbox_targets, bbox_weights, C, agnostic, smooth_l1):
    avg = max(float((label_weights > 0).sum()), 1.0)
    ce = F.cross_entropy(cls_score, labels, reduction="none")
    loss_cls = (ce * label_weights).sum() / (avg + FLT_EPS)
    pos = (labels >= 0) & (labels < C)
    R = bbox_pred.size(0)
    if not pos.any():
        return loss_cls, bbox_pred[pos].sum()
    if agnostic:
        pred = bbox_pred.view(R, 4)[pos]
    else:
        pred = bbox_pred.view(R, -1, 4)[pos, labels[pos]]
    d = torch.abs(pred - bbox_targets[pos])
    if smooth_l1:
        d = torch.where(d < 1.0, 0.5 * d * d / 1.0, d - 0.5 * 1.0)
    loss_bbox = (d * bbox_weights[pos]).sum() / (R + FLT_EPS)
    return loss_cls, loss_bbox


def multiclass_nms(multi_bboxes, multi_scores, score_thr, iou, max_num):
    N, C = multi_scores.size(0), multi_scores.size(1) - 1
    if multi_bboxes.shape[1] > 4:
        bboxes = multi_bboxes.view(N, -1, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(N, C, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(C, dtype=torch.long).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > score_thr).nonzero(as_tuple=False).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    keep = mmdet_batched_nms(bboxes, scores, labels, iou)[:max_num]
    return bboxes[keep], scores[keep], labels[keep]


def get_bboxes(rois, cls_score, bbox_pred, img_shape, scale_factor, stds, score_thr=0.05, nms=0.5, max_num=100):
    scores = F.softmax(cls_score, dim=-1)
    bboxes = delta2bbox(rois[:, 1:], bbox_pred, stds=stds, max_shape=img_shape)
    sf = bboxes.new_tensor(scale_factor)
    bboxes = (bboxes.view(bboxes.size(0), -1, 4) / sf).view(bboxes.size(0), -1)
    return multiclass_nms(bboxes, scores, score_thr, nms, max_num)


def regress_by_class(rois, label, bbox_pred, img_shape, stds, agnostic):
    if not agnostic:
        label = label * 4
        inds = torch.stack((label, label + 1, label + 2, label + 3), 1)
        bbox_pred = torch.gather(bbox_pred, 1, inds)
    if rois.size(1) == 4:
        return delta2bbox(rois, bbox_pred, stds=stds, max_shape=img_shape)
    bboxes = delta2bbox(rois[:, 1:], bbox_pred, stds=stds, max_shape=img_shape)
    return torch.cat((rois[:, [0]], bboxes), dim=1)


def sample_all(proposals, gt, gt_labels, iou):
    """MaxIoUAssigner(iou, iou, iou, no low-quality) + RandomSampler(add_gt) when every candidate fits in
    the sample (count <= expected): deterministic, ascending indices."""
    G = gt.size(0)
    assigned, _, lab = mmdet_max_iou_assign(proposals[:, :4], gt, gt_labels, pos_iou_thr=iou, neg_iou_thr=iou,
                                            min_pos_iou=iou, match_low_quality=False)
    cand = torch.cat([gt, proposals[:, :4]])
    assigned = torch.cat([torch.arange(1, G + 1), assigned])
    lab = torch.cat([gt_labels, lab])
    pos = (assigned > 0).nonzero(as_tuple=False).squeeze(1)
    neg = (assigned == 0).nonzero(as_tuple=False).squeeze(1)
    return {"pos_inds": pos, "neg_inds": neg, "pos_bboxes": cand[pos], "neg_bboxes": cand[neg],
            "pos_gt_bboxes": gt[assigned[pos] - 1], "pos_gt_labels": lab[pos], "pos_is_gt": pos < G}


# ----------------------------------------------------------------------------------------- data
def jittered(g, gt, n, scale, img_h, img_w):
    idx = torch.randint(0, gt.size(0), (n,), generator=g)
    b = gt[idx].clone()
    wh = torch.cat([b[:, 2:] - b[:, :2], b[:, 2:] - b[:, :2]], 1)
    b = b + torch.randn(n, 4, generator=g) * wh * scale
    b[:, 0::2] = b[:, 0::2].clamp(0, img_w)
    b[:, 1::2] = b[:, 1::2].clamp(0, img_h)
    b[:, 2:] = torch.max(b[:, 2:], b[:, :2] + 2.0)
    return b


def random_boxes(g, n, img_h, img_w):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([img_w * 0.8, img_h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([img_w * 0.5, img_h * 0.5]) + 4.0
    b = torch.cat([xy, xy + wh], 1)
    b[:, 2] = b[:, 2].clamp(max=img_w)
    b[:, 3] = b[:, 3].clamp(max=img_h)
    return b


def scene(seed, C=3, ch=8):
    """Two images (img_shape 96x128 and 80x112, padded batch 96x128), P2..P6 features, GT, proposals."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(96, 128), (80, 112)]
    feats = [torch.randn(2, ch, 96 // s, 128 // s, generator=g) for s in (4, 8, 16, 32, 64)]
    gts = [torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0], [30.0, 40.0, 50.0, 90.0]]),
           torch.tensor([[5.0, 5.0, 100.0, 75.0], [60.0, 30.0, 80.0, 60.0]])]
    labels = [torch.tensor([0, 2, 1]), torch.tensor([1, 1])]
    props, test_props = [], []
    for i, (h, w) in enumerate(shapes):
        b = torch.cat([jittered(g, gts[i], 14, 0.06, h, w), jittered(g, gts[i], 10, 0.25, h, w),
                       random_boxes(g, 12, h, w)])
        s = torch.rand(b.size(0), 1, generator=g)
        props.append(torch.cat([b, s], 1))
        bt = torch.cat([jittered(g, gts[i], 16, 0.1, h, w), random_boxes(g, 14, h, w)])
        test_props.append(torch.cat([bt, torch.rand(bt.size(0), 1, generator=g)], 1))
    return g, shapes, feats, gts, labels, props, test_props


def init_head(head, g):
    with torch.no_grad():
        for fc in head.shared_fcs:
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * (1.0 / fc.weight.size(1)) ** 0.5)
            fc.bias.copy_(torch.randn(fc.bias.shape, generator=g) * 0.1)
        head.fc_cls.weight.copy_(torch.randn(head.fc_cls.weight.shape, generator=g) * 0.3)
        head.fc_cls.bias.copy_(torch.randn(head.fc_cls.bias.shape, generator=g) * 0.1)
        head.fc_reg.weight.copy_(torch.randn(head.fc_reg.weight.shape, generator=g) * 0.1)
        head.fc_reg.bias.copy_(torch.randn(head.fc_reg.bias.shape, generator=g) * 0.05)


def save_scene(t, shapes, feats, gts, labels, props, test_props, scale_factors):
    for l, f in enumerate(feats):
        t[f"feat{l}"] = f
    for i in range(2):
        t[f"gt_boxes{i}"], t[f"gt_labels{i}"] = gts[i], labels[i]
        t[f"proposals{i}"], t[f"test_proposals{i}"] = props[i], test_props[i]
        t[f"img_shape{i}"] = torch.tensor(shapes[i])
        t[f"scale_factor{i}"] = torch.tensor(scale_factors[i])


# ----------------------------------------------------------------------------------------- fixtures
def gen_extractor(w):
    g = torch.Generator().manual_seed(91)
    N, C, H, W = 2, 4, 464, 400
    feats = [torch.randn(N, C, -(-H // s), -(-W // s), generator=g).requires_grad_() for s in (4, 8, 16, 32)]
    # scales 10..500 cover P2..P5; some boxes cross the border, one is a point
    k = 40
    cx = torch.rand(k, generator=g) * W
    cy = torch.rand(k, generator=g) * H
    side = torch.exp(torch.linspace(2.3, 6.3, k))
    ar = torch.rand(k, generator=g) + 0.5
    bw, bh = side * ar.sqrt(), side / ar.sqrt()
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    boxes[7] = torch.tensor([50.0, 60.0, 50.0, 60.0])
    idx = torch.randint(0, N, (k, 1), generator=g).float()
    rois = torch.cat([idx, boxes], 1)
    out = roi_extract(feats, rois)
    go = torch.randn(out.shape, generator=g)
    out.backward(go)
    t = {"rois": rois, "levels": map_roi_levels(rois, 4), "out": out, "grad_out": go}
    for l, f in enumerate(feats):
        t[f"feat{l}"] = f.detach()
        t[f"grad_feat{l}"] = f.grad
    w.save("rcnn_roi_extractor", t, {})


def gen_faster(w):
    C, ch, fc = 3, 8, 16
    g, shapes, feats, gts, labels, props, test_props = scene(92, C, ch)
    feats = [f.requires_grad_() for f in feats]
    head = BBoxHeadRef(ch, fc, C, agnostic=False)
    init_head(head, g)
    stds = (0.1, 0.1, 0.2, 0.2)
    samples = [sample_all(props[i], gts[i], labels[i], 0.5) for i in range(2)]
    rois = bbox2roi([torch.cat([s["pos_bboxes"], s["neg_bboxes"]]) for s in samples])
    cls, reg = head(roi_extract(feats[:4], rois))
    lab, lw, bt, bw = get_targets(samples, C, stds)
    loss_cls, loss_bbox = bbox_loss(cls, reg, lab, lw, bt, bw, C, agnostic=False, smooth_l1=False)
    (loss_cls + loss_bbox).backward()
    t = {f"head.{k}": v.detach() for k, v in head.state_dict().items()}
    t.update({f"grad.{k}": v.grad for k, v in head.named_parameters()})
    sf = [(1.5, 1.25, 1.5, 1.25), (0.8, 0.75, 0.8, 0.75)]
    save_scene(t, shapes, [f.detach() for f in feats], gts, labels, props, test_props, sf)
    for l in range(4):
        t[f"grad_feat{l}"] = feats[l].grad if feats[l].grad is not None else torch.zeros_like(feats[l])
    for i, s in enumerate(samples):
        t[f"pos_inds{i}"], t[f"neg_inds{i}"] = s["pos_inds"], s["neg_inds"]
    t.update({"rois": rois, "cls_score": cls.detach(), "bbox_pred": reg.detach(), "labels": lab,
              "label_weights": lw, "bbox_targets": bt, "bbox_weights": bw, "loss_cls": loss_cls.detach(),
              "loss_bbox": loss_bbox.detach()})
    # inference on the test proposals
    with torch.no_grad():
        trois = bbox2roi(test_props)
        tc, tr = head(roi_extract(feats[:4], trois))
        n0 = test_props[0].size(0)
        for i, (a, b) in enumerate([(0, n0), (n0, trois.size(0))]):
            db, ds, dl = get_bboxes(trois[a:b], tc[a:b], tr[a:b], shapes[i], sf[i], stds)
            t[f"det_boxes{i}"], t[f"det_scores{i}"], t[f"det_labels{i}"] = db, ds, dl
        t["test_cls_score"] = tc
    w.save("rcnn_faster_head", t, {})


def gen_cascade(w):
    C, ch, fc = 3, 8, 16
    g, shapes, feats, gts, labels, props, test_props = scene(93, C, ch)
    feats = [f.requires_grad_() for f in feats]
    heads = [BBoxHeadRef(ch, fc, C, agnostic=True) for _ in range(3)]
    for h in heads:
        init_head(h, g)
    t = {}
    for s, h in enumerate(heads):
        t.update({f"head.{s}.{k}": v.detach() for k, v in h.state_dict().items()})
    ious, lws = [0.5, 0.6, 0.7], [1.0, 0.5, 0.25]
    proposal_list = [p for p in props]
    total = 0
    for s in range(3):
        samples = [sample_all(proposal_list[i], gts[i], labels[i], ious[s]) for i in range(2)]
        rois = bbox2roi([torch.cat([x["pos_bboxes"], x["neg_bboxes"]]) for x in samples])
        cls, reg = heads[s](roi_extract(feats[:4], rois))
        lab, lw, bt, bw = get_targets(samples, C, CASCADE_STDS[s])
        lc, lb = bbox_loss(cls, reg, lab, lw, bt, bw, C, agnostic=True, smooth_l1=True)
        total = total + lws[s] * (lc + lb)
        t.update({f"s{s}.rois": rois, f"s{s}.cls_score": cls.detach(), f"s{s}.bbox_pred": reg.detach(),
                  f"s{s}.labels": lab, f"s{s}.bbox_targets": bt, f"s{s}.loss_cls": lc.detach(),
                  f"s{s}.loss_bbox": lb.detach()})
        for i, x in enumerate(samples):
            t[f"s{s}.pos_inds{i}"], t[f"s{s}.neg_inds{i}"] = x["pos_inds"], x["neg_inds"]
        if s < 2:
            with torch.no_grad():
                roi_labels = torch.where(lab == C, cls[:, :-1].argmax(1), lab)
                new = []
                for i in range(2):
                    inds = (rois[:, 0] == i).nonzero(as_tuple=False).squeeze(1)
                    b = regress_by_class(rois[inds, 1:], roi_labels[inds], reg[inds], shapes[i], CASCADE_STDS[s], True)
                    isgt = samples[i]["pos_is_gt"]
                    keep = torch.ones(inds.numel(), dtype=torch.bool)
                    keep[:isgt.numel()] = ~isgt
                    new.append(b[keep])
                    t[f"s{s}.refined{i}"] = b[keep]
                proposal_list = new
    total.backward()
    t.update({f"grad.{s}.{k}": v.grad for s, h in enumerate(heads) for k, v in h.named_parameters()})
    sf = [(1.5, 1.25, 1.5, 1.25), (0.8, 0.75, 0.8, 0.75)]
    save_scene(t, shapes, [f.detach() for f in feats], gts, labels, props, test_props, sf)
    for l in range(4):
        t[f"grad_feat{l}"] = feats[l].grad if feats[l].grad is not None else torch.zeros_like(feats[l])
    t["total_loss"] = total.detach()
    # inference: logits averaged over the stages, stage-3 deltas on the stage-3 input RoIs
    with torch.no_grad():
        rois = bbox2roi(test_props)
        counts = [p.size(0) for p in test_props]
        ms = []
        for s in range(3):
            cls, reg = heads[s](roi_extract(feats[:4], rois))
            ms.append(cls)
            if s < 2:
                parts = []
                for i, (a, b) in enumerate([(0, counts[0]), (counts[0], sum(counts))]):
                    lab = cls[a:b, :-1].argmax(dim=1)
                    parts.append(regress_by_class(rois[a:b], lab, reg[a:b], shapes[i], CASCADE_STDS[s], True))
                rois = torch.cat(parts)
                t[f"test_rois{s + 1}"] = rois
        score = sum(ms) / float(len(ms))
        t["test_cls_score"] = score
        for i, (a, b) in enumerate([(0, counts[0]), (counts[0], sum(counts))]):
            db, ds, dl = get_bboxes(rois[a:b], score[a:b], reg[a:b], shapes[i], sf[i], CASCADE_STDS[2])
            t[f"det_boxes{i}"], t[f"det_scores{i}"], t[f"det_labels{i}"] = db, ds, dl
    w.save("rcnn_cascade_head", t, {})


def generate(w):
    gen_extractor(w)
    gen_faster(w)
    gen_cascade(w)
