#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures that the C++ tests compare against.

Every tests/ref/gen_*.py module defines `generate(w)` where `w` is a Writer; each call
`w.save(name, {key: tensor}, meta)` writes <out>/<name>.safetensors. Run with the system interpreter
(/usr/bin/python3: Debian's python3-torch). `make fixtures` runs it; `make test` runs that first.

Fixtures are float64 unless a test says otherwise, generated from fixed seeds: they are reproducible.
"""
import argparse
import importlib.util
import os
import sys
import time

import torch

FIXTURE_FORMAT = "1"


class Writer:
    def __init__(self, out):
        self.out = out
        self.count = 0

    def save(self, name, tensors, meta=None):
        meta = dict(meta or {})
        meta.update({"fixture_format": FIXTURE_FORMAT, "torch": torch.__version__, "name": name})
        clean = {}
        for k, v in tensors.items():
            if not isinstance(v, torch.Tensor):
                v = torch.tensor(v)
            clean[k] = v.detach().contiguous().cpu()
        path = os.path.join(self.out, name + ".safetensors")
        save_file(clean, path, {k: str(v) for k, v in meta.items()})
        self.count += 1


def save_file(tensors, path, metadata):
    try:
        from safetensors.torch import save_file as st_save  # the reference implementation, when present
        st_save(tensors, path, metadata=metadata)
    except ImportError:
        _save_file_fallback(tensors, path, metadata)


def _save_file_fallback(tensors, path, metadata):
    """Minimal writer of the same format (used only when the safetensors package is absent)."""
    import json
    import struct
    names = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL"}
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k in sorted(tensors):
        t = tensors[k]
        b = t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated gen_ module names (without gen_)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    w = Writer(args.out)
    only = set(x for x in args.only.split(",") if x)
    t0 = time.time()
    for fn in sorted(os.listdir(here)):
        if not (fn.startswith("gen_") and fn.endswith(".py")):
            continue
        mod_name = fn[:-3]
        if only and mod_name[4:] not in only:
            continue
        spec = importlib.util.spec_from_file_location(mod_name, os.path.join(here, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.generate(w)
    print(f"make_fixtures: wrote {w.count} fixtures to {args.out} in {time.time() - t0:.1f}s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
