#!/usr/bin/env python3
"""PyTorch/torchvision peer of the Faster R-CNN section of `make bench` (bench/bench_two_stage.cpp).

One case per process (the C++ bench starts one process per case, so that the peak RSS, VmHWM, is that case's):

    python3 bench/torch_faster_rcnn.py --case train --size 512 --reps 5 --warmup 1 --threads 2

The model is torchvision's FasterRCNN with a ResNet-50-FPN backbone (= fasterrcnn_resnet50_fpn(weights=None)),
configured as close to MMDetection's faster_rcnn_r50_fpn_1x_coco (configs/faster_rcnn_r50_fpn_1x.cfg) as
torchvision's knobs allow:
  backbone  resnet_fpn_backbone('resnet50', weights=None, norm_layer=BatchNorm2d, trainable_layers=3) with every
            BatchNorm2d put in eval mode after model.train() (--norm eval, the default): stem + layer1 frozen, BN
            statistics frozen, BN affine trainable in layer2..4 = mmdet frozen_stages=1, norm_eval=True.
            --norm frozen uses FrozenBatchNorm2d instead (torchvision's recipe with pretrained weights: the affine is
            frozen too, so BN needs no backward). FPN 256 on C2..C5 + max-pool P6 (mmdet: num_outs 5, P6 = max-pool).
  RPN       3 anchors (ratios 0.5/1/2) of 32..512 px on P2..P6 (mmdet: scale 8 x strides 4..64); 256 sampled
            anchors @ 50%, IoU 0.7 / 0.3; proposals train: 2000 per level -> NMS 0.7 per level -> 1000 per image
            (torchvision's default post_nms_top_n_train is 2000; set to mmdet's 1000), test 1000 -> 1000.
  R-CNN     512 sampled RoIs @ 25% positive (IoU 0.5), GT added as proposals; MultiScaleRoIAlign 7x7 on P2..P5 with
            the same level mapping (canonical 224 @ level 4 = mmdet's finest_scale 56), sampling_ratio=0 (adaptive,
            as mmdet; torchvision's default is 2) but aligned=False (mmdet: aligned=True; no knob); TwoMLPHead
            1024 + FastRCNNPredictor with num_classes = classes + 1 (background), class-specific boxes.
  losses    RPN BCE + smooth-L1 (beta 1/9), R-CNN CE + smooth-L1 (beta 1/9); mmdet's Faster R-CNN uses L1 for both
            box losses (the compute is the same to within a few elementwise ops).
  test      score 0.05, per-class NMS 0.5, 100 detections (as mmdet's rcnn test_cfg).
  init      mmdet's (init_like_mmdet; --init torchvision keeps torchvision's), so the random models do the same
            work: same proposal counts, no detections above the 0.05 score threshold on both sides.
  transform torchvision's GeneralizedRCNNTransform runs inside the timed step: it normalises, "resizes" by 1.0
            (min_size = max_size = --size, an interpolate call) and batches; kdet's batch is already normalised.
  train: model.train(), 2 images of 3 x size x size (uniform [0, 1)), 4 random boxes per image (side size/16..
         size/2, labels 1..classes; 0 is torchvision's background); loss = sum of the loss dict; zero_grad
         (set_to_none), backward, SGD step (lr 0.01, momentum 0.9, weight decay 1e-4).
  infer: model.eval(), 1 image under torch.no_grad(), transform + postprocess included.
Prints one JSON line: name, ms (median), min_ms, max_ms, all_ms, cpu_ms (median per-rep process CPU time, user +
sys), load, hwm_built_mib (VmHWM after building the model and inputs), hwm_reset / rss_start_mib / hwm_reps_mib
(VmHWM reset before the warm-up, the RSS then, VmHWM after the reps), peak_rss_mib (the process's peak), gflop
(forward of the pass's batch, conv + linear, 2 x MACs, counted with forward hooks after the timed part), rois
(RoIs the box head ran on in the last timed step), first_losses or detections, versions.
"""
import argparse
import json
import statistics

