"""torch.optim.SGD / AdamW steps, clip_grad_norm_, and LR schedules (engine/optim.h, engine/lr_schedule.h).

Optimizer fixtures ("optim_<variant>"): float64 parameters, a fixed gradient sequence (a missing
"grad.<k>.<name>" key means that parameter has no gradient at step k: torch skips it), the parameters
after every step, and the optimizer state at the end. Hyperparameters travel in the fixture:
  hp.<g> = [lr, momentum, dampening, weight_decay, nesterov, beta1, beta2, eps, amsgrad]
  metadata groups = "a,c|b" (parameter names per group), kind = sgd|adamw
  lr_scale[k] multiplies every group's initial lr before step k (a schedule stand-in).

LR schedules ("lr_schedules"): lr.<config> at iters.<config>, computed here from the mmcv formulas
written independently of the C++ (closed forms; torch.optim.lr_scheduler.LinearLR for the mmengine
warmup).
"""
import math

import torch

STEPS = 5


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _run_optimizer(w, name, kind, groups, lr_scale, skip=(), seed=0):
    """groups: list of (param_names, hp dict). skip: set of (step, param) pairs with no gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 3, 2)}
    names = [n for names_, _ in groups for n in names_]
    params = {n: _rand(g, *shapes[n]).requires_grad_(True) for n in names}
    out = {f"init.{n}": params[n].detach().clone() for n in names}
    pgroups = []
    for gi, (gnames, hp) in enumerate(groups):
        d = {"params": [params[n] for n in gnames], "lr": hp["lr"], "weight_decay": hp.get("weight_decay", 0.0)}
        if kind == "sgd":
            d.update(momentum=hp.get("momentum", 0.0), dampening=hp.get("dampening", 0.0),
                     nesterov=hp.get("nesterov", False))
        else:
            d.update(betas=(hp.get("beta1", 0.9), hp.get("beta2", 0.999)), eps=hp.get("eps", 1e-8),
                     amsgrad=hp.get("amsgrad", False))
        pgroups.append(d)
        out[f"hp.{gi}"] = torch.tensor([hp["lr"], hp.get("momentum", 0.0), hp.get("dampening", 0.0),
                                        hp.get("weight_decay", 0.0), float(hp.get("nesterov", False)),
                                        hp.get("beta1", 0.9), hp.get("beta2", 0.999), hp.get("eps", 1e-8),
                                        float(hp.get("amsgrad", False))], dtype=torch.float64)
    if kind == "sgd":
        opt = torch.optim.SGD(pgroups, lr=0.1, foreach=False)
    else:
        opt = torch.optim.AdamW(pgroups, lr=0.1, foreach=False)
    base = [d["lr"] for d in pgroups]
    for k in range(STEPS):
        for gi, d in enumerate(opt.param_groups):
            d["lr"] = base[gi] * lr_scale[k]
        for n in names:
            if (k, n) in skip:
                params[n].grad = None
            else:
                gr = _rand(g, *shapes[n]) * (1.0, 3.0, 0.5, 2.0, 0.2)[k]  # shrinking steps exercise amsgrad
                params[n].grad = gr
                out[f"grad.{k}.{n}"] = gr.clone()
        opt.step()
        for n in names:
            out[f"step.{k}.{n}"] = params[n].detach().clone()
    for n in names:
        st = opt.state.get(params[n], {})
        if "momentum_buffer" in st and st["momentum_buffer"] is not None:
            out[f"state.{n}.momentum"] = st["momentum_buffer"].clone()
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in st:
                out[f"state.{n}.{key}"] = st[key].clone()
        if "step" in st:
            out[f"state.{n}.step"] = torch.tensor(int(st["step"]), dtype=torch.int64)
    out["lr_scale"] = torch.tensor(lr_scale, dtype=torch.float64)
    w.save(f"optim_{name}", out, {"kind": kind, "groups": "|".join(",".join(n) for n, _ in groups)})


def _clip(w):
    g = torch.Generator().manual_seed(7)
    out = {}
    cases = [("l2", 1.0, 2.0), ("l2_noclip", 1e3, 2.0), ("inf", 0.5, math.inf), ("l1", 2.0, 1.0), ("l3", 1.0, 3.0)]
    shapes = [(4, 3), (7,), (2, 2, 2)]
    grads = [_rand(g, *s) for s in shapes]
    for i, gr in enumerate(grads):
        out[f"grad.{i}"] = gr
    for name, max_norm, p in cases:
        ps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
        for q, gr in zip(ps, grads):
            q.grad = gr.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=p)
        out[f"{name}.total"] = total.detach().clone().reshape(())
        for i, q in enumerate(ps):
            out[f"{name}.grad.{i}"] = q.grad.clone()
    w.save("optim_clip", out)


# ---- LR schedules: independent closed forms ----------------------------------------------------------
def _torch_linear_factors(start, n):
    """mmengine LinearLR(start_factor=start, end=n) == torch LinearLR(total_iters=n-1); factors for 0..n-1."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    sch = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=n - 1)
    f = []
    for _ in range(n):
        f.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return f


