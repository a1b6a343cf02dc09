"""Parity fixtures for RepPoints (issue 10): a replica of MMDetection 2.25's RepPointsHead (forward with the
gradient_mul offset path, points2bbox moment / minmax / partial_minmax, offset_to_pts, PointAssigner +
MaxIoUAssigner targets, focal + smooth-L1 losses with their normalisers, inference) written from
specs/detectors.md section 9, with torchvision.ops.deform_conv2d as the DCN oracle. float32 like mmdet.

mmcv's DeformConv2d reads the offset channels as (y, x) per kernel tap; the generator first checks on a small
case that torchvision.ops.deform_conv2d reads them the same way (against a direct implementation of
specs/detectors.md section 10), so the oracle needs no conversion."""
import math

import torch
import torchvision

from gen_detectors import (ResNet18Ref, filter_scores_and_topk, mmdet_batched_nms, mmdet_max_iou_assign,
                           mmdet_valid_flags, py_sigmoid_focal_loss)

STRIDES = [8, 16, 32, 64, 128]
EPS = torch.finfo(torch.float32).eps


# ----------------------------------------------------------------------------------------- DCN oracle
def naive_mmcv_deform_conv(x, offset, weight, pad):
    """specs/detectors.md 10, stride 1, dilation 1, one deform group, written directly (float64)."""
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[2], offset.shape[3]
    out = torch.zeros(N, O, Ho, Wo, dtype=x.dtype)

    def at(n, c, h, w):
        return x[n, c, h, w] if 0 <= h < H and 0 <= w < W else x.new_zeros(())

    for n in range(N):
        for ho in range(Ho):
            for wo in range(Wo):
                col = torch.zeros(C, kh * kw, dtype=x.dtype)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        h = ho - pad + i + float(offset[n, 2 * k, ho, wo])
                        w = wo - pad + j + float(offset[n, 2 * k + 1, ho, wo])
                        if h <= -1 or h >= H or w <= -1 or w >= W:
                            continue
                        h0, w0 = math.floor(h), math.floor(w)
                        lh, lw = h - h0, w - w0
                        for c in range(C):
                            col[c, k] = ((1 - lh) * (1 - lw) * at(n, c, h0, w0) + (1 - lh) * lw * at(n, c, h0, w0 + 1)
                                         + lh * (1 - lw) * at(n, c, h0 + 1, w0) + lh * lw * at(n, c, h0 + 1, w0 + 1))
                out[n, :, ho, wo] = weight.reshape(O, -1) @ col.reshape(-1)
    return out


def check_dcn_oracle():
    g = torch.Generator().manual_seed(100)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    off = torch.randn(1, 18, 5, 6, generator=g, dtype=torch.float64) * 1.7
    off[0, 0, 0, 0] = 3.0  # y of tap 0 pushed far down: only y moves
    ref = naive_mmcv_deform_conv(x, off, w, 1)
    tv = torchvision.ops.deform_conv2d(x, off, w, None, stride=1, padding=1)
    assert torch.allclose(ref, tv, atol=1e-10), "torchvision.ops.deform_conv2d does not read offsets as mmcv (y, x)"
    swapped = off.view(1, 9, 2, 5, 6).flip(2).reshape(1, 18, 5, 6)
    assert not torch.allclose(ref, torchvision.ops.deform_conv2d(x, swapped, w, None, padding=1), atol=1e-3)


# ----------------------------------------------------------------------------------------- model
class DeformConvRef(torch.nn.Module):
    """mmcv DeformConv2d(cin, cout, 3, 1, 1), bias False (weight only)."""

    def __init__(self, cin, cout, k=3, pad=1):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(cout, cin, k, k))
        self.pad = pad

    def forward(self, x, offset):
        return torchvision.ops.deform_conv2d(x, offset, self.weight, None, stride=1, padding=self.pad)


class ConvModuleRef(torch.nn.Module):
    """mmcv ConvModule: conv (bias iff no norm) -> GN -> ReLU (act optional)."""

    def __init__(self, cin, cout, k, s=1, p=0, gn_groups=0, act=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, s, p, bias=gn_groups == 0)
        if gn_groups:
            self.gn = torch.nn.GroupNorm(gn_groups, cout)
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "gn"):
            x = self.gn(x)
        return torch.relu(x) if self.act else x


