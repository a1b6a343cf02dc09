// engine/ops/deform_conv_geom.h — the sizes of one deform_conv2d call, shared by the CPU kernels
// (deform_conv_cpu.cpp) and the CUDA kernels (deform_conv_cuda.cu; plain C++, passed to kernels by value).
// Og = O/groups, Cg = C/groups, Cd = C/deform_groups, KK = KH·KW, P = Ho·Wo, HW = H·W.
#pragma once
#include "engine/ops/deform_conv.h"

namespace kdet {

struct DeformGeom {
  int64_t N, C, H, W, O, KH, KW, Ho, Wo, G, DG, Cg, Og, Cd, KK, P, HW;
  int64_t sh, sw, ph, pw, dh, dw;
};

// xs, ws, ys: input, weight and output shapes (already checked). Input planes must have < 2^31 elements
// (32-bit plane indices); `op` names the caller in the error.
inline DeformGeom deform_geom(const Shape& xs, const Shape& ws, const Shape& ys, const DeformConvArgs& a,
                              const char* op = "deform_conv2d") {
  DeformGeom g;
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.O = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.Ho = ys[2], g.Wo = ys[3];
  g.G = a.groups, g.DG = a.deform_groups, g.Cg = g.C / g.G, g.Og = g.O / g.G, g.Cd = g.C / g.DG;
  g.KK = g.KH * g.KW, g.P = g.Ho * g.Wo, g.HW = g.H * g.W;
  g.sh = a.stride[0], g.sw = a.stride[1], g.ph = a.padding[0], g.pw = a.padding[1];
  g.dh = a.dilation[0], g.dw = a.dilation[1];
  KDET_CHECK(g.HW < (int64_t(1) << 31), op, ": input plane ", g.H, "x", g.W, " too large");
  return g;
}

}  // namespace kdet
