"""Deformable convolution parity fixtures (tests/engine/test_deform_conv.cpp), oracle
torchvision.ops.deform_conv2d (spec detectors.md 10 and 15.1).

torchvision's layout equals mmcv's: offset [N, 2*DG*KH*KW, Ho, Wo] with channel g*2*KK + 2k = row (y)
offset and g*2*KK + 2k + 1 = column (x) offset of kernel tap k = i*KW + j of deform group g; mask
[N, DG*KK, Ho, Wo] with channel g*KK + k (mmcv ModulatedDeformConv2d: the same), multiplied onto the
bilinear sample. Both read 0 for samples with h <= -1, h >= H, w <= -1, w >= W and for corners outside the
map. Inputs are float32; references are torch float64 computed from those float32 values. Each case stores
x, offset, (mask), w, (b), r (output weighting), y and the gradients of sum(y * r).

The "smaller than the kernel" case follows mmcv's DeformConv2d.forward (zero-pad x and offset at the
bottom/right to the kernel size, run, crop the output); the generator asserts that this equals running
torchvision directly on the small input, which is what the engine does.
"""
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

# (N, C, H, W, O, KH, KW, stride, pad, dilation, groups, deform_groups, mask, bias, offset_scale)
CASES = [
    (2, 4, 7, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False, True, 1.5),     # v1
    (2, 4, 7, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, False, 1.5),     # v2
    (2, 6, 11, 10, 8, 3, 3, (2, 2), (1, 1), (1, 1), 1, 1, False, False, 2.0),  # stride 2
    (1, 4, 9, 9, 4, 3, 3, (1, 1), (2, 2), (2, 2), 1, 1, True, True, 1.0),      # dilation 2
    (2, 8, 8, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, 2, True, True, 1.5),      # groups 2, deform_groups 2
    (1, 4, 2, 1, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False, False, 0.7),    # input smaller than kernel (v1)
    (2, 3, 1, 2, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, True, 0.7),      # smaller than kernel (v2)
    (2, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 2, False, False, 6.0),    # offsets far outside the map
    (1, 6, 9, 11, 6, 2, 3, (2, 1), (1, 0), (1, 2), 3, 3, True, True, 1.2),     # asymmetric kernel/args
    (2, 32, 12, 11, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, False, 1.0),  # several GEMM panels
    (1, 3, 5, 5, 4, 1, 1, (1, 1), (0, 0), (1, 1), 1, 1, False, True, 0.8),     # 1x1 kernel
]


def mmcv_small_input_forward(x, off, wt, b, s, p, d):
    """mmcv DeformConv2d.forward for inputs smaller than the kernel: pad, run, crop."""
    kh, kw = wt.shape[2], wt.shape[3]
    ph, pw = max(kh - x.shape[2], 0), max(kw - x.shape[3], 0)
    xp = F.pad(x, (0, pw, 0, ph))
    op = F.pad(off, (0, pw, 0, ph))
    y = deform_conv2d(xp, op, wt, b, stride=s, padding=p, dilation=d)
    return y[:, :, :y.shape[2] - ph, :y.shape[3] - pw]


