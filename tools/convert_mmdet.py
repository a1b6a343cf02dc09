#!/usr/bin/env python3
"""MMDetection (or torchvision) .pth checkpoint -> safetensors, keeping the state-dict keys.

    python3 tools/convert_mmdet.py retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth retinanet_r50.safetensors
    kdet eval configs/retinanet_r50_fpn_1x.cfg retinanet_r50.safetensors

Handles: {'state_dict': ..., 'meta': ..., 'optimizer': ...} (mmdet/mmcv), {'model': ...}, a plain
state dict (torchvision ImageNet weights for train.backbone_from), and a 'module.' prefix
(DataParallel). Only tensors are kept (the optimizer state is dropped); 'meta' goes into the
safetensors metadata as JSON ("mmdet_meta"). Needs torch and safetensors. The output is written to a
temporary file and renamed.
"""
import argparse
import json
import os
import sys


def extract_state_dict(ckpt):
    """Returns (state_dict, meta) from whatever torch.load gave."""
    meta = {}
    if isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        sd, meta = ckpt["state_dict"], ckpt.get("meta", {}) or {}
    elif isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        sd, meta = ckpt["model"], ckpt.get("meta", {}) or {}
    elif isinstance(ckpt, dict):
        sd = ckpt
    else:
        raise SystemExit("convert_mmdet: the checkpoint is a %s, not a dict (state dict or mmdet checkpoint)"
                         % type(ckpt).__name__)
    return sd, meta


def convert(src, dst, strip_prefix=None, verbose=True, drop_prefixes=()):
    import torch
    from safetensors.torch import save_file

    try:
        ckpt = torch.load(src, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report any unpickling problem with the file name
        raise SystemExit("convert_mmdet: cannot load %s: %s" % (src, e))
    sd, meta = extract_state_dict(ckpt)
    tensors, skipped, dropped = {}, [], 0
    for k, v in sd.items():
        if not torch.is_tensor(v):
            skipped.append(k)
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        if any(k.startswith(p) for p in drop_prefixes):
            dropped += 1
            continue
        if strip_prefix and k.startswith(strip_prefix):
            k = k[len(strip_prefix):]
        if k in tensors:
            raise SystemExit("convert_mmdet: duplicate key %s after prefix stripping" % k)
        # safetensors refuses shared / non-contiguous storage: own copy per tensor
        tensors[k] = v.detach().to("cpu").contiguous().clone()
    if not tensors:
        raise SystemExit("convert_mmdet: no tensors found in %s" % src)
    metadata = {"source": os.path.basename(src), "converter": "kdet tools/convert_mmdet.py"}
    if meta:
        metadata["mmdet_meta"] = json.dumps(meta, default=str, sort_keys=True)
    tmp = dst + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, dst)
    if verbose:
        print("convert_mmdet: %d tensors -> %s%s%s" % (len(tensors), dst,
              (" (skipped non-tensor entries: %s)" % ", ".join(skipped[:5])) if skipped else "",
              (" (dropped %d tensors under %s)" % (dropped, ", ".join(drop_prefixes))) if dropped else ""))
    return tensors, metadata


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="input .pth")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--strip-prefix", default=None, help="remove this prefix from every key (e.g. 'backbone.')")
    ap.add_argument("--drop-prefix", action="append", default=[],
                    help="leave out every key starting with this (repeatable), e.g. 'roi_head.mask_' to use a "
                         "Cascade Mask R-CNN checkpoint as a box-only cascade_rcnn teacher")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not os.path.exists(a.src):
        raise SystemExit("convert_mmdet: %s: no such file" % a.src)
    convert(a.src, a.dst, a.strip_prefix, not a.quiet, tuple(a.drop_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