class RepPointsHeadRef(torch.nn.Module):
    """mmdet 2.25 RepPointsHead (center_init, no grid points), same module and parameter names."""

    def __init__(self, C, cin, feat, pfeat, stacked, gn_groups, transform="moment", num_points=9,
                 gradient_mul=0.1, base_scale=4, moment_mul=0.01):
        super().__init__()
        self.C, self.num_points, self.gradient_mul = C, num_points, gradient_mul
        self.point_base_scale, self.transform_method, self.moment_mul = base_scale, transform, moment_mul
        self.dcn_kernel = int(math.sqrt(num_points))
        self.dcn_pad = (self.dcn_kernel - 1) // 2
        base = torch.arange(-self.dcn_pad, self.dcn_pad + 1).double()
        by = base.repeat_interleave(self.dcn_kernel)
        bx = base.repeat(self.dcn_kernel)
        self.dcn_base_offset = torch.stack([by, bx], dim=1).reshape(-1).view(1, -1, 1, 1)
        self.cls_convs = torch.nn.ModuleList(
            [ConvModuleRef(cin if i == 0 else feat, feat, 3, 1, 1, gn_groups) for i in range(stacked)])
        self.reg_convs = torch.nn.ModuleList(
            [ConvModuleRef(cin if i == 0 else feat, feat, 3, 1, 1, gn_groups) for i in range(stacked)])
        self.reppoints_cls_conv = DeformConvRef(feat, pfeat, self.dcn_kernel, self.dcn_pad)
        self.reppoints_cls_out = torch.nn.Conv2d(pfeat, C, 1, 1, 0)
        self.reppoints_pts_init_conv = torch.nn.Conv2d(feat, pfeat, 3, 1, 1)
        self.reppoints_pts_init_out = torch.nn.Conv2d(pfeat, 2 * num_points, 1, 1, 0)
        self.reppoints_pts_refine_conv = DeformConvRef(feat, pfeat, self.dcn_kernel, self.dcn_pad)
        self.reppoints_pts_refine_out = torch.nn.Conv2d(pfeat, 2 * num_points, 1, 1, 0)
        if transform == "moment":
            self.moment_transfer = torch.nn.Parameter(torch.zeros(2))

    def points2bbox(self, pts, y_first=True):
        pts_reshape = pts.view(pts.shape[0], -1, 2, *pts.shape[2:])
        pts_y = pts_reshape[:, :, 0, ...] if y_first else pts_reshape[:, :, 1, ...]
        pts_x = pts_reshape[:, :, 1, ...] if y_first else pts_reshape[:, :, 0, ...]
        if self.transform_method == "minmax":
            bbox = torch.cat([pts_x.min(dim=1, keepdim=True)[0], pts_y.min(dim=1, keepdim=True)[0],
                              pts_x.max(dim=1, keepdim=True)[0], pts_y.max(dim=1, keepdim=True)[0]], dim=1)
        elif self.transform_method == "partial_minmax":
            pts_y = pts_y[:, :4, ...]
            pts_x = pts_x[:, :4, ...]
            bbox = torch.cat([pts_x.min(dim=1, keepdim=True)[0], pts_y.min(dim=1, keepdim=True)[0],
                              pts_x.max(dim=1, keepdim=True)[0], pts_y.max(dim=1, keepdim=True)[0]], dim=1)
        else:
            pts_y_mean = pts_y.mean(dim=1, keepdim=True)
            pts_x_mean = pts_x.mean(dim=1, keepdim=True)
            pts_y_std = torch.std(pts_y - pts_y_mean, dim=1, keepdim=True)
            pts_x_std = torch.std(pts_x - pts_x_mean, dim=1, keepdim=True)
            moment_transfer = (self.moment_transfer * self.moment_mul) + (
                self.moment_transfer.detach() * (1 - self.moment_mul))
            half_width = pts_x_std * torch.exp(moment_transfer[0])
            half_height = pts_y_std * torch.exp(moment_transfer[1])
            bbox = torch.cat([pts_x_mean - half_width, pts_y_mean - half_height,
                              pts_x_mean + half_width, pts_y_mean + half_height], dim=1)
        return bbox

    def forward_single(self, x):
        dcn_base_offset = self.dcn_base_offset.type_as(x)
        cls_feat, pts_feat = x, x
        for m in self.cls_convs:
            cls_feat = m(cls_feat)
        for m in self.reg_convs:
            pts_feat = m(pts_feat)
        pts_out_init = self.reppoints_pts_init_out(torch.relu(self.reppoints_pts_init_conv(pts_feat)))
        pts_out_init_grad_mul = (1 - self.gradient_mul) * pts_out_init.detach() + self.gradient_mul * pts_out_init
        dcn_offset = pts_out_init_grad_mul - dcn_base_offset
        cls_out = self.reppoints_cls_out(torch.relu(self.reppoints_cls_conv(cls_feat, dcn_offset)))
        pts_out_refine = self.reppoints_pts_refine_out(torch.relu(self.reppoints_pts_refine_conv(pts_feat, dcn_offset)))
        pts_out_refine = pts_out_refine + pts_out_init.detach()
        return cls_out, pts_out_init, pts_out_refine, cls_feat, pts_feat

    def forward(self, feats):
        outs = [self.forward_single(x) for x in feats]
        return [list(o) for o in zip(*outs)]


