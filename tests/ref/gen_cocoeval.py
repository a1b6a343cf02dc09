"""COCO bbox evaluation parity: pycocotools' 12 stats (and mmdet's per-class AP) for many detection
sets against several ground-truth files.

Writes <out>/cocoeval/<gt>.json and <out>/cocoeval/<gt>__<set>.json (COCO results format) and the
fixture `cocoeval` with, per case i: case<i>.stats (12, f64) and case<i>.per_class (K, f64; -1 where
the category has no ground truth); the metadata key case<i> holds "<gt file>|<results file>".
tests/data/test_coco_eval.cpp evaluates the same files with kdet and compares to 1e-9.
"""
import contextlib
import io
import json
import os

import numpy as np
import torch


def _round(x, nd):
    return float(round(float(x), nd))


def make_gt(rng, name, n_images, cat_ids, max_objs, crowd_frac, empty_frac, first_ann_id=1, all_crowd=False,
            border_areas=False, sizes=((640, 480), (480, 640), (320, 320), (1000, 600))):
    images, anns = [], []
    ann_id = first_ann_id
    img_ids = rng.permutation(np.arange(1, 5 * n_images + 1))[:n_images]  # unsorted, sparse ids
    for n, img_id in enumerate(img_ids):
        w, h = sizes[n % len(sizes)]
        images.append({"id": int(img_id), "file_name": f"{int(img_id):012d}.jpg", "width": w, "height": h})
        if rng.rand() < empty_frac:
            continue
        for _ in range(rng.randint(1, max_objs + 1)):
            # sizes from tiny to large (log-uniform side length)
            side = float(np.exp(rng.uniform(np.log(2), np.log(min(w, h) * 0.9))))
            ar = float(np.exp(rng.uniform(-1, 1)))
            bw, bh = side * np.sqrt(ar), side / np.sqrt(ar)
            bw, bh = min(bw, w - 1), min(bh, h - 1)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            bbox = [_round(x, 2), _round(y, 2), _round(bw, 2), _round(bh, 2)]
            # segmentation area differs from the box area, as in COCO
            area = bbox[2] * bbox[3] * float(rng.uniform(0.5, 1.0))
            if border_areas and rng.rand() < 0.5:
                area = float(rng.choice([32.0 ** 2, 96.0 ** 2, 32.0 ** 2 - 1e-9, 96.0 ** 2 + 1e-9]))
            crowd = 1 if (all_crowd or rng.rand() < crowd_frac) else 0
            anns.append({"id": ann_id, "image_id": int(img_id), "category_id": int(rng.choice(cat_ids)),
                         "bbox": bbox, "area": area, "iscrowd": crowd,
                         "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0] + bbox[2],
                                           bbox[1] + bbox[3]]]})
            ann_id += 1
    cats = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in cat_ids]
    return {"info": {"description": name}, "images": images, "annotations": anns, "categories": cats}


def jitter(rng, bbox, amount):
    x, y, w, h = bbox
    dx, dy = rng.normal(0, amount * w), rng.normal(0, amount * h)
    sw, sh = np.exp(rng.normal(0, amount)), np.exp(rng.normal(0, amount))
    return [float(x + dx), float(y + dy), float(w * sw), float(h * sh)]