def _schedules():
    mm = _torch_linear_factors(0.001, 300)

    def step_1x(it):  # Step by epoch [8, 11], 100 it/epoch, mmcv linear warmup 500 @ 0.001
        e = it // 100
        lr = 0.02 * (0.1 ** sum(1 for s in (8, 11) if e >= s))
        if it < 500:
            lr *= 0.001 + 0.999 * it / 500
        return lr

    def step_iter(it):  # Step by iter [300, 700] gamma 0.5, constant warmup 100 @ 0.1
        lr = 0.01 * (0.5 ** sum(1 for s in (300, 700) if it >= s))
        return lr * 0.1 if it < 100 else lr

    def step_floor(it):  # Step by epoch [2, 4, 6], 10 it/epoch, min_lr 1e-5, no warmup
        return max(0.1 * (0.1 ** sum(1 for s in (2, 4, 6) if it // 10 >= s)), 1e-5)

    def cos_epoch(it):  # Cosine by epoch, 50 it/epoch, 12 epochs, min_lr 1e-5, exp warmup 200 @ 0.01
        e = it // 50
        lr = 1e-5 + (0.01 - 1e-5) * (1 + math.cos(math.pi * e / 12)) / 2
        return lr * math.exp(math.log(0.01) * (1 - it / 200)) if it < 200 else lr

    def cos_iter(it):  # Cosine by iter, 1000 iters, min_lr_ratio 0.05, mmengine linear warmup 300 @ 0.001
        lo = 0.02 * 0.05
        lr = lo + (0.02 - lo) * (1 + math.cos(math.pi * it / 1000)) / 2
        return lr * mm[it] if it < 300 else lr

    out = {}
    for name, fn, hi in [("step_1x", step_1x, 1300), ("step_iter", step_iter, 900), ("step_floor", step_floor, 80),
                         ("cos_epoch", cos_epoch, 700), ("cos_iter", cos_iter, 1000)]:
        its = sorted(set(list(range(0, hi, 7 if hi > 200 else 1)) + [0, 1, 98, 99, 100, 101, 199, 200, 201, 298, 299, 300, 301, 499,
                                                    500, 501, 699, 700, 799, 800, 1099, 1100, hi - 1]))
        its = [i for i in its if i < hi]
        out[f"iters.{name}"] = torch.tensor(its, dtype=torch.int64)
        out[f"lr.{name}"] = torch.tensor([fn(i) for i in its], dtype=torch.float64)
    return out


def generate(w):
    ones = [1.0] * STEPS
    sched = [1.0, 1.0, 0.5, 0.5, 0.1]
    _run_optimizer(w, "sgd_plain", "sgd", [("ab", {"lr": 0.1})], ones, seed=1)
    _run_optimizer(w, "sgd_momentum_wd", "sgd", [("abc", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2})],
                   ones, seed=2)
    _run_optimizer(w, "sgd_nesterov", "sgd",
                   [("ac", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True})], ones, seed=3)
    _run_optimizer(w, "sgd_groups", "sgd",
                   [("ac", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
                    ("b", {"lr": 0.01, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.0})],
                   sched, skip={(0, "b"), (2, "c"), (3, "b")}, seed=4)
    _run_optimizer(w, "adamw", "adamw", [("abc", {"lr": 1e-2, "weight_decay": 1e-2})], ones, seed=5)
    _run_optimizer(w, "adamw_amsgrad_groups", "adamw",
                   [("ab", {"lr": 3e-3, "weight_decay": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
                            "amsgrad": True}),
                    ("c", {"lr": 1e-2, "weight_decay": 0.0})],
                   sched, skip={(1, "a"), (4, "c")}, seed=6)
    _clip(w)
    w.save("lr_schedules", _schedules())