# ----------------------------------------------------------------------------------------- targets
def grid_points(h, w, s, with_stride=True):
    xs = torch.arange(0, w).float() * s
    ys = torch.arange(0, h).float() * s
    xx = xs.repeat(len(ys))
    yy = ys.view(-1, 1).repeat(1, len(xs)).view(-1)
    cols = [xx, yy] + ([xx.new_full((len(xx),), s), xx.new_full((len(xx),), s)] if with_stride else [])
    return torch.stack(cols, dim=-1)


def point_assign(points, gt_bboxes, gt_labels, scale=4, pos_num=1, check_ties=True):
    """mmdet PointAssigner.assign."""
    num_points, num_gts = points.shape[0], gt_bboxes.shape[0]
    assigned_gt_inds = points.new_zeros((num_points,), dtype=torch.long)
    if num_gts == 0 or num_points == 0:
        return assigned_gt_inds, assigned_gt_inds.new_full((num_points,), -1)
    points_xy = points[:, :2]
    points_stride = points[:, 2]
    points_lvl = torch.log2(points_stride).int()
    lvl_min, lvl_max = points_lvl.min(), points_lvl.max()
    gt_bboxes_xy = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
    gt_bboxes_wh = (gt_bboxes[:, 2:] - gt_bboxes[:, :2]).clamp(min=1e-6)
    gt_bboxes_lvl = ((torch.log2(gt_bboxes_wh[:, 0] / scale) + torch.log2(gt_bboxes_wh[:, 1] / scale)) / 2).int()
    gt_bboxes_lvl = torch.clamp(gt_bboxes_lvl, min=lvl_min, max=lvl_max)
    assigned_gt_dist = points.new_full((num_points,), float("inf"))
    points_range = torch.arange(points.shape[0])
    for idx in range(num_gts):
        gt_lvl = gt_bboxes_lvl[idx]
        lvl_idx = gt_lvl == points_lvl
        points_index = points_range[lvl_idx]
        lvl_points = points_xy[lvl_idx, :]
        gt_point = gt_bboxes_xy[[idx], :]
        gt_wh = gt_bboxes_wh[[idx], :]
        points_gt_dist = ((lvl_points - gt_point) / gt_wh).norm(dim=1)
        if check_ties and points_gt_dist.numel() > pos_num:
            srt = points_gt_dist.sort()[0]
            assert srt[pos_num - 1] < srt[pos_num], "PointAssigner tie: torch.topk's choice is unspecified"
        min_dist, min_dist_index = torch.topk(points_gt_dist, pos_num, largest=False)
        min_dist_points_index = points_index[min_dist_index]
        less_than_recorded_index = min_dist < assigned_gt_dist[min_dist_points_index]
        min_dist_points_index = min_dist_points_index[less_than_recorded_index]
        assigned_gt_inds[min_dist_points_index] = idx + 1
        assigned_gt_dist[min_dist_points_index] = min_dist[less_than_recorded_index]
    labels = assigned_gt_inds.new_full((num_points,), -1)
    pos = torch.nonzero(assigned_gt_inds > 0, as_tuple=False).squeeze(-1)
    if pos.numel() > 0:
        labels[pos] = gt_labels[assigned_gt_inds[pos] - 1]
    return assigned_gt_inds, labels


