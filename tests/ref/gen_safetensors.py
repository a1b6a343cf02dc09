"""A file written by the Python safetensors package, read back by the C++ loader (interop)."""
import torch


def generate(w):
    g = torch.Generator().manual_seed(0)
    w.save("safetensors_interop", {
        "backbone.conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
        "f64": torch.randn(5, generator=g, dtype=torch.float64),
        "i64": torch.arange(7),
        "u8": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
    }, {"origin": "python"})
