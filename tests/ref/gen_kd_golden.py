#!/usr/bin/env python3
"""Golden files (format `kdgold-1`) for every knowledge-distillation loss of specs/kd_losses.md.

A float64 PyTorch reference written from the specs (kd_losses.md, kd_golden_format.md), *not* from the
C++ code. Each case is one file <out>/<method>_<k>.safetensors holding in.*, param.*, hp.*, out.*,
grad.* and mid.* tensors, all F64, laid out contiguously in ascending byte order of their keys, the
header padded with spaces to a multiple of 8. Reruns are byte-identical (fixed seeds, one thread).

Two entry points:
  * generate(w)  — called by tests/ref/make_fixtures.py; writes into <w.out>/kd_golden/.
  * /usr/bin/python3 tests/ref/gen_kd_golden.py --out DIR [--only fgd,mgd]

Every discrete decision (box floor/ceil, MGD rand threshold, top-k boundary, AMD mean threshold,
max-pool and min/max extrema, ReLU and |.| arguments) is checked to lie at least MARGIN = 1e-9 from
its threshold (kd_golden_format.md §3); a case that violates it is redrawn with the next seed, or,
for hand-placed boxes, rejected with an error.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "kdgold-1"
MARGIN = 1e-9
DT = torch.float64
METHODS = ("fgd", "mgd", "amd", "dmkd", "ssim_kd", "fbkd", "aid", "fitnet", "logit_kd_kl", "logit_kd_bce")


class MarginError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# file writer (kdgold-1, §1)
# ------------------------------------------------------------------------------------------------
def encode_kdgold(method, case, tensors):
    assert method in METHODS, method
    keys = sorted(tensors, key=lambda k: k.encode("ascii"))
    header = {"__metadata__": {"format": FORMAT, "method": method, "case": case}}
    blobs, off = [], 0
    for k in keys:
        t = tensors[k]
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, dtype=DT)
        t = t.detach().to(DT).contiguous().cpu()
        assert torch.isfinite(t).all(), f"{case}: non-finite values in {k}"
        b = t.numpy().astype("<f8").tobytes()
        assert len(b) == 8 * t.numel()
        header[k] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_kdgold(path, method, case, tensors):
    data = encode_kdgold(method, case, tensors)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# random helpers (explicit generator) and PyTorch-default init
# ------------------------------------------------------------------------------------------------
class Rng:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=self.g, dtype=DT) * std + mean

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g, dtype=DT)

    def uniform(self, *shape, lo=-1.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=self.g, dtype=DT)


def default_init(module, rng):
    """PyTorch default init (kaiming-uniform a=sqrt(5)): weight and bias ~ U(±1/sqrt(fan_in))."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                m.weight.copy_(rng.uniform(*m.weight.shape, lo=-bound, hi=bound))
                if m.bias is not None:
                    m.bias.copy_(rng.uniform(*m.bias.shape, lo=-bound, hi=bound))


def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1).to(DT)


def snapshot_params(prefix, module):
    """state_dict before the forward pass, as param.<prefix><key> (buffers included, as floats)."""
    return {f"param.{prefix}{k}": v.detach().clone().to(DT) for k, v in module.state_dict().items()}


def learnable(prefix, module):
    return [(f"{prefix}{k}", p) for k, p in module.named_parameters()]


def grads_of(loss, named):
    """named: list of (key, tensor requiring grad). Returns {key: grad} with zeros where unused."""
    ts = [t for _, t in named]
    gs = torch.autograd.grad(loss, ts, allow_unused=True)
    out = {}
    for (k, t), g in zip(named, gs):
        out[k] = torch.zeros_like(t) if g is None else g.detach().clone()
    return out


# ------------------------------------------------------------------------------------------------
# margins (§3)
# ------------------------------------------------------------------------------------------------
def margin_abs(x, what):
    m = x.detach().abs().min().item() if x.numel() else math.inf
    if m < MARGIN:
        raise MarginError(f"{what}: |x| = {m:.3g} at a kink")


def margin_threshold(x, thr, what):
    m = (x.detach() - thr).abs().min().item() if x.numel() else math.inf
    if m < MARGIN:
        raise MarginError(f"{what}: {m:.3g} from threshold {thr}")


def margin_topk(scores, k, what):
    """scores (N, l): the k-th and (k+1)-th largest of each row differ by >= MARGIN."""
    l = scores.shape[1]
    if k <= 0 or k >= l:
        return
    s, _ = scores.detach().sort(dim=1, descending=True)
    gap = (s[:, k - 1] - s[:, k]).min().item()
    if gap < MARGIN:
        raise MarginError(f"{what}: top-k boundary gap {gap:.3g}")


def margin_extrema(x, what):
    """x (..., L): the max and the min of each row are unique by MARGIN (rows of length >= 2)."""
    x = x.detach()
    if x.shape[-1] < 2:
        return
    s, _ = x.sort(dim=-1)
    g1 = (s[..., 1] - s[..., 0]).min().item()
    g2 = (s[..., -1] - s[..., -2]).min().item()
    if min(g1, g2) < MARGIN:
        raise MarginError(f"{what}: extremum tie gap {min(g1, g2):.3g}")


def margin_pool(x, k, what):
    """Each k×k max-pool window (floor mode) of x (N,C,H,W) has a unique maximum by MARGIN."""
    if k <= 1:
        return
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    xs = x.detach()[:, :, :Ho * k, :Wo * k].reshape(N, C, Ho, k, Wo, k).permute(0, 1, 2, 4, 3, 5)
    s, _ = xs.reshape(N, C, Ho, Wo, k * k).sort(dim=-1)
    gap = (s[..., -1] - s[..., -2]).min().item() if s.numel() else math.inf
    if gap < MARGIN:
        raise MarginError(f"{what}: max-pool tie gap {gap:.3g}")