def generate(w):
    g = torch.Generator().manual_seed(20261121)
    for i, (n, c, h, wd, o, kh, kw, s, p, d, grp, dg, use_mask, bias, osc) in enumerate(CASES):
        ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
        wo = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
        x = torch.randn(n, c, h, wd, generator=g)
        off = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g) * osc
        mask = torch.sigmoid(torch.randn(n, dg * kh * kw, ho, wo, generator=g)) if use_mask else None
        wt = torch.randn(o, c // grp, kh, kw, generator=g) * (1.0 / (c // grp * kh * kw) ** 0.5)
        b = torch.randn(o, generator=g) if bias else None
        x64 = x.double().requires_grad_()
        o64 = off.double().requires_grad_()
        m64 = mask.double().requires_grad_() if use_mask else None
        w64 = wt.double().requires_grad_()
        b64 = b.double().requires_grad_() if bias else None
        small = h < kh or wd < kw
        if small and not use_mask:
            y = mmcv_small_input_forward(x64, o64, w64, b64, s, p, d)
            direct = deform_conv2d(x64, o64, w64, b64, stride=s, padding=p, dilation=d)
            assert (y - direct).abs().max() < 1e-12, "mmcv pad-and-crop differs from the direct small-input computation"
        else:
            y = deform_conv2d(x64, o64, w64, b64, stride=s, padding=p, dilation=d, mask=m64)
        assert y.shape == (n, o, ho, wo)
        r = torch.randn(y.shape, generator=g)
        (y * r.double()).sum().backward()
        t = {"x": x, "offset": off, "w": wt, "r": r, "y": y.detach(), "gx": x64.grad, "goffset": o64.grad,
             "gw": w64.grad}
        if use_mask:
            t["mask"] = mask
            t["gmask"] = m64.grad
        if bias:
            t["b"] = b
            t["gb"] = b64.grad
        args = f"{s[0]},{s[1]},{p[0]},{p[1]},{d[0]},{d[1]},{grp},{dg}"
        w.save(f"deform_conv2d_{i}", t, {"args": args, "mask": int(use_mask), "bias": int(bias)})
    generate_resnet(w)


# --- ResNet with DCN (mmdet `dcn=dict(type='DCN'|'DCNv2', deform_groups=1, fallback_on_stride=False)`,
# `stage_with_dcn=(False, True, True, True)`) ---------------------------------------------------------------

def dcn_resnet_key_lines(layers, groups=1, width_per_group=64, dcn="DCN", stage_with_dcn=(False, True, True, True)):
    """mmdet's backbone state dict for a ResNet/ResNeXt with DCN as "name dtype[shape]" lines in state-dict
    order (gen_layers.py's format): torchvision's ResNet keys (spec 2.3; mmdet's ResNeXt width formula equals
    torchvision's) minus fc, with conv2.conv_offset.{weight, bias} right after conv2.weight in every
    Bottleneck of a DCN stage (DeformConv2dPack registers weight, then its child conv_offset: 2*9 outputs;
    ModulatedDeformConv2dPack 'DCNv2': 3*9; built with bias=False, so no conv2.bias)."""
    import torchvision
    from torchvision.models.resnet import Bottleneck
    saved = {n: getattr(torch.nn.init, n) for n in ("kaiming_normal_", "kaiming_uniform_", "uniform_", "constant_")}
    try:  # only the shapes are needed: skip the (slow) weight initialisation
        for n in saved:
            setattr(torch.nn.init, n, lambda t, *a, **k: t)
        m = torchvision.models.resnet.ResNet(Bottleneck, layers, groups=groups, width_per_group=width_per_group)
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
    per_tap = 2 if dcn == "DCN" else 3
    dts = {torch.float32: "f32", torch.int64: "i64"}
    lines = []
    for k, v in m.state_dict().items():
        if k.startswith("fc."):
            continue
        lines.append(f"{k} {dts[v.dtype]}[{', '.join(str(s) for s in v.shape)}]")
        parts = k.split(".")
        if len(parts) == 4 and parts[2] == "conv2" and parts[3] == "weight" and stage_with_dcn[int(parts[0][5]) - 1]:
            base = ".".join(parts[:3])
            lines.append(f"{base}.conv_offset.weight f32[{per_tap * 9}, {v.shape[0]}, 3, 3]")
            lines.append(f"{base}.conv_offset.bias f32[{per_tap * 9}]")
    return "\n".join(lines)


class TorchDcnBottleneck(torch.nn.Module):
    """mmdet Bottleneck (style pytorch) with conv2 = DeformConv2dPack / ModulatedDeformConv2dPack (no bias),
    BN in eval mode; the deformable conv is torchvision's."""

    def __init__(self, inplanes, planes, stride, groups, base_width, dcn):
        super().__init__()
        width = planes if groups == 1 else (planes * base_width // 64) * groups
        self.dcn, self.stride = dcn, stride
        self.conv1 = torch.nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2_weight = torch.nn.Parameter(torch.zeros(width, width // groups, 3, 3))
        self.conv2_offset = torch.nn.Conv2d(width, (2 if dcn == "DCN" else 3) * 9, 3, stride, 1, bias=True)
        self.bn2 = torch.nn.BatchNorm2d(width)
        self.conv3 = torch.nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(planes * 4)
        self.ds_conv = torch.nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False)
        self.ds_bn = torch.nn.BatchNorm2d(planes * 4)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        o = self.conv2_offset(out)
        if self.dcn == "DCN":
            out = deform_conv2d(out, o, self.conv2_weight, None, stride=self.stride, padding=1)
        else:
            o1, o2, m = torch.chunk(o, 3, dim=1)  # mmcv ModulatedDeformConv2dPack.forward
            out = deform_conv2d(out, torch.cat((o1, o2), dim=1), self.conv2_weight, None, stride=self.stride,
                                padding=1, mask=torch.sigmoid(m))
        out = torch.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.ds_bn(self.ds_conv(x)))

    def mmdet_state_dict(self):
        rename = {"conv2_weight": "conv2.weight", "conv2_offset.weight": "conv2.conv_offset.weight",
                  "conv2_offset.bias": "conv2.conv_offset.bias"}
        out = {}
        for k, v in self.state_dict().items():
            k = rename.get(k, k).replace("ds_conv.", "downsample.0.").replace("ds_bn.", "downsample.1.")
            out[k] = v
        return out


def generate_resnet(w):
    meta = {}
    for name, layers, groups, wpg, dcn in [("r50_dcn", [3, 4, 6, 3], 1, 64, "DCN"),
                                           ("r50_dcnv2", [3, 4, 6, 3], 1, 64, "DCNv2"),
                                           ("x101_32x4d_dcn", [3, 4, 23, 3], 32, 4, "DCN")]:
        meta[name] = dcn_resnet_key_lines(layers, groups, wpg, dcn)
    w.save("resnet_dcn_keys", {"dummy": torch.zeros(1)}, meta)
    g = torch.Generator().manual_seed(77)
    for i, (inplanes, planes, stride, groups, base_width, dcn) in enumerate(
            [(32, 16, 2, 1, 4, "DCN"), (32, 16, 1, 1, 4, "DCNv2"), (48, 32, 2, 4, 16, "DCN")]):
        torch.manual_seed(100 + i)
        m = TorchDcnBottleneck(inplanes, planes, stride, groups, base_width, dcn).double()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * (0.3 if p.dim() > 1 else 0.5))
            m.conv2_offset.weight.mul_(0.3)  # offsets of a few pixels
            for bn in [m.bn1, m.bn2, m.bn3, m.ds_bn]:
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64) * 0.2)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=torch.float64) + 0.5)
                bn.num_batches_tracked.fill_(7)
        m.eval()
        x = torch.randn(2, inplanes, 9, 10, generator=g, dtype=torch.float64).requires_grad_()
        y = m(x)
        r = torch.randn(y.shape, generator=g, dtype=torch.float64)
        (y * r).sum().backward()
        t = {"in.x": x.detach(), "in.r": r, "out.y": y.detach(), "out.gx": x.grad,
             "out.g_conv_offset": m.conv2_offset.weight.grad, "out.g_conv2": m.conv2_weight.grad}
        t.update({"sd." + k: v for k, v in m.mmdet_state_dict().items()})
        w.save(f"dcn_bottleneck_{i}", t, {"inplanes": inplanes, "planes": planes, "stride": stride, "groups": groups,
                                          "base_width": base_width, "dcn": dcn})