def point_target_single(flat_proposals, valid, gt_bboxes, gt_labels, stage, C):
    proposals = flat_proposals[valid, :]
    if stage == "init":
        assigned, _ = point_assign(proposals, gt_bboxes, gt_labels)
    else:
        assigned, _, _ = mmdet_max_iou_assign(proposals, gt_bboxes, gt_labels)
    pos = torch.nonzero(assigned > 0, as_tuple=False).squeeze(-1).unique()
    neg = torch.nonzero(assigned == 0, as_tuple=False).squeeze(-1).unique()
    nv = proposals.shape[0]
    bbox_gt = proposals.new_zeros([nv, 4])
    weights = proposals.new_zeros([nv, 4])
    labels = proposals.new_full((nv,), C, dtype=torch.long)
    label_weights = proposals.new_zeros(nv, dtype=torch.float)
    if len(pos) > 0:
        bbox_gt[pos, :] = gt_bboxes[assigned[pos] - 1]
        weights[pos, :] = 1.0
        labels[pos] = gt_labels[assigned[pos] - 1]
        label_weights[pos] = 1.0
    if len(neg) > 0:
        label_weights[neg] = 1.0

    def unmap(data, fill):
        ret = data.new_full((flat_proposals.size(0),) + data.size()[1:], fill)
        ret[valid] = data
        return ret
    return unmap(labels, C), unmap(label_weights, 0), unmap(bbox_gt, 0), unmap(weights, 0), pos, neg


def get_targets(proposals_list, valid_list, gt_bboxes, gt_labels, stage, C):
    """RepPointsHead.get_targets: per image single targets, then images_to_levels."""
    num_level = [p.size(0) for p in proposals_list[0]]
    res = [point_target_single(torch.cat(proposals_list[n]), torch.cat(valid_list[n]), gt_bboxes[n], gt_labels[n],
                               stage, C) for n in range(len(proposals_list))]
    num_total_pos = sum(max(r[4].numel(), 1) for r in res)

    def to_levels(k):
        t = torch.stack([r[k] for r in res], 0)
        out, start = [], 0
        for n in num_level:
            out.append(t[:, start:start + n])
            start += n
        return out
    return to_levels(0), to_levels(1), to_levels(2), to_levels(3), num_total_pos, res


def offset_to_pts(center_list, pred_list, num_points):
    pts_list = []
    for i_lvl in range(len(STRIDES)):
        pts_lvl = []
        for i_img in range(len(center_list)):
            pts_center = center_list[i_img][i_lvl][:, :2].repeat(1, num_points)
            pts_shift = pred_list[i_lvl][i_img]
            yx_pts_shift = pts_shift.permute(1, 2, 0).view(-1, 2 * num_points)
            y_pts_shift = yx_pts_shift[..., 0::2]
            x_pts_shift = yx_pts_shift[..., 1::2]
            xy_pts_shift = torch.stack([x_pts_shift, y_pts_shift], -1)
            xy_pts_shift = xy_pts_shift.view(*yx_pts_shift.shape[:-1], -1)
            pts_lvl.append(xy_pts_shift * STRIDES[i_lvl] + pts_center)
        pts_list.append(torch.stack(pts_lvl, 0))
    return pts_list