def run_seeds(fn, seed, tries=50):
    last = None
    for t in range(tries):
        try:
            return fn(seed + 7919 * t)
        except MarginError as e:  # redraw deterministically
            last = e
    raise RuntimeError(f"no margin-clean draw after {tries} seeds: {last}")


# ------------------------------------------------------------------------------------------------
# shared building blocks (kd_losses.md §0)
# ------------------------------------------------------------------------------------------------
def att_spatial(Fm, tau):
    N, C, H, W = Fm.shape
    G = Fm.abs().mean(dim=1)  # (N,H,W)
    return (H * W * F.softmax((G / tau).reshape(N, -1), dim=1)).reshape(N, H, W)


def att_channel(Fm, tau):
    N, C, H, W = Fm.shape
    G = Fm.abs().mean(dim=2).mean(dim=2)  # (N,C)
    return C * F.softmax(G / tau, dim=1)


def topk_keep(scores, k):
    """scores (N, l): keep mask with the k largest zeroed; ties -> lower index first (stable sort)."""
    N, l = scores.shape
    keep = torch.ones(N, l, dtype=DT)
    if k > 0:
        order = torch.sort(-scores.detach(), dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, order, 0.0)
    return keep


def generator_block(C):
    return nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1)).to(DT)


def run_generator(gen, x, what):
    h = gen[0](x)
    margin_abs(h, what + " generator ReLU input")
    return gen[2](F.relu(h))


def level_shapes(rng_seed_unused, N, Cs, Ct, hws):
    return [((N, Cs, h, w), (N, Ct, h, w)) for h, w in hws]


def make_features(rng, N, Cs, Ct, hws, s_std=1.0, t_std=1.0):
    S = [rng.randn(N, Cs, h, w, std=s_std) for h, w in hws]
    T = [rng.randn(N, Ct, h, w, std=t_std) for h, w in hws]
    return S, T


def add_levels(d, S, T):
    for i, (s, t) in enumerate(zip(S, T)):
        d[f"in.S.{i}"] = s
        d[f"in.T.{i}"] = t


