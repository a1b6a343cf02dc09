"""Parity fixtures for layers/: ResNet / ResNeXt / FPN key names, forward and backward.

* Key lists (with shapes) of torchvision's ResNet-18/50, ResNeXt-50 32x4d and ResNeXt-101 32x4d /
  64x4d without `fc` (= mmdet's backbone keys minus "backbone."), in the metadata of
  `layers_keys` as "name dtype[shape]" lines.
* `layers_resnet18`: torchvision resnet18 with random weights AND random BN statistics (f32 weights),
  a 1x3x64x64 input, the C2..C5 outputs in eval mode and in train mode (batch statistics), the
  running stats after the train-mode step, and gradients of sum_i <C_i, R_i> (train mode) for the
  input and a few parameters. References are computed in float64 from the f32 weights.
* `layers_resnext_block`: one ResNeXt bottleneck (64 -> 256, stride 2, groups 32, base width 4,
  projection shortcut) in f64, eval and train modes, with input gradient.
* `layers_fpn_<name>`: a replica of mmdet's FPN (mmdet/models/necks/fpn.py, specs/detectors.md §3)
  written below with mmdet's module names, on odd-sized inputs (non-exact 2x upsampling), f64.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet


def keys_meta(model, drop=("fc.",)):
    lines = []
    for k, v in model.state_dict().items():
        if any(k.startswith(d) for d in drop):
            continue
        dt = {torch.float32: "f32", torch.float64: "f64", torch.int64: "i64"}[v.dtype]
        lines.append(f"{k} {dt}[{', '.join(str(s) for s in v.shape)}]")
    return "\n".join(lines)


def randomize_bn(model, g):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)


def randomize_convs(model, g):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype) *
                               math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype) * 0.1)


def backbone_stages(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs


def gen_keys(w):
    meta = {
        "resnet18": keys_meta(torchvision.models.resnet18()),
        "resnet50": keys_meta(torchvision.models.resnet50()),
        "resnext50_32x4d": keys_meta(torchvision.models.resnext50_32x4d()),
        "resnext101_32x4d": keys_meta(ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)),
        "resnext101_64x4d": keys_meta(torchvision.models.resnext101_64x4d()),
        "fpn_retinanet_r50": keys_meta(MMDetFPN([256, 512, 1024, 2048], 256, 5, start_level=1,
                                                add_extra_convs="on_input"), drop=()),
        "fpn_faster_r50": keys_meta(MMDetFPN([256, 512, 1024, 2048], 256, 5), drop=()),
        "fpn_gn": keys_meta(MMDetFPN([64, 128], 64, 3, add_extra_convs="on_output", gn=True), drop=()),
    }
    w.save("layers_keys", {"dummy": torch.zeros(1)}, meta)


def gen_resnet18(w):
    g = torch.Generator().manual_seed(18)
    model = torchvision.models.resnet18()
    randomize_convs(model, g)
    randomize_bn(model, g)
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    x32 = torch.randn(1, 3, 64, 64, generator=g)
    out = {}
    for k, v in weights.items():
        out["w." + k] = v
    out["x"] = x32
    m = model.double()
    x = x32.double()
    with torch.no_grad():
        m.eval()
        for i, c in enumerate(backbone_stages(m, x)):
            out[f"eval.c{i + 2}"] = c
    m.train()
    xg = x.clone().requires_grad_(True)
    outs = backbone_stages(m, xg)
    rs = [torch.randn(c.shape, generator=g, dtype=torch.float64) for c in outs]
    loss = sum((c * r).sum() for c, r in zip(outs, rs))
    loss.backward()
    for i, (c, r) in enumerate(zip(outs, rs)):
        out[f"train.c{i + 2}"] = c.detach()
        out[f"train.r{i + 2}"] = r
    out["grad.x"] = xg.grad
    sd = m.state_dict()
    for k in ["bn1.running_mean", "bn1.running_var", "layer2.0.downsample.1.running_mean",
              "layer4.1.bn2.running_var", "layer4.1.bn2.num_batches_tracked"]:
        out["after." + k] = sd[k]
    params = dict(m.named_parameters())
    for k in ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.bias", "layer3.1.bn2.weight", "layer4.0.downsample.0.weight", "layer4.1.bn2.bias"]:
        out["grad." + k] = params[k].grad
    w.save("layers_resnet18", out, {"input": "1x3x64x64"})


def gen_resnext_block(w):
    g = torch.Generator().manual_seed(32)
    ds = nn.Sequential(nn.Conv2d(64, 256, 1, stride=2, bias=False), nn.BatchNorm2d(256))
    blk = Bottleneck(64, 64, stride=2, downsample=ds, groups=32, base_width=4).double()
    randomize_convs(blk, g)
    randomize_bn(blk, g)
    out = {"w." + k: v.clone() for k, v in blk.state_dict().items()}
    x = torch.randn(2, 64, 9, 10, generator=g, dtype=torch.float64)
    out["x"] = x
    with torch.no_grad():
        blk.eval()
        out["eval.y"] = blk(x)
    blk.train()
    xg = x.clone().requires_grad_(True)
    y = blk(xg)
    r = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (y * r).sum().backward()
    out["train.y"] = y.detach()
    out["train.r"] = r
    out["grad.x"] = xg.grad
    out["grad.conv2.weight"] = blk.conv2.weight.grad
    out["after.bn2.running_var"] = blk.bn2.running_var
    w.save("layers_resnext_block", out, {"width": str(blk.conv2.weight.shape[0])})


# ---- mmdet FPN replica (module names as mmcv ConvModule: conv / gn) -----------------------------

class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, gn=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=not gn)
        if gn:
            self.gn = nn.GroupNorm(32, cout)
        self.with_gn = gn

    def forward(self, x):
        x = self.conv(x)
        return self.gn(x) if self.with_gn else x


class MMDetFPN(nn.Module):
    def __init__(self, in_channels, out_channels, num_outs, start_level=0, add_extra_convs=False,
                 relu_before_extra_convs=False, gn=False):
        super().__init__()
        self.in_channels = in_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.backbone_end_level = self.num_ins
        self.start_level = start_level
        self.add_extra_convs = add_extra_convs
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(ConvModule(in_channels[i], out_channels, 1, gn=gn))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, gn=gn))
        extra_levels = num_outs - self.backbone_end_level + start_level
        if add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                cin = in_channels[self.backbone_end_level - 1] if (i == 0 and add_extra_convs == "on_input") \
                    else out_channels
                self.fpn_convs.append(ConvModule(cin, out_channels, 3, stride=2, padding=1, gn=gn))

    def forward(self, inputs):
        laterals = [lc(inputs[i + self.start_level]) for i, lc in enumerate(self.lateral_convs)]
        used = len(laterals)
        for i in range(used - 1, 0, -1):
            prev_shape = laterals[i - 1].shape[2:]
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=prev_shape, mode="nearest")
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                for i in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == "on_input":
                    src = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == "on_lateral":
                    src = laterals[-1]
                else:
                    src = outs[-1]
                outs.append(self.fpn_convs[used](src))
                for i in range(used + 1, self.num_outs):
                    if self.relu_before_extra_convs:
                        outs.append(self.fpn_convs[i](F.relu(outs[-1])))
                    else:
                        outs.append(self.fpn_convs[i](outs[-1]))
        return outs


FPN_CASES = {
    # name: (in_channels, out, num_outs, start_level, add_extra_convs, relu_before_extra, gn)
    "retina": ([16, 24, 32, 40], 32, 5, 1, "on_input", False, False),
    "maxpool": ([16, 24, 32, 40], 32, 5, 0, False, False, False),
    "on_output_relu": ([16, 24, 32, 40], 32, 6, 1, "on_output", True, False),
    "on_lateral": ([16, 24, 32, 40], 32, 5, 2, "on_lateral", False, False),
    "gn": ([16, 24, 32, 40], 64, 5, 1, "on_input", False, True),
}


def gen_fpn(w):
    sizes = [(17, 13), (9, 7), (5, 4), (3, 2)]
    for seed, (name, (cin, cout, nout, start, extra, relu_x, gn)) in enumerate(FPN_CASES.items()):
        g = torch.Generator().manual_seed(100 + seed)
        fpn = MMDetFPN(cin, cout, nout, start_level=start, add_extra_convs=extra, relu_before_extra_convs=relu_x,
                       gn=gn).double()
        randomize_convs(fpn, g)
        randomize_bn(fpn, g)
        out = {"w." + k: v.clone() for k, v in fpn.state_dict().items()}
        xs = [torch.randn(2, c, h, wd, generator=g, dtype=torch.float64).requires_grad_(True)
              for c, (h, wd) in zip(cin, sizes)]
        ys = fpn(xs)
        rs = [torch.randn(y.shape, generator=g, dtype=torch.float64) for y in ys]
        sum((y * r).sum() for y, r in zip(ys, rs)).backward()
        for i, x in enumerate(xs):
            out[f"x{i}"] = x.detach()
            out[f"grad.x{i}"] = x.grad if x.grad is not None else torch.zeros_like(x)  # unused level
        for i, (y, r) in enumerate(zip(ys, rs)):
            out[f"y{i}"] = y.detach()
            out[f"r{i}"] = r
        out["grad.lateral_convs.0.conv.weight"] = fpn.lateral_convs[0].conv.weight.grad
        out[f"grad.fpn_convs.{len(fpn.fpn_convs) - 1}.conv.weight"] = fpn.fpn_convs[-1].conv.weight.grad
        meta = {"in_channels": ",".join(map(str, cin)), "out_channels": str(cout), "num_outs": str(nout),
                "start_level": str(start), "add_extra_convs": str(extra), "relu_before_extra_convs": str(relu_x),
                "gn": str(gn)}
        w.save("layers_fpn_" + name, out, meta)


def generate(w):
    torch.manual_seed(0)
    gen_keys(w)
    gen_resnet18(w)
    gen_resnext_block(w)
    gen_fpn(w)