def smooth_l1(pred, target, beta=0.11):
    diff = torch.abs(pred - target)
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def reppoints_loss(head, cls_scores, pts_init, pts_refine, gt_bboxes, gt_labels, pad_shapes, extra=None):
    """RepPointsHead.loss (mmdet 2.25) with the reppoints train_cfg; returns (loss_cls, loss_pts_init,
    loss_pts_refine). `extra` (dict) receives the assignments for the C++ test."""
    C, P = head.C, head.num_points
    N = cls_scores[0].size(0)
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    center_list = [[grid_points(h, w_, s) for s, (h, w_) in zip(STRIDES, sizes)] for _ in range(N)]
    valid_list = [[mmdet_valid_flags(h, w_, pad_shapes[n][0], pad_shapes[n][1], s, 1)
                   for s, (h, w_) in zip(STRIDES, sizes)] for n in range(N)]
    pts_coord_init = offset_to_pts(center_list, pts_init, P)
    _, _, bbox_gt_init, bbox_w_init, num_pos_init, res_init = get_targets(center_list, valid_list, gt_bboxes,
                                                                          gt_labels, "init", C)
    pts_coord_refine = offset_to_pts(center_list, pts_refine, P)
    bbox_list = []
    for i_img, center in enumerate(center_list):
        bbox = []
        for i_lvl in range(len(pts_refine)):
            bbox_preds_init = head.points2bbox(pts_init[i_lvl].detach())
            bbox_shift = bbox_preds_init * STRIDES[i_lvl]
            bbox_center = torch.cat([center[i_lvl][:, :2], center[i_lvl][:, :2]], dim=1)
            bbox.append(bbox_center + bbox_shift[i_img].permute(1, 2, 0).reshape(-1, 4))
        bbox_list.append(bbox)
    labels_l, lw_l, bbox_gt_ref, bbox_w_ref, num_pos_ref, res_ref = get_targets(bbox_list, valid_list, gt_bboxes,
                                                                                gt_labels, "refine", C)
    if extra is not None:
        M = sum(c.size(0) for c in center_list[0])
        extra["init_pos_rows"] = torch.cat([n * M + torch.nonzero(torch.cat(valid_list[n]))[r[4], 0]
                                            for n, r in enumerate(res_init)])
        extra["refine_pos_rows"] = torch.cat([n * M + torch.nonzero(torch.cat(valid_list[n]))[r[4], 0]
                                              for n, r in enumerate(res_ref)])
        extra["labels"] = torch.cat([r[0] for r in res_ref])
        extra["label_weights"] = torch.cat([r[1] for r in res_ref])
        extra["init_boxes"] = torch.cat([torch.cat(b) for b in bbox_list])
        extra["avg_init"] = torch.tensor(float(num_pos_init))
        extra["avg_refine"] = torch.tensor(float(num_pos_ref))
    loss_cls, loss_init, loss_refine = 0, 0, 0
    for l, s in enumerate(STRIDES):
        labels = labels_l[l].reshape(-1)
        lw = lw_l[l].reshape(-1)
        cs = cls_scores[l].permute(0, 2, 3, 1).reshape(-1, C)
        target = torch.nn.functional.one_hot(labels, num_classes=C + 1)[:, :C]
        loss_cls = loss_cls + (py_sigmoid_focal_loss(cs, target) * lw.view(-1, 1)).sum() / (num_pos_ref + EPS)
        normalize = head.point_base_scale * s
        bp_init = head.points2bbox(pts_coord_init[l].reshape(-1, 2 * P), y_first=False)
        bp_ref = head.points2bbox(pts_coord_refine[l].reshape(-1, 2 * P), y_first=False)
        li = smooth_l1(bp_init / normalize, bbox_gt_init[l].reshape(-1, 4) / normalize) * bbox_w_init[l].reshape(-1, 4)
        lr = smooth_l1(bp_ref / normalize, bbox_gt_ref[l].reshape(-1, 4) / normalize) * bbox_w_ref[l].reshape(-1, 4)
        loss_init = loss_init + 0.5 * li.sum() / (num_pos_init + EPS)
        loss_refine = loss_refine + 1.0 * lr.sum() / (num_pos_ref + EPS)
    return loss_cls, loss_init, loss_refine


