"""One-off writer of tests/data/data_resize_cv2.safetensors (committed, ~0.5 MB): cv2.resize
INTER_LINEAR outputs (what mmcv.imresize returns) for a few uint8 images, so the bit-exactness of
data/transforms.cpp's resize is checked on every machine, with or without OpenCV.
Needs cv2 (e.g. PYTHONPATH to an unpacked opencv-python-headless 4.x wheel):
    /usr/bin/python3 tests/ref/data_resize_cv2.py
"""
import os

import cv2
import numpy as np
import torch
from safetensors.torch import save_file


def main():
    rng = np.random.RandomState(11)
    cases = [((37, 53), (80, 100)), ((120, 90), (61, 47)), ((64, 64), (64, 99)), ((50, 70), (23, 140)),
             ((9, 300), (27, 1000)), ((120, 160), (200, 267)), ((150, 210), (41, 61)), ((2, 3), (5, 7))]
    tensors = {}
    for i, ((h, w), (nh, nw)) in enumerate(cases):
        img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        if i % 2 == 1:
            yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            img[..., 0] = (xx * 255) // max(w - 1, 1)
            img[..., 2] = (yy * 255) // max(h - 1, 1)
        out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        tensors[f"case{i}.input"] = torch.from_numpy(img)
        tensors[f"case{i}.cv2"] = torch.from_numpy(out.copy())
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "data_resize_cv2.safetensors")
    save_file(tensors, path, {"cv2": cv2.__version__, "num_cases": str(len(cases))})
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