from torch_detectors import hooked_gflop, random_targets, status_mib, timed_reps


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def init_like_mmdet(model):
    """mmdet's initialisation of the same modules (kdet's init_weights), so that a random model does the same work:
    ResNet Kaiming fan_out (torchvision's too) with the last BN of each block zeroed (mmdet zero_init_residual=True;
    without it the un-normalised random activations blow up, most RPN proposals collapse under NMS and the R-CNN
    head sees ~270 RoIs instead of 1000), FPN Xavier-uniform, RPN Normal(0.01) (torchvision's too), shared FCs
    Xavier-uniform, fc_cls Normal(0.01), fc_reg Normal(0.001), biases 0."""
    import torch
    from torch import nn

    with torch.no_grad():
        for name, m in model.backbone.body.named_modules():
            if name.endswith("bn3"):
                m.weight.zero_()  # a parameter (BatchNorm2d) or a buffer (FrozenBatchNorm2d)
        for m in model.backbone.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for fc in (model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        pred = model.roi_heads.box_predictor
        nn.init.normal_(pred.cls_score.weight, 0.0, 0.01)
        nn.init.normal_(pred.bbox_pred.weight, 0.0, 0.001)
        nn.init.zeros_(pred.cls_score.bias)
        nn.init.zeros_(pred.bbox_pred.bias)


def set_norm_eval(model):
    """mmdet norm_eval=True: every BatchNorm2d in eval mode (running statistics used and kept) while training."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def build(size, classes, init, norm):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops import misc as misc_nn_ops

    from torch import nn

    norm_layer = {"eval": nn.BatchNorm2d, "frozen": misc_nn_ops.FrozenBatchNorm2d}[norm]
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=norm_layer, trainable_layers=3)
    roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=0)
    model = FasterRCNN(backbone, num_classes=classes + 1, min_size=size, max_size=size,
                      rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=1000,
                      rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.7,
                      rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3, rpn_batch_size_per_image=256,
                      rpn_positive_fraction=0.5, box_roi_pool=roi_pool, box_score_thresh=0.05, box_nms_thresh=0.5,
                      box_detections_per_img=100, box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
                      box_batch_size_per_image=512, box_positive_fraction=0.25)
    if init == "mmdet":
        init_like_mmdet(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=["train", "infer"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--norm", default="eval", choices=["eval", "frozen"],
                    help="eval: nn.BatchNorm2d kept in eval mode, affine trainable in layer2-4 (mmdet norm_eval, the "
                         "default); frozen: FrozenBatchNorm2d (torchvision's pretrained recipe, affine frozen too)")
    ap.add_argument("--init", default="mmdet", choices=["mmdet", "torchvision"],
                    help="mmdet: init_like_mmdet (default); torchvision: torchvision's own random init")
    args = ap.parse_args()

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s, classes = args.size, args.classes
    model = build(s, classes, args.init, args.norm)
    out = {"name": args.case, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "threads": torch.get_num_threads(), "norm": args.norm}
    rois = [0]
    model.roi_heads.box_roi_pool.register_forward_hook(lambda m, i, o: rois.__setitem__(0, int(o.shape[0])))

    if args.case == "train":
        model.train()
        set_norm_eval(model)
        images, targets = random_targets(s, 2, 1, classes + 1)  # 0 is torchvision's background
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                              weight_decay=1e-4)
        first = {}

        def forward():
            return model(images, targets)

        def step():
            losses = forward()
            loss = sum(losses.values())
            if not first:
                first.update({k: float(v) for k, v in losses.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()
        image = [torch.rand(3, s, s)]
        ndet = [0]

        def forward():
            with torch.no_grad():
                return model(image)

        def step():
            d = forward()
            ndet[0] = int(d[0]["boxes"].shape[0])

    out["hwm_built_mib"] = status_mib("VmHWM")
    out["hwm_reset"] = reset_peak_rss()
    out["rss_start_mib"] = status_mib("VmRSS")
    ts, cs, load = timed_reps(step, args.warmup, args.reps)
    out["hwm_reps_mib"] = status_mib("VmHWM")  # before the FLOP count
    out["peak_rss_mib"] = max(out["hwm_built_mib"], out["hwm_reps_mib"])
    out.update({"ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "all_ms": ts,
                "cpu_ms": statistics.median(cs), "load": load, "rois": rois[0]})
    if args.case == "train":
        out["first_losses"] = first
    else:
        out["detections"] = ndet[0]
    out["gflop"] = hooked_gflop(model, forward)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