# ------------------------------------------------------------------------------------------------
# §8a FitNet
# ------------------------------------------------------------------------------------------------
def case_fitnet(seed, N, Cs, Ct, hws, weight, reduction):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {"hp.loss_weight": weight, "hp.reduction": float(reduction)}
    add_levels(d, S, T)
    Sv = [s.clone().requires_grad_(True) for s in S]
    total = 0
    named = []
    for i, (s, t) in enumerate(zip(Sv, T)):
        ad = conv1x1(Cs, Ct)
        default_init(ad, rng)
        d.update(snapshot_params(f"level{i}.", ad))
        named += learnable(f"level{i}.", ad)
        a = ad(s)
        sq = (a - t) ** 2
        if reduction == 0:
            r = sq.sum() / N
        elif reduction == 1:
            r = sq.mean()
        else:
            r = sq.sum()
        li = weight * r
        d[f"out.level{i}.loss"] = li
        d[f"mid.level{i}.s_aligned"] = a
        total = total + li
    d["out.loss"] = total
    g = grads_of(total, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


# ------------------------------------------------------------------------------------------------
# §8b logit KD
# ------------------------------------------------------------------------------------------------
def case_logit_kl(seed, R, K, T, reduction):
    rng = Rng(seed)
    s = rng.randn(R, K, std=2.0)
    t = rng.randn(R, K, std=2.0)
    sv = s.clone().requires_grad_(True)
    p_t = F.softmax(t / T, dim=1)
    logp_t = F.log_softmax(t / T, dim=1)
    logp_s = F.log_softmax(sv / T, dim=1)
    e = p_t * (logp_t - logp_s)
    tot = e.sum()
    if reduction == 0:
        loss = T * T * tot / R
    elif reduction == 1:
        loss = T * T * tot / (R * K)
    else:
        loss = T * T * tot
    # cross-check against torch's own kl_div
    ref = F.kl_div(logp_s, p_t, reduction="sum") * T * T
    assert torch.allclose(T * T * tot, ref, rtol=1e-13, atol=0)
    d = {"in.s_logits": s, "in.t_logits": t, "hp.T": T, "hp.reduction": float(reduction), "out.loss": loss,
         "mid.p_t": p_t, "mid.p_s": F.softmax(sv / T, dim=1), "mid.row_kl": T * T * e.sum(dim=1)}
    d["grad.s_logits"] = torch.autograd.grad(loss, sv)[0]
    return d


def case_logit_bce(seed, R, K, T, weights, avg):
    rng = Rng(seed)
    s = rng.randn(R, K, std=2.0)
    t = rng.randn(R, K, std=2.0)
    sv = s.clone().requires_grad_(True)
    x = sv / T
    p = torch.sigmoid(t / T)
    bce = F.softplus(x) - p * x
    ref = F.binary_cross_entropy_with_logits(x, p, reduction="none")
    assert torch.allclose(bce, ref, rtol=1e-12, atol=1e-15)
    row = bce.sum(dim=1)
    w = torch.tensor(weights, dtype=DT)
    loss = T * T * (w * row).sum() / avg
    d = {"in.s_logits": s, "in.t_logits": t, "in.weights": w, "hp.T": T, "hp.avg_factor": float(avg),
         "out.loss": loss, "mid.p_t": p, "mid.p_s": torch.sigmoid(x), "mid.row_bce": row}
    d["grad.s_logits"] = torch.autograd.grad(loss, sv)[0]
    return d


# ------------------------------------------------------------------------------------------------
# §1 FGD
# ------------------------------------------------------------------------------------------------
class GcBlock(nn.Module):
    def __init__(self, C, ln_eps):
        super().__init__()
        h = C // 2
        self.conv_mask = nn.Conv2d(C, 1, 1)
        self.channel_add = nn.Sequential(nn.Conv2d(C, h, 1), nn.LayerNorm([h, 1, 1], eps=ln_eps), nn.ReLU(),
                                         nn.Conv2d(h, C, 1))
        self.to(DT)

    def official_init(self, rng):
        C = self.conv_mask.weight.shape[1]
        default_init(self, rng)
        with torch.no_grad():
            # kaiming-normal, mode fan_in, ReLU gain: N(0, sqrt(2/C)); bias 0
            self.conv_mask.weight.copy_(rng.randn(1, C, 1, 1, std=math.sqrt(2.0 / C)))
            self.conv_mask.bias.zero_()
            self.channel_add[1].weight.fill_(1.0)
            self.channel_add[1].bias.zero_()
            self.channel_add[3].weight.zero_()
            self.channel_add[3].bias.zero_()

    def perturb(self, rng):
        with torch.no_grad():
            ln = self.channel_add[1]
            ln.weight.copy_(1.0 + rng.uniform(*ln.weight.shape, lo=-0.3, hi=0.3))
            ln.bias.copy_(rng.uniform(*ln.bias.shape, lo=-0.3, hi=0.3))
            last = self.channel_add[3]
            last.weight.copy_(rng.randn(*last.weight.shape, std=0.3))
            last.bias.copy_(rng.randn(*last.bias.shape, std=0.3))
            self.conv_mask.bias.copy_(rng.randn(1, std=0.5))

    def context(self, x):
        N, C, H, W = x.shape
        a = self.conv_mask(x).reshape(N, 1, H * W)
        p = F.softmax(a, dim=2).unsqueeze(-1)  # N,1,HW,1
        ctx = torch.matmul(x.reshape(N, C, H * W).unsqueeze(1), p)  # N,1,C,1
        return ctx.reshape(N, C, 1, 1)

    def forward(self, x, what):
        ctx = self.context(x)
        h = self.channel_add[1](self.channel_add[0](ctx))
        margin_abs(h, what + " GcBlock ReLU input")
        phi = self.channel_add[3](F.relu(h))
        return x + phi, ctx.reshape(ctx.shape[0], -1)


def grid_coord(x, ref, size, what):
    """x' = (x / ref) * size in float64 with the §3 margin rule; returns (floor, ceil)."""
    v = (x / ref) * size
    r = round(v)
    if abs(v - r) < MARGIN:
        if not (v == r and (x * size) / ref == v):
            raise ValueError(f"{what}: box coordinate {x} maps to {v!r}, within {MARGIN} of a grid line")
    return math.floor(v), math.ceil(v)


def fgd_masks(boxes, ref_hw, H, W, what):
    N = len(boxes)
    fg = torch.zeros(N, H, W, dtype=DT)
    for i in range(N):
        h_ref, w_ref = float(ref_hw[i][0]), float(ref_hw[i][1])
        for j, b in enumerate(boxes[i].tolist()):
            x1, y1, x2, y2 = b
            wmin, _ = grid_coord(x1, w_ref, W, f"{what} image {i} box {j} x1")
            _, wmax = grid_coord(x2, w_ref, W, f"{what} image {i} box {j} x2")
            hmin, _ = grid_coord(y1, h_ref, H, f"{what} image {i} box {j} y1")
            _, hmax = grid_coord(y2, h_ref, H, f"{what} image {i} box {j} y2")
            assert wmin >= 0 and hmin >= 0
            area = 1.0 / ((hmax - hmin + 1) * (wmax - wmin + 1))
            sl = fg[i, hmin:hmax + 1, wmin:wmax + 1]
            fg[i, hmin:hmax + 1, wmin:wmax + 1] = torch.clamp(sl, min=area)
    bg = torch.where(fg > 0, torch.zeros_like(fg), torch.ones_like(fg))
    for i in range(N):
        s = bg[i].sum()
        if s > 0:
            bg[i] = bg[i] / s
    return fg, bg


def case_fgd(seed, N, Cs, Ct, hws, boxes, ref_hw, hp, perturb, expect=None):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {f"hp.{k}": v for k, v in hp.items()}
    add_levels(d, S, T)
    for j in range(N):
        d[f"in.boxes.{j}"] = torch.tensor(boxes[j], dtype=DT).reshape(-1, 4)
    d["in.ref_hw"] = torch.tensor(ref_hw, dtype=DT)
    Sv = [s.clone().requires_grad_(True) for s in S]
    tau = hp["temp"]
    named = []
    comps = {"fg_loss": 0, "bg_loss": 0, "mask_loss": 0, "rela_loss": 0}
    total = 0
    for i, (s_in, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        mods = nn.Module()
        if Cs != Ct:
            mods.align = conv1x1(Cs, Ct)
            default_init(mods.align, rng)
        mods.gc_s = GcBlock(Ct, hp["ln_eps"])
        mods.gc_t = GcBlock(Ct, hp["ln_eps"])
        mods.gc_s.official_init(rng)
        mods.gc_t.official_init(rng)
        if perturb:
            mods.gc_s.perturb(rng)
            mods.gc_t.perturb(rng)
        d.update(snapshot_params(pre, mods))
        named += learnable(pre, mods)
        s = mods.align(s_in) if Cs != Ct else s_in
        _, C, H, W = t.shape
        margin_abs(s, f"fgd level {i} |s_aligned|")
        margin_abs(t, f"fgd level {i} |T|")
        AS_t, AC_t = att_spatial(t, tau), att_channel(t, tau)
        AS_s, AC_s = att_spatial(s, tau), att_channel(s, tau)
        fg, bg = fgd_masks([d[f"in.boxes.{j}"] for j in range(N)], ref_hw, H, W, f"fgd level {i}")
        w = AS_t.unsqueeze(1) * AC_t[:, :, None, None]
        D2 = (s - t) ** 2
        fg_loss = (fg.unsqueeze(1) * w * D2).sum() / N
        bg_loss = (bg.unsqueeze(1) * w * D2).sum() / N
        # the official sqrt form must agree (kd_losses.md §1b.4)
        sq = torch.sqrt(AS_t.unsqueeze(1)) * torch.sqrt(AC_t[:, :, None, None])
        fg_off = ((s * sq * fg.sqrt().unsqueeze(1) - t * sq * fg.sqrt().unsqueeze(1)) ** 2).sum() / N
        bg_off = ((s * sq * bg.sqrt().unsqueeze(1) - t * sq * bg.sqrt().unsqueeze(1)) ** 2).sum() / N
        assert torch.allclose(fg_off, fg_loss, rtol=1e-12) and torch.allclose(bg_off, bg_loss, rtol=1e-12, atol=1e-300)
        margin_abs(AC_s - AC_t, f"fgd level {i} channel attention difference")
        margin_abs(AS_s - AS_t, f"fgd level {i} spatial attention difference")
        mask_loss = (AC_s - AC_t).abs().sum() / N + (AS_s - AS_t).abs().sum() / N
        out_s, ctx_s = mods.gc_s(s, f"fgd level {i} gc_s")
        out_t, ctx_t = mods.gc_t(t, f"fgd level {i} gc_t")
        rela_loss = ((out_s - out_t) ** 2).sum() / N
        li = hp["alpha_fgd"] * fg_loss + hp["beta_fgd"] * bg_loss + hp["gamma_fgd"] * mask_loss + \
            hp["lambda_fgd"] * rela_loss
        for k, v in (("fg_loss", fg_loss), ("bg_loss", bg_loss), ("mask_loss", mask_loss), ("rela_loss", rela_loss)):
            d[f"out.{pre}{k}"] = v
            comps[k] = comps[k] + v
        d[f"out.{pre}loss"] = li
        total = total + li
        m = f"mid.{pre}"
        d.update({m + "s_aligned": s, m + "mask_fg": fg, m + "mask_bg": bg, m + "att_spatial_t": AS_t,
                  m + "att_channel_t": AC_t, m + "att_spatial_s": AS_s, m + "att_channel_s": AC_s,
                  m + "gc_ctx_s": ctx_s, m + "gc_ctx_t": ctx_t, m + "gc_out_s": out_s, m + "gc_out_t": out_t})
    for k, v in comps.items():
        d[f"out.{k}"] = v
    d["out.loss"] = total
    if expect:
        expect(d)
    g = grads_of(total, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


# ------------------------------------------------------------------------------------------------
# §2 MGD, §3 AMD, §4 DMKD
# ------------------------------------------------------------------------------------------------
def case_mgd(seed, N, Cs, Ct, hws, alpha, lam):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {"hp.alpha_mgd": alpha, "hp.lambda_mgd": lam}
    add_levels(d, S, T)
    Sv = [s.clone().requires_grad_(True) for s in S]
    named, total, dis = [], 0, 0
    for i, (s_in, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        _, C, H, W = t.shape
        R = rng.rand(N, 1, H, W)
        margin_threshold(R, 1.0 - lam, f"mgd level {i} rand")
        d[f"in.rand.{i}"] = R
        mods = nn.Module()
        if Cs != Ct:
            mods.align = conv1x1(Cs, Ct)
        mods.generation = generator_block(Ct)
        default_init(mods, rng)
        d.update(snapshot_params(pre, mods))
        named += learnable(pre, mods)
        s = mods.align(s_in) if Cs != Ct else s_in
        keep = torch.where(R > 1.0 - lam, torch.zeros_like(R), torch.ones_like(R))
        G = run_generator(mods.generation, s * keep, f"mgd level {i}")
        dl = ((G - t) ** 2).sum() / N
        d[f"out.{pre}dis_loss"] = dl
        d[f"out.{pre}loss"] = alpha * dl
        d.update({f"mid.{pre}s_aligned": s, f"mid.{pre}keep": keep, f"mid.{pre}gen_out": G})
        total, dis = total + alpha * dl, dis + dl
    d["out.dis_loss"] = dis
    d["out.loss"] = total
    g = grads_of(total, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


class SE(nn.Module):
    def __init__(self, C, r):
        super().__init__()
        h = max(C // r, 1)
        self.fc1 = nn.Linear(C, h)
        self.fc2 = nn.Linear(h, C)
        self.to(DT)


def case_amd(seed, N, Cs, Ct, hws, alpha, tau, rho, r, mode, half_live=False):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {"hp.alpha": alpha, "hp.temp": tau, "hp.mask_ratio": rho, "hp.se_reduction": float(r),
         "hp.mask_mode": float(mode)}
    add_levels(d, S, T)
    Sv = [s.clone().requires_grad_(True) for s in S]
    named, total, dis = [], 0, 0
    for i, (s_in, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        _, C, H, W = t.shape
        mods = nn.Module()
        if Cs != Ct:
            mods.align = conv1x1(Cs, Ct)
        mods.se = SE(Ct, r)
        mods.generation = generator_block(Ct)
        default_init(mods, rng)
        margin_abs(t, f"amd level {i} |T|")
        A = att_spatial(t, tau)
        if mode == 0:
            k = math.floor(rho * (H * W))
            margin_topk(A.reshape(N, -1), k, f"amd level {i}")
            keep = topk_keep(A.reshape(N, -1), k).reshape(N, 1, H, W)
        else:
            margin_threshold(A, 1.0, f"amd level {i} mean threshold")
            keep = torch.where(A > 1.0, torch.zeros_like(A), torch.ones_like(A)).unsqueeze(1)
        s = mods.align(s_in) if Cs != Ct else s_in
        X = s * keep
        z = X.mean(dim=(2, 3))
        if half_live:
            # SE hidden width 1: place fc1's bias so the ReLU is live for image 0 and dead for image 1
            assert mods.se.fc1.weight.shape[0] == 1 and N == 2
            with torch.no_grad():
                pre_act = (z @ mods.se.fc1.weight.t()).reshape(-1)
                if abs(pre_act[0].item() - pre_act[1].item()) < 1e-3:
                    raise MarginError("amd half-live: pre-activations too close")
                if pre_act[0] < pre_act[1]:  # flip fc1 so that image 0 is the live one
                    mods.se.fc1.weight.neg_()
                    pre_act = -pre_act
                mods.se.fc1.bias.fill_(-0.5 * (pre_act[0].item() + pre_act[1].item()))
        d.update(snapshot_params(pre, mods))
        named += learnable(pre, mods)
        hid = mods.se.fc1(z)
        margin_abs(hid, f"amd level {i} SE ReLU input")
        if half_live:
            assert hid[0, 0] > 0 and hid[1, 0] < 0
        gate = torch.sigmoid(mods.se.fc2(F.relu(hid)))
        G = run_generator(mods.generation, X * gate[:, :, None, None], f"amd level {i}")
        dl = ((G - t) ** 2).sum() / N
        d[f"out.{pre}dis_loss"] = dl
        d[f"out.{pre}loss"] = alpha * dl
        d.update({f"mid.{pre}s_aligned": s, f"mid.{pre}att_spatial_t": A, f"mid.{pre}keep": keep,
                  f"mid.{pre}se_gate": gate, f"mid.{pre}gen_out": G})
        total, dis = total + alpha * dl, dis + dl
    d["out.dis_loss"] = dis
    d["out.loss"] = total
    g = grads_of(total, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


def case_dmkd(seed, N, Cs, Ct, hws, alpha, tau, rho_s, rho_c, fuse):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {"hp.alpha": alpha, "hp.temp": tau, "hp.spatial_ratio": rho_s, "hp.channel_ratio": rho_c}
    add_levels(d, S, T)
    Sv = [s.clone().requires_grad_(True) for s in S]
    named, total, dis = [], 0, 0
    for i, (s_in, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        _, C, H, W = t.shape
        mods = nn.Module()
        if Cs != Ct:
            mods.align = conv1x1(Cs, Ct)
        mods.gen_s = generator_block(Ct)
        mods.gen_c = generator_block(Ct)
        default_init(mods, rng)
        mods.fuse_logits = nn.Parameter(torch.tensor(fuse[i], dtype=DT))
        d.update(snapshot_params(pre, mods))
        named += learnable(pre, mods)
        margin_abs(t, f"dmkd level {i} |T|")
        AS = att_spatial(t, tau)
        AC = att_channel(t, tau)
        ks = math.floor(rho_s * (H * W))
        kc = math.floor(rho_c * C)
        margin_topk(AS.reshape(N, -1), ks, f"dmkd level {i} spatial")
        margin_topk(AC, kc, f"dmkd level {i} channel")
        keep_s = topk_keep(AS.reshape(N, -1), ks).reshape(N, 1, H, W)
        keep_c = topk_keep(AC, kc).reshape(N, C, 1, 1)
        s = mods.align(s_in) if Cs != Ct else s_in
        Rs = run_generator(mods.gen_s, s * keep_s, f"dmkd level {i} gen_s")
        Rc = run_generator(mods.gen_c, s * keep_c, f"dmkd level {i} gen_c")
        w = F.softmax(mods.fuse_logits, dim=0)
        Fu = w[0] * Rs + w[1] * Rc
        dl = ((Fu - t) ** 2).sum() / N
        d[f"out.{pre}dis_loss"] = dl
        d[f"out.{pre}loss"] = alpha * dl
        m = f"mid.{pre}"
        d.update({m + "s_aligned": s, m + "att_spatial_t": AS, m + "att_channel_t": AC, m + "keep_spatial": keep_s,
                  m + "keep_channel": keep_c, m + "rec_spatial": Rs, m + "rec_channel": Rc, m + "fuse_weights": w,
                  m + "fused": Fu})
        total, dis = total + alpha * dl, dis + dl
    d["out.dis_loss"] = dis
    d["out.loss"] = total
    g = grads_of(total, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


# ------------------------------------------------------------------------------------------------
# §5 SSIM-KD
# ------------------------------------------------------------------------------------------------
def gaussian_window(w, sigma):
    c = w // 2
    g = torch.tensor([math.exp(-((j - c) ** 2) / (2.0 * sigma * sigma)) for j in range(w)], dtype=DT)
    g = g / g.sum()
    return torch.outer(g, g)


def minmax(x, eps):
    mn = x.amin(dim=(2, 3), keepdim=True)
    mx = x.amax(dim=(2, 3), keepdim=True)
    return (x - mn) / (mx - mn + eps)


def case_ssim(seed, N, Cs, Ct, hws, lam, wsize, sigma, K1=0.01, K2=0.03, L=1.0, eps=1e-12):
    rng = Rng(seed)
    S, T = make_features(rng, N, Cs, Ct, hws)
    d = {"hp.loss_weight": lam, "hp.window_size": float(wsize), "hp.sigma": sigma, "hp.K1": K1, "hp.K2": K2,
         "hp.L": L, "hp.minmax_eps": eps}
    add_levels(d, S, T)
    win = gaussian_window(wsize, sigma)
    d["mid.window"] = win
    C1, C2 = (K1 * L) ** 2, (K2 * L) ** 2
    Sv = [s.clone().requires_grad_(True) for s in S]
    named, tot = [], 0
    for i, (s_in, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        N_, C, H, W = t.shape
        ad = conv1x1(Cs, Ct)
        default_init(ad, rng)
        d.update(snapshot_params(pre, ad))
        named += learnable(pre, ad)
        s = ad(s_in)
        margin_extrema(s.reshape(N, C, -1), f"ssim level {i} s_aligned min/max")
        margin_extrema(t.reshape(N, C, -1), f"ssim level {i} T min/max")
        x = minmax(s, eps)
        y = minmax(t, eps)
        k = win.expand(C, 1, wsize, wsize)

        def filt(z):
            return F.conv2d(z, k, padding=wsize // 2, groups=C)

        mx, my = filt(x), filt(y)
        sxx = filt(x * x) - mx * mx
        syy = filt(y * y) - my * my
        sxy = filt(x * y) - mx * my
        ssim = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))
        li = (1.0 - ssim).mean()
        d[f"out.{pre}ssim_loss"] = li
        d.update({f"mid.{pre}s_aligned": s, f"mid.{pre}s_norm": x, f"mid.{pre}t_norm": y, f"mid.{pre}ssim_map": ssim})
        tot = tot + li
    d["out.ssim_loss"] = tot
    loss = lam * tot
    d["out.loss"] = loss
    g = grads_of(loss, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


# ------------------------------------------------------------------------------------------------
# §6 FBKD and §7 AID
# ------------------------------------------------------------------------------------------------
class NonLocal(nn.Module):
    """Dot-product non-local block (§6b.5); keys theta, phi, g, W, bn."""

    def __init__(self, C, I, k, bn_eps):
        super().__init__()
        self.theta = nn.Conv2d(C, I, 1)
        self.phi = nn.Conv2d(C, I, 1)
        self.g = nn.Conv2d(C, I, 1)
        self.W = nn.Conv2d(I, C, 1)
        self.bn = nn.BatchNorm2d(C, eps=bn_eps)
        self.k = k
        self.I = I
        self.to(DT)

    def forward(self, x, what):
        N, C, H, W = x.shape
        I, k = self.I, self.k
        th = self.theta(x).reshape(N, I, H * W).permute(0, 2, 1)
        ph = self.phi(x)
        gx = self.g(x)
        margin_pool(ph, k, what + " phi max-pool")
        margin_pool(gx, k, what + " g max-pool")
        if k > 1:
            ph = F.max_pool2d(ph, k, k)
            gx = F.max_pool2d(gx, k, k)
        M = ph.shape[2] * ph.shape[3]
        assert M >= 1
        f = torch.matmul(th, ph.reshape(N, I, M)) / M
        y = torch.matmul(f, gx.reshape(N, I, M).permute(0, 2, 1))
        y = y.permute(0, 2, 1).reshape(N, I, H, W)
        return x + self.bn(self.W(y))


class FBKDLevel(nn.Module):
    def __init__(self, C, I, k, bn_eps):
        super().__init__()
        self.adaptation = nn.Conv2d(C, C, 1)
        self.channel_adapt = nn.Linear(C, C)
        self.spatial_adapt = nn.Conv2d(1, 1, 3, padding=1)
        self.nl_adapt = nn.Conv2d(C, C, 1)
        self.student_nl = NonLocal(C, I, k, bn_eps)
        self.teacher_nl = NonLocal(C, I, k, bn_eps)
        self.to(DT)


def case_fbkd(seed, N, C, hws, nl, use_cm, bn_mode, hp_extra=None, teacher_loss=None, beta=None):
    """bn_mode: 'official' (BN weight = bias = 0) or 'perturbed'. teacher_loss/beta -> AID."""
    aid = teacher_loss is not None
    rng = Rng(seed)
    S, T = make_features(rng, N, C, C, hws)
    hp = {"temp_s": 0.5, "temp_c": 0.5, "s_ratio": 1.0, "w_feat": 7e-5, "w_channel": 4e-3, "w_spatial": 4e-3,
          "w_nonlocal": 7e-5, "use_channel_mask": float(use_cm), "bn_eps": 1e-5}
    hp.update(hp_extra or {})
    d = {f"hp.{k}": v for k, v in hp.items()}
    for i, (I, k) in enumerate(nl):
        d[f"hp.level{i}.nl_inter"] = float(I)
        d[f"hp.level{i}.nl_pool"] = float(k)
    add_levels(d, S, T)
    if aid:
        LT = torch.tensor(teacher_loss, dtype=DT)
        d["in.teacher_loss"] = LT
        d["hp.beta"] = beta
        wts = torch.exp(-beta * LT)
        d["mid.instance_weights"] = wts
    Sv = [s.clone().requires_grad_(True) for s in S]
    named = []
    r = hp["s_ratio"]
    sums = {"feat": 0, "channel": 0, "spatial": 0, "nonlocal": 0}
    for i, (s, t) in enumerate(zip(Sv, T)):
        pre = f"level{i}."
        I, k = nl[i]
        mod = FBKDLevel(C, I, k, hp["bn_eps"])
        default_init(mod, rng)
        with torch.no_grad():
            for blk in (mod.student_nl, mod.teacher_nl):
                if bn_mode == "official":
                    blk.bn.weight.zero_()
                    blk.bn.bias.zero_()
                else:
                    blk.bn.weight.copy_(rng.uniform(C, lo=0.5, hi=1.5))
                    blk.bn.bias.copy_(rng.uniform(C, lo=-0.5, hi=0.5))
                    blk.bn.running_mean.copy_(rng.randn(C, std=0.1))
                    blk.bn.running_var.copy_(1.0 + rng.uniform(C, lo=0.0, hi=0.5))
        d.update(snapshot_params(pre, mod))
        named += learnable(pre, mod)
        mod.train()
        margin_abs(s, f"fbkd level {i} |S|")
        margin_abs(t, f"fbkd level {i} |T|")
        with torch.no_grad():
            MS = ((att_spatial(t, hp["temp_s"]) + r * att_spatial(s, hp["temp_s"])) / (1 + r)).unsqueeze(1)
            MC = ((att_channel(t, hp["temp_c"]) + r * att_channel(s, hp["temp_c"])) / (1 + r))[:, :, None, None]
        mask = MS * MC if use_cm else MS
        fa = mod.adaptation(s)
        gap = mod.channel_adapt(s.mean(dim=(2, 3)))
        spa = mod.spatial_adapt(s.mean(dim=1, keepdim=True))
        nl_s = mod.student_nl(s, f"fbkd level {i} student_nl")
        nl_sa = mod.nl_adapt(nl_s)
        nl_t = mod.teacher_nl(t, f"fbkd level {i} teacher_nl")
        e_feat = ((t - fa) ** 2 * mask)
        e_ch = (t.mean(dim=(2, 3)) - gap) ** 2
        e_sp = (t.mean(dim=1, keepdim=True) - spa) ** 2
        e_nl = (nl_sa - nl_t) ** 2
        if aid:
            lf = e_feat.reshape(N, -1).sum(1).sqrt()
            lc = e_ch.reshape(N, -1).sum(1).sqrt()
            ls = e_sp.reshape(N, -1).sum(1).sqrt()
            ln = e_nl.reshape(N, -1).sum(1).sqrt()
            sums["feat"] = sums["feat"] + (wts * lf).sum()
            sums["channel"] = sums["channel"] + (wts * lc).sum()
            sums["spatial"] = sums["spatial"] + (wts * ls).sum()
            sums["nonlocal"] = sums["nonlocal"] + (wts * ln).sum()
        else:
            lf = e_feat.sum() ** 0.5
            lc = torch.dist(t.mean(dim=(2, 3)), gap)
            ls = torch.dist(t.mean(dim=1, keepdim=True), spa)
            ln = torch.dist(nl_sa, nl_t, p=2)
            for key, v in (("feat", lf), ("channel", lc), ("spatial", ls), ("nonlocal", ln)):
                sums[key] = sums[key] + v
        m = f"mid.{pre}"
        d.update({m + "mask_spatial": MS, m + "mask_channel": MC, m + "feat_adapt": fa, m + "gap_adapt": gap,
                  m + "sp_adapt": spa, m + "nl_s": nl_s, m + "nl_s_adapt": nl_sa, m + "nl_t": nl_t,
                  m + "l_feat": lf, m + "l_channel": lc, m + "l_spatial": ls, m + "l_nonlocal": ln})
    outs = {"kd_feat_loss": hp["w_feat"] * sums["feat"], "kd_channel_loss": hp["w_channel"] * sums["channel"],
            "kd_spatial_loss": hp["w_spatial"] * sums["spatial"], "kd_nonlocal_loss": hp["w_nonlocal"] * sums["nonlocal"]}
    loss = outs["kd_feat_loss"] + outs["kd_channel_loss"] + outs["kd_spatial_loss"] + outs["kd_nonlocal_loss"]
    d.update({f"out.{k}": v for k, v in outs.items()})
    d["out.loss"] = loss
    g = grads_of(loss, [(f"S.{i}", s) for i, s in enumerate(Sv)] + [("param." + k, p) for k, p in named])
    d.update({f"grad.{k}": v for k, v in g.items()})
    return d


# ------------------------------------------------------------------------------------------------
# the case set (kd_golden_format.md §7)
# ------------------------------------------------------------------------------------------------
FGD_RETINA = {"temp": 0.5, "alpha_fgd": 1e-3, "beta_fgd": 5e-4, "gamma_fgd": 5e-4, "lambda_fgd": 5e-6, "ln_eps": 1e-5}
FGD_FCOS = {"temp": 0.8, "alpha_fgd": 1.6e-3, "beta_fgd": 8e-4, "gamma_fgd": 8e-4, "lambda_fgd": 8e-6, "ln_eps": 1e-5}
FGD_2STAGE = {"temp": 0.5, "alpha_fgd": 5e-5, "beta_fgd": 2.5e-5, "gamma_fgd": 5e-5, "lambda_fgd": 5e-7, "ln_eps": 1e-5}


def _expect_fgd_1(d):
    assert d["in.boxes.1"].shape == (0, 4)
    assert (d["mid.level0.mask_fg"][2] > 0).all() and (d["mid.level0.mask_bg"][2] == 0).all()
    assert torch.allclose(d["mid.level0.mask_bg"][1], torch.full((12, 9), 1.0 / 108, dtype=DT))


def _expect_fgd_2(d):
    assert (d["mid.level2.mask_fg"] > 0).all() and d["out.level2.bg_loss"].item() == 0.0
    assert (d["mid.level0.mask_bg"] > 0).any()


def _expect_fgd_0(d):
    # the box ending at (w_ref, h_ref) fills through the last row/column of level 0
    assert d["mid.level0.mask_fg"][0, -1, -1] > 0


CASES = {
    "fgd": [
        lambda: run_seeds(lambda s: case_fgd(s, 2, 6, 8, [(10, 14), (5, 7)],
                                             [[[10.3, 12.7, 50.2, 44.1], [30.5, 20.2, 70.9, 60.3], [60.1, 50.6, 112.0, 80.0]],
                                              [[5.5, 6.2, 40.7, 30.9], [22.3, 41.1, 97.4, 70.6]]],
                                             [[80.0, 112.0], [72.0, 100.0]], FGD_RETINA, True, _expect_fgd_0), 101),
        lambda: run_seeds(lambda s: case_fgd(s, 3, 8, 8, [(12, 9)],
                                             [[[3.2, 5.1, 30.7, 44.4], [35.3, 50.6, 70.2, 90.9]], [],
                                              [[0.0, 0.0, 72.0, 96.0]]],
                                             [[96.0, 72.0], [96.0, 72.0], [96.0, 72.0]], FGD_FCOS, False, _expect_fgd_1), 202),
        lambda: run_seeds(lambda s: case_fgd(s, 2, 12, 6, [(8, 12), (4, 6), (2, 3)],
                                             [[[15.2, 2.9, 90.1, 61.7], [40.2, 10.4, 60.8, 30.1]],
                                              [[20.5, 15.3, 85.5, 57.3]]],
                                             [[64.0, 96.0], [60.0, 90.0]], FGD_2STAGE, True, _expect_fgd_2), 303),
    ],
    "mgd": [
        lambda: run_seeds(lambda s: case_mgd(s, 2, 6, 8, [(10, 14), (5, 7)], 2e-5, 0.65), 111),
        lambda: run_seeds(lambda s: case_mgd(s, 3, 4, 4, [(9, 11)], 5e-7, 0.45), 222),
    ],
    "amd": [
        lambda: run_seeds(lambda s: case_amd(s, 2, 6, 8, [(8, 10), (4, 5)], 2e-5, 0.5, 0.65, 2, 0), 121),
        lambda: run_seeds(lambda s: case_amd(s, 3, 16, 16, [(7, 9)], 5e-7, 0.5, 0.65, 4, 1), 232),
        lambda: run_seeds(lambda s: case_amd(s, 2, 8, 8, [(6, 10)], 2e-5, 0.8, 0.45, 16, 0, half_live=True), 343),
    ],
    "dmkd": [
        lambda: run_seeds(lambda s: case_dmkd(s, 2, 6, 8, [(8, 10), (4, 5)], 2e-5, 0.5, 0.65, 0.65,
                                              [(0.3, -0.2), (-0.5, 0.4)]), 131),
        lambda: run_seeds(lambda s: case_dmkd(s, 3, 8, 8, [(7, 9)], 5e-7, 0.5, 0.45, 0.3, [(0.0, 0.0)]), 242),
    ],
    "ssim_kd": [
        lambda: run_seeds(lambda s: case_ssim(s, 2, 6, 8, [(12, 16), (6, 8), (3, 4)], 1.0, 11, 1.5), 141),
        lambda: run_seeds(lambda s: case_ssim(s, 1, 4, 4, [(13, 11), (5, 7)], 1.0, 11, 1.5), 252),
        lambda: run_seeds(lambda s: case_ssim(s, 2, 5, 3, [(9, 9), (2, 3)], 2.0, 7, 1.0), 363),
    ],
    "fbkd": [
        lambda: run_seeds(lambda s: case_fbkd(s, 2, 8, [(16, 16), (8, 8)], [(4, 4), (4, 2)], 0, "perturbed"), 151),
        lambda: run_seeds(lambda s: case_fbkd(s, 2, 8, [(10, 13), (5, 7), (3, 4)], [(4, 4), (4, 2), (2, 2)], 1,
                                              "perturbed"), 262),
        lambda: run_seeds(lambda s: case_fbkd(s, 3, 6, [(8, 8)], [(3, 2)], 0, "official"), 373),
    ],
    "aid": [
        lambda: run_seeds(lambda s: case_fbkd(s, 2, 8, [(16, 16), (8, 8)], [(4, 4), (4, 2)], 0, "perturbed",
                                              teacher_loss=[0.8, 2.5], beta=0.1), 161),
        lambda: run_seeds(lambda s: case_fbkd(s, 3, 8, [(10, 13), (4, 5)], [(4, 2), (4, 2)], 1, "perturbed",
                                              teacher_loss=[0.0, 1.3, 7.0], beta=0.25), 272),
    ],
    "fitnet": [
        lambda: case_fitnet(171, 2, 6, 8, [(10, 14)], 1.0, 0),
        lambda: case_fitnet(282, 3, 4, 4, [(6, 7), (3, 4)], 0.5, 1),
        lambda: case_fitnet(393, 2, 5, 3, [(4, 6)], 2e-3, 2),
    ],
    "logit_kd_kl": [
        lambda: case_logit_kl(181, 16, 81, 2.0, 0),
        lambda: case_logit_kl(292, 7, 5, 1.0, 1),
        lambda: case_logit_kl(303, 5, 4, 3.0, 2),
    ],
    "logit_kd_bce": [
        lambda: case_logit_bce(191, 16, 80, 2.0, [1.0] * 16, 16.0),
        lambda: case_logit_bce(2102, 9, 3, 1.5, [1.0, 0.0, 2.5, 1.0, 0.0, 0.5, 1.0, 3.0, 1.0], 4.0),
    ],
}


def generate_dir(out, only=None):
    os.makedirs(out, exist_ok=True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # byte-identical reruns whatever the caller's thread count
    torch.manual_seed(0)      # module constructors draw from the global RNG; values are overwritten anyway
    n = 0
    try:
        for method in METHODS:
            if only and method not in only:
                continue
            for k, make in enumerate(CASES[method]):
                case = f"{method}_{k}"
                d = make()
                write_kdgold(os.path.join(out, case + ".safetensors"), method, case, d)
                n += 1
    finally:
        torch.set_num_threads(prev_threads)
    return n


def generate(w):
    """make_fixtures.py entry point: writes <fixture dir>/kd_golden/*.safetensors."""
    n = generate_dir(os.path.join(w.out, "kd_golden"))
    w.count += n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated methods")
    a = ap.parse_args()
    only = set(x for x in a.only.split(",") if x)
    bad = only - set(METHODS)
    if bad:
        sys.exit(f"unknown method(s): {sorted(bad)}")
    t0 = time.time()
    n = generate_dir(a.out, only)
    print(f"gen_kd_golden: wrote {n} kdgold-1 files to {a.out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