def det_sets(rng, gt):
    anns, images = gt["annotations"], gt["images"]
    cat_ids = [c["id"] for c in gt["categories"]]
    sets = {}
    sets["empty"] = []
    sets["perfect"] = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
                        "score": float(rng.uniform(0.05, 1))} for a in anns if not a["iscrowd"]]
    rnd = []
    for im in images:
        for _ in range(rng.randint(0, 12)):
            w, h = rng.uniform(2, im["width"] / 2), rng.uniform(2, im["height"] / 2)
            rnd.append({"image_id": im["id"], "category_id": int(rng.choice(cat_ids)),
                        "bbox": [float(rng.uniform(0, im["width"] - w)), float(rng.uniform(0, im["height"] - h)),
                                 float(w), float(h)], "score": float(rng.rand())})
    sets["random"] = rnd
    noisy = []
    for a in anns:
        for _ in range(rng.randint(0, 3)):
            noisy.append({"image_id": a["image_id"],
                          "category_id": a["category_id"] if rng.rand() < 0.85 else int(rng.choice(cat_ids)),
                          "bbox": jitter(rng, a["bbox"], 0.1), "score": float(rng.rand())})
    noisy += rnd[: len(rnd) // 2]
    order = rng.permutation(len(noisy))
    sets["noisy"] = [noisy[i] for i in order]
    # ties: few distinct scores (stable mergesort order matters)
    sets["ties"] = [dict(d, score=float(rng.choice([0.25, 0.5, 0.75, 0.9]))) for d in sets["noisy"]]
    # classes absent from the ground truth (never evaluated) mixed with real ones
    absent = [dict(d, category_id=int(max(cat_ids) + 1 + rng.randint(0, 3))) for d in sets["noisy"][::3]]
    sets["absent_classes"] = sets["noisy"][1::3] + absent
    # boxes on area-range borders (w*h == 32^2, 96^2 exactly, and just around)
    border = []
    for im in images:
        for side in (32.0, 96.0, 31.99, 32.01, 95.99, 96.01, 16.0, 64.0):
            border.append({"image_id": im["id"], "category_id": int(rng.choice(cat_ids)),
                           "bbox": [float(rng.randint(0, 100)), float(rng.randint(0, 100)), side, side],
                           "score": float(rng.rand())})
        for a in anns:
            if a["image_id"] == im["id"]:
                s = float(np.sqrt(a["area"]))
                border.append({"image_id": a["image_id"], "category_id": a["category_id"],
                               "bbox": [a["bbox"][0], a["bbox"][1], s, s], "score": float(rng.rand())})
    sets["area_borders"] = border
    # more than 100 detections on some images (maxDets cuts), partly tied scores
    many = []
    for im in images[:3]:
        for j in range(150):
            w, h = rng.uniform(4, 120), rng.uniform(4, 120)
            many.append({"image_id": im["id"], "category_id": int(cat_ids[j % len(cat_ids)]),
                         "bbox": [float(rng.uniform(0, im["width"] - w)), float(rng.uniform(0, im["height"] - h)),
                                  float(w), float(h)], "score": float(np.round(rng.rand(), 2))})
    sets["many"] = many + sets["noisy"]
    return sets


def evaluate(gt_path, dets, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        if dets:
            dt = gt.loadRes(res_path)
        else:  # loadRes([]) raises in pycocotools; an empty result set evaluates like this
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        E = COCOeval(gt, dt, "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    prec = E.eval["precision"]
    per_class = []
    for k in range(prec.shape[2]):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_class.append(float(np.mean(p)) if p.size else -1.0)
    return np.array(E.stats, dtype=np.float64), np.array(per_class, dtype=np.float64)


def generate(w):
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        print("gen_cocoeval: pycocotools missing, fixture `cocoeval` not written")
        return
    outdir = os.path.join(w.out, "cocoeval")
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.RandomState(1234)
    gts = {
        "gt_a": make_gt(rng, "gt_a", 14, [1, 3, 7, 10, 11], 9, 0.08, 0.15),
        "gt_b": make_gt(rng, "gt_b", 4, [2, 5], 5, 0.2, 0.0, first_ann_id=0),  # an annotation id 0
        "gt_crowd": make_gt(rng, "gt_crowd", 4, [1, 2], 4, 0.0, 0.0, all_crowd=True),
        "gt_border": make_gt(rng, "gt_border", 10, [4, 8, 15], 8, 0.05, 0.1, border_areas=True),
        "gt_big": make_gt(rng, "gt_big", 40, [1, 2, 3, 5, 6, 9], 14, 0.05, 0.1),
    }
    tensors, meta = {}, {}
    i = 0
    for gname, gt in gts.items():
        gpath = os.path.join(outdir, gname + ".json")
        with open(gpath, "w") as f:
            json.dump(gt, f, allow_nan=False)
        for sname, dets in det_sets(rng, gt).items():
            rname = f"{gname}__{sname}.json"
            rpath = os.path.join(outdir, rname)
            with open(rpath, "w") as f:
                json.dump(dets, f, allow_nan=False)
            stats, per_class = evaluate(gpath, dets, rpath)
            tensors[f"case{i}.stats"] = torch.from_numpy(stats)
            tensors[f"case{i}.per_class"] = torch.from_numpy(per_class)
            meta[f"case{i}"] = f"{gname}.json|{rname}"
            i += 1
    meta["num_cases"] = i
    w.save("cocoeval", tensors, meta)