def reppoints_detect(head, cls_scores, pts_refine, n, img_shape, scale_factor, nms_pre=1000, score_thr=0.05,
                     iou=0.5, max_per_img=100):
    """Test forward (points2bbox of the refined points) + RepPointsHead._get_bboxes_single (mmdet 2.25)."""
    C = head.C
    mb, ms, ml = [], [], []
    for l, s in enumerate(STRIDES):
        bbox_pred = head.points2bbox(pts_refine[l])[n]
        cls_score = cls_scores[l][n]
        priors = grid_points(cls_score.shape[1], cls_score.shape[2], s, with_stride=False)
        bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
        scores = cls_score.permute(1, 2, 0).reshape(-1, C).sigmoid()
        sc, lab, keep = filter_scores_and_topk(scores, score_thr, nms_pre)
        bbox_pred, priors = bbox_pred[keep], priors[keep]
        bboxes = bbox_pred * s + torch.cat([priors[:, :2], priors[:, :2]], dim=1)
        x1 = bboxes[:, 0].clamp(min=0, max=img_shape[1])
        y1 = bboxes[:, 1].clamp(min=0, max=img_shape[0])
        x2 = bboxes[:, 2].clamp(min=0, max=img_shape[1])
        y2 = bboxes[:, 3].clamp(min=0, max=img_shape[0])
        mb.append(torch.stack([x1, y1, x2, y2], dim=-1))
        ms.append(sc)
        ml.append(lab)
    b = torch.cat(mb) / torch.tensor(scale_factor)
    s = torch.cat(ms)
    lab = torch.cat(ml)
    keep = mmdet_batched_nms(b, s, lab, iou)[:max_per_img]
    return b[keep], s[keep], lab[keep]


def randomise(module, g, bias_pts=1.0, cls_bias=3.0):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("moment_transfer"):
                p.copy_(torch.tensor([0.15, -0.1]))
            elif name.endswith("gn.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.15 if name.endswith("weight") else 0.05))
        for name, m in module.named_modules():
            if name.endswith("reppoints_pts_init_out"):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bias_pts)
            if name.endswith("reppoints_cls_out"):
                m.bias.sub_(cls_bias)


# ----------------------------------------------------------------------------------------- fixtures
def gen_points2bbox(w):
    g = torch.Generator().manual_seed(11)
    t = {}
    pts = torch.randn(7, 18, generator=g, dtype=torch.float64) * 3
    t["pts"] = pts
    for tr in ["moment", "minmax", "partial_minmax"]:
        head = RepPointsHeadRef(3, 4, 4, 4, 0, 0, transform=tr).double()
        if tr == "moment":
            with torch.no_grad():
                head.moment_transfer.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
        for yf in [True, False]:
            p = pts.clone().requires_grad_(True)
            box = head.points2bbox(p, y_first=yf)
            wts = torch.arange(1.0, 1.0 + box.numel(), dtype=torch.float64).view_as(box) / box.numel()
            (box * wts).sum().backward()
            key = f"{tr}_{'y' if yf else 'x'}"
            t[key] = box.detach()
            t[key + "_grad"] = p.grad
            if tr == "moment":
                t[key + "_grad_mt"] = head.moment_transfer.grad.clone()
                head.moment_transfer.grad = None
    w.save("rep_points2bbox", t, {})


def gen_point_assigner(w):
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    pts = torch.cat([grid_points(h, w_, s) for s, (h, w_) in zip(STRIDES, sizes)])
    valid = torch.cat([mmdet_valid_flags(h, w_, 56, 80, s, 1) for s, (h, w_) in zip(STRIDES, sizes)])
    pts = pts[valid]
    gt = torch.tensor([[5.0, 6.0, 40.0, 30.0], [8.0, 5.0, 40.0, 27.0], [50.0, 10.0, 78.0, 50.0],
                       [1.0, 1.0, 3.5, 4.0], [2.0, 3.0, 75.0, 55.0], [30.0, 20.0, 31.0, 20.5],
                       [21.0, 13.0, 26.0, 20.0]])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    t = {"points": pts, "gt": gt, "labels": labels}
    a, lab = point_assign(pts, gt, labels)
    t["inds"], t["assigned_labels"] = a, lab
    a3, lab3 = point_assign(pts, gt, labels, pos_num=3)
    t["inds_pos3"], t["labels_pos3"] = a3, lab3
    w.save("rep_point_assigner", t, {"pad": "56x80"})


