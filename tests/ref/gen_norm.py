"""PyTorch references for engine/ops/norm and engine/ops/interpolate (float64).

Every fixture stores the inputs, a fixed upstream gradient `gy`, the output `y` and the gradients of
sum(y * gy) w.r.t. the inputs (and weights), computed by torch autograd in float64.
"""
import torch
import torch.nn.functional as F


def _grads(fn, inputs, gen):
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(gy)
    return y.detach(), gy, [l.grad for l in leaves]


def _bn(w, name, shape, training, gen, affine=True):
    C = shape[1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 1.7 + 0.4
    wt = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(C, generator=gen, dtype=torch.float64)
    rm = torch.randn(C, generator=gen, dtype=torch.float64) * 0.2
    rv = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
    rm_after, rv_after = rm.clone(), rv.clone()

    def fn(x_, w_, b_):
        return F.batch_norm(x_, rm_after, rv_after, w_ if affine else None, b_ if affine else None,
                            training=training, momentum=0.1, eps=1e-5)

    y, gy, (gx, gw, gb) = _grads(fn, [x, wt, b], gen)
    d = {"x": x, "running_mean": rm, "running_var": rv, "gy": gy, "y": y, "gx": gx,
         "running_mean_after": rm_after, "running_var_after": rv_after}
    if affine:
        d.update({"weight": wt, "bias": b, "gw": gw, "gb": gb})
    w.save(name, d, {"training": int(training), "affine": int(affine)})


def generate(w):
    gen = torch.Generator().manual_seed(20261121)
    _bn(w, "norm_bn_train", (4, 6, 5, 7), True, gen)
    _bn(w, "norm_bn_eval", (3, 5, 4, 6), False, gen)
    _bn(w, "norm_bn_train_2d", (16, 5), True, gen)
    _bn(w, "norm_bn_train_noaffine", (2, 3, 9, 4), True, gen, affine=False)

    for name, shape, G in [("norm_gn", (2, 8, 5, 6), 4), ("norm_gn_32", (2, 64, 3, 4), 32)]:
        C = shape[1]
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2.0 - 0.3
        wt = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
        b = torch.randn(C, generator=gen, dtype=torch.float64)
        y, gy, (gx, gw, gb) = _grads(lambda x_, w_, b_: F.group_norm(x_, G, w_, b_, eps=1e-5), [x, wt, b], gen)
        w.save(name, {"x": x, "weight": wt, "bias": b, "gy": gy, "y": y, "gx": gx, "gw": gw, "gb": gb},
               {"groups": G})

    x = torch.randn((3, 4, 10), generator=gen, dtype=torch.float64) + 0.5
    wt = torch.rand((4, 10), generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn((4, 10), generator=gen, dtype=torch.float64)
    y, gy, (gx, gw, gb) = _grads(lambda x_, w_, b_: F.layer_norm(x_, (4, 10), w_, b_, eps=1e-5), [x, wt, b], gen)
    w.save("norm_ln", {"x": x, "weight": wt, "bias": b, "gy": gy, "y": y, "gx": gx, "gw": gw, "gb": gb})

    # Resize: (in_h, in_w) -> (out_h, out_w)
    cases = [((4, 5), (8, 10)), ((5, 7), (8, 11)), ((9, 10), (4, 6)), ((6, 6), (6, 6)), ((7, 3), (25, 13)),
             ((13, 17), (7, 9))]
    for i, (ins, outs) in enumerate(cases):
        x = torch.randn((2, 3) + ins, generator=gen, dtype=torch.float64)
        y, gy, (gx,) = _grads(lambda x_: F.interpolate(x_, size=outs, mode="nearest"), [x], gen)
        w.save(f"interp_nearest_{i}", {"x": x, "gy": gy, "y": y, "gx": gx}, {"out_h": outs[0], "out_w": outs[1]})
        for ac in (False, True):
            y, gy, (gx,) = _grads(lambda x_: F.interpolate(x_, size=outs, mode="bilinear", align_corners=ac), [x],
                                  gen)
            w.save(f"interp_bilinear_{i}_{int(ac)}", {"x": x, "gy": gy, "y": y, "gx": gx},
                   {"out_h": outs[0], "out_w": outs[1], "align_corners": int(ac)})
