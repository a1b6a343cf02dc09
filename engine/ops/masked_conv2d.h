// engine/ops/masked_conv2d.h — conv2d of a masked input that only touches the unmasked part.
//
//   masked_conv2d(x, m, w, b, a) == conv2d(x ⊙ m, w, b, a)          (up to the order of the sums)
//   x [N, C, H, W]; m a constant mask (any values, zeros are skipped) of shape
//     [N, 1, H, W]  spatial: with U_n = {p : m[n, p] != 0} (stride 1, dilation 1, groups 1; other
//                   arguments fall back to the dense conv2d of x ⊙ m),
//     [N, C, 1, 1]  channel: with K_n = {c : m[n, c] != 0} (any conv arguments, groups 1);
//   w [O, C, KH, KW], b [O] or undefined  ->  y [N, O, Ho, Wo] as conv2d.
//
// Spatial (per image, in chunks of kept positions u; W_all [KK·O, C] = the weight with the KK = KH·KW
// taps as row blocks, X_U [C, J] = (x ⊙ m)[:, U]):
//   forward          Z = W_all · X_U (one GEMM), y[o, p(u, k)] += Z[k·O + o, u]   (p(u, k) = the output
//                    pixel that tap k of input pixel u feeds; scattered per o in tap order)
//   backward input   dX_U = W_allᵀ · G, G[k·O + o, u] = dy[o, p(u, k)] (0 off the map); dx = m ⊙ dX at U, 0 elsewhere
//   backward weight  dW_all = Σ_{n, chunks} G · X_Uᵀ (fixed order), db = Σ dy.
// Channel: per image the dense conv2d kernels on the kept channels (x[n, K_n] ⊙ m, w[:, K_n]); dw[:, K_n]
//   accumulated over images in order.
// The work is ∝ the kept fraction (e.g. 35% for the 0.65 masks of MGD/AMD/DMKD). Deterministic for a
// fixed thread count (GEMMs of engine/gemm.h; scatters parallel over output channels). f32 and f64, CPU.
// Op name "masked_conv2d"; m gets no gradient.
#pragma once
#include "engine/autograd.h"
#include "engine/ops/conv2d.h"

namespace kdet {

namespace ops {
Tensor masked_conv2d(const Tensor& x, const Tensor& m, const Tensor& w, const Tensor& b, const Conv2dArgs& a);
}  // namespace ops

Var masked_conv2d(const Var& x, const Tensor& m, const Var& w, const Var& b /*undefined = no bias*/,
                  const Conv2dArgs& a);

}  // namespace kdet