def gen_reppoints_head(w):
    check_dcn_oracle()
    g = torch.Generator().manual_seed(12)
    torch.manual_seed(12)
    C, cin, feat, S, G = 3, 8, 8, 3, 4
    head = RepPointsHeadRef(C, cin, feat, feat, S, G)
    randomise(head, g)
    N = 2
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    feats = [torch.randn(N, cin, h, w_, generator=g) for h, w_ in sizes]
    img_shapes = [(64, 90), (40, 60)]
    pad_shapes = [(64, 96), (64, 64)]
    gt_bboxes = [torch.tensor([[5.0, 6.0, 40.0, 30.0], [50.0, 10.0, 87.0, 61.0], [20.0, 21.0, 35.0, 50.0]]),
                 torch.tensor([[10.0, 4.0, 51.0, 37.0], [3.0, 30.0, 13.0, 39.0]])]
    gt_labels = [torch.tensor([0, 2, 1]), torch.tensor([2, 0])]
    t = {}
    for k, v in head.state_dict().items():
        t["head." + k] = v
    for l, f in enumerate(feats):
        t[f"feat{l}"] = f
    cls, pinit, pref, cfeat, rfeat = head(feats)
    for l in range(5):
        t[f"cls{l}"], t[f"pts_init{l}"], t[f"pts_refine{l}"] = cls[l], pinit[l], pref[l]
        t[f"cls_feat{l}"], t[f"reg_feat{l}"] = cfeat[l], rfeat[l]
    for n in range(N):
        t[f"gt_boxes{n}"], t[f"gt_labels{n}"] = gt_bboxes[n], gt_labels[n]
    extra = {}
    lc, li, lr = reppoints_loss(head, cls, pinit, pref, gt_bboxes, gt_labels, pad_shapes, extra)
    assert extra["refine_pos_rows"].numel() >= 3 and extra["init_pos_rows"].numel() == 5
    for k, v in extra.items():
        t["t." + k] = v
    t["loss_cls"], t["loss_pts_init"], t["loss_pts_refine"] = lc, li, lr
    head.zero_grad()
    (lc + li + lr).backward()
    for k, p in head.named_parameters():
        t["grad." + k] = p.grad.clone()
    # loss_pts_init alone: its gradient reaches the DCNs only through nothing (init path) -> checks the
    # gradient_mul split: d loss_cls / d init_out goes through the 0.1-scaled offset path only
    head.zero_grad()
    cls, pinit, pref, _, _ = head(feats)
    lc2, _, _ = reppoints_loss(head, cls, pinit, pref, gt_bboxes, gt_labels, pad_shapes)
    lc2.backward()
    for k in ["reppoints_pts_init_out.weight", "reppoints_pts_init_out.bias", "reg_convs.0.conv.weight"]:
        t["cls_grad." + k] = dict(head.named_parameters())[k].grad.clone()
    # minmax / partial_minmax heads with the same weights
    for tr in ["minmax", "partial_minmax"]:
        h2 = RepPointsHeadRef(C, cin, feat, feat, S, G, transform=tr)
        h2.load_state_dict({k: v for k, v in head.state_dict().items() if k != "moment_transfer"})
        c2, i2, r2, _, _ = h2(feats)
        a, b, c = reppoints_loss(h2, c2, i2, r2, gt_bboxes, gt_labels, pad_shapes)
        t[f"{tr}.loss_cls"], t[f"{tr}.loss_pts_init"], t[f"{tr}.loss_pts_refine"] = a, b, c
    # detections (mmdet 2.18+ inference) per image, scale factors (1.5, 1.6)
    with torch.no_grad():
        cls, _, pref, _, _ = head(feats)
        for n in range(N):
            b, s, lab = reppoints_detect(head, cls, pref, n, img_shapes[n], [1.5, 1.6, 1.5, 1.6], score_thr=0.05)
            assert b.shape[0] > 5
            t[f"det_boxes{n}"], t[f"det_scores{n}"], t[f"det_labels{n}"] = b, s, lab
    w.save("rep_head", t, {"C": str(C), "in": str(cin), "feat": str(feat), "stacked": str(S), "gn": str(G)})


class FPNGNRef(torch.nn.Module):
    """mmdet FPN, start_level 1, add_extra_convs 'on_input', num_outs 5, GN on every conv, no activation."""

    def __init__(self, in_channels, out, groups):
        super().__init__()
        self.lateral_convs = torch.nn.ModuleList([ConvModuleRef(c, out, 1, gn_groups=groups, act=False)
                                                  for c in in_channels[1:]])
        convs = [ConvModuleRef(out, out, 3, 1, 1, groups, act=False) for _ in in_channels[1:]]
        convs.append(ConvModuleRef(in_channels[-1], out, 3, 2, 1, groups, act=False))
        convs.append(ConvModuleRef(out, out, 3, 2, 1, groups, act=False))
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


class RepPointsDetRef(torch.nn.Module):
    def __init__(self, b, width, stacked, C, groups):
        super().__init__()
        self.backbone = ResNet18Ref(b)
        self.neck = FPNGNRef([b, 2 * b, 4 * b, 8 * b], width, groups)
        self.bbox_head = RepPointsHeadRef(C, width, width, width, stacked, groups)

    def forward(self, x):
        c = self.backbone(x)
        p = self.neck(c)
        return (c, p) + tuple(self.bbox_head(p))


def gen_reppoints_detector(w):
    g = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    C = 3
    model = RepPointsDetRef(8, 16, 1, C, 4)
    randomise(model.bbox_head, g, bias_pts=0.8)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    model.eval()  # norm_eval: BN uses running statistics
    N = 2
    x = torch.randn(N, 3, 64, 96, generator=g)
    x[1, :, 48:, :] = 0
    x[1, :, :, 64:] = 0
    img_shapes = [(64, 90), (48, 60)]
    pad_shapes = [(64, 96), (64, 64)]
    gt_bboxes = [torch.tensor([[5.0, 6.0, 40.0, 30.0], [50.0, 10.0, 87.0, 61.0]]),
                 torch.tensor([[10.0, 4.0, 51.0, 37.0], [30.0, 29.0, 45.0, 46.0]])]
    gt_labels = [torch.tensor([0, 2]), torch.tensor([1, 1])]
    t = {}
    for k, v in model.state_dict().items():
        t["model." + k] = v
    conv_out = {}
    hooks = [model.neck.fpn_convs[i].conv.register_forward_hook(
        lambda mod, inp, out, i=i: conv_out.__setitem__(i, out)) for i in range(5)]
    c, p, cls, pinit, pref, _, _ = model(x)
    for h in hooks:
        h.remove()
    for i in range(5):  # neck.fpn_convs.{i}.conv outputs (before GN): the FGD / MGD hook points
        t[f"p_conv{i}"] = conv_out[i]
    t["images"] = x
    for l in range(5):
        t[f"p{l}"], t[f"cls{l}"], t[f"pts_init{l}"], t[f"pts_refine{l}"] = p[l], cls[l], pinit[l], pref[l]
    lc, li, lr = reppoints_loss(model.bbox_head, cls, pinit, pref, gt_bboxes, gt_labels, pad_shapes)
    t["loss_cls"], t["loss_pts_init"], t["loss_pts_refine"] = lc, li, lr
    (lc + li + lr).backward()
    for k in ["backbone.layer4.1.conv2.weight", "backbone.layer2.0.bn1.weight", "neck.lateral_convs.0.conv.weight",
              "neck.lateral_convs.2.gn.weight", "neck.fpn_convs.3.conv.weight", "neck.fpn_convs.4.gn.bias",
              "bbox_head.cls_convs.0.conv.weight", "bbox_head.reppoints_cls_conv.weight",
              "bbox_head.reppoints_pts_refine_conv.weight", "bbox_head.reppoints_pts_init_out.bias",
              "bbox_head.moment_transfer"]:
        t["grad." + k] = dict(model.named_parameters())[k].grad.clone()
    with torch.no_grad():
        for n in range(N):
            b, s, lab = reppoints_detect(model.bbox_head, cls, pref, n, img_shapes[n], [0.8, 0.75, 0.8, 0.75])
            t[f"det_boxes{n}"], t[f"det_scores{n}"], t[f"det_labels{n}"] = b, s, lab
    w.save("rep_detector", t, {"model": "RepPoints R18 base 8, GN(4) FPN/head width 16, 1 stacked conv, 3 classes"})


def generate(w):
    gen_points2bbox(w)
    gen_point_assigner(w)
    gen_reppoints_head(w)
    gen_reppoints_detector(w)
