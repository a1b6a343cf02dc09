#include "distill/loss_fbkd.h"

#include <array>
#include <cmath>
#include <memory>

#include <omp.h>

#include "engine/backend.h"
#include "engine/gemm.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/pool2d.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"

namespace kdet::kd {

std::vector<NonLocalSpec> fbkd_default_nonlocal(size_t levels) {
  std::vector<NonLocalSpec> v;
  for (size_t i = 0; i < levels; ++i) v.push_back(i == 0 ? NonLocalSpec{64, 8} : i == 1 ? NonLocalSpec{64, 4}
                                                                                         : NonLocalSpec{128, 2});
  return v;
}

NonLocalBlock::NonLocalBlock(int64_t c, const NonLocalSpec& spec, double bn_eps) : spec_(spec) {
  KDET_CHECK(spec.inter >= 1 && spec.pool >= 1, "NonLocalBlock: inter channels ", spec.inter, " and pool ", spec.pool,
             " must be >= 1");
  theta_ = &register_module("theta", std::make_unique<Conv2d>(c, spec.inter, 1));
  phi_ = &register_module("phi", std::make_unique<Conv2d>(c, spec.inter, 1));
  g_ = &register_module("g", std::make_unique<Conv2d>(c, spec.inter, 1));
  W_ = &register_module("W", std::make_unique<Conv2d>(spec.inter, c, 1));
  bn_ = &register_module("bn", std::make_unique<BatchNorm2d>(c, bn_eps));
}

void NonLocalBlock::init_weights(Generator& g) {
  Module::init_weights(g);
  bn_->weight().data().fill_(0.0);
  bn_->bias().data().fill_(0.0);
}

namespace {

// Images in parallel (one thread each, single-threaded GEMMs: one fork/join per call, which matters on a
// loaded machine) when there are at least two and more threads; every per-image result is the same
// either way, so the output does not depend on the thread count.
bool images_in_parallel(int64_t N) { return N > 1 && !omp_in_parallel() && omp_get_max_threads() > 1; }

// Forward state of nonlocal_attention kept for the backward.
struct NlSaved {
  Tensor Y;    // [N, 3I, HW]: θ, φ' (before pooling), g' (before pooling)
  Tensor P;    // [N, 2I, M]: pooled φ, g
  Tensor idx;  // i64 [N, 2I, M]: argmax position (in H·W) of each pooled value
  Tensor A;    // [N, I, I] = g·φᵀ/M
};

// Max-pool of the k×k windows (stride k, floor) of rows [R, H·W] -> [R, M] + argmax, scanning each
// window row by row like torch's CPU kernel: a value replaces the maximum when it is larger or NaN (so
// the first maximum wins ties). Branch-free over the windows of one output row.
template <class T>
void pool_rows(const T* src, T* dst, int64_t* arg, int64_t R, int64_t H, int64_t W, int64_t k) {
  const int64_t Ho = H / k, Wo = W / k, M = Ho * Wo;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const T* row0 = src + r * H * W + oh * k * W;
      T* bv = dst + r * M + oh * Wo;
      int64_t* bi = arg + r * M + oh * Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) bv[ow] = row0[ow * k], bi[ow] = oh * k * W + ow * k;
      for (int64_t a = 0; a < k; ++a)
        for (int64_t b = a == 0 ? 1 : 0; b < k; ++b) {
          const T* q = row0 + a * W + b;
          const int64_t p0 = (oh * k + a) * W + b;
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const T v = q[ow * k];
            const bool take = v > bv[ow] || v != v;
            bv[ow] = take ? v : bv[ow];
            bi[ow] = take ? p0 + ow * k : bi[ow];
          }
        }
    }
}

// Stacked [θ; φ; g] weight [3I, C] and bias [3I] of the three 1×1 convs.
template <class T>
void stack_weights(const std::array<Tensor, 6>& wb, int64_t I, int64_t C, T* w, T* b) {
  for (int j = 0; j < 3; ++j) {
    const Tensor wc = wb[2 * j].contiguous(), bc = wb[2 * j + 1].contiguous();
    std::copy_n(wc.data<T>(), I * C, w + j * I * C);
    std::copy_n(bc.data<T>(), I, b + j * I);
  }
}

}  // namespace

Var nonlocal_attention(const Var& x, const Var& w_theta, const Var& b_theta, const Var& w_phi, const Var& b_phi,
                       const Var& w_g, const Var& b_g, int64_t pool) {
  KDET_CHECK(x.ndim() == 4, "kd_nonlocal_attention: expects an [N, C, H, W] input, got ", x.data().desc());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W, I = w_theta.size(0), k = pool;
  for (const Var* v : {&w_theta, &w_phi, &w_g})
    KDET_CHECK((v->shape() == Shape{I, C, 1, 1}) && v->dtype() == x.dtype(), "kd_nonlocal_attention: weight ",
               v->data().desc(), " must be [", I, ", ", C, ", 1, 1] of the input's dtype");
  for (const Var* v : {&b_theta, &b_phi, &b_g})
    KDET_CHECK(v->defined() && (v->shape() == Shape{I}) && v->dtype() == x.dtype(), "kd_nonlocal_attention: bias ",
               v->defined() ? v->data().desc() : std::string("(none)"), " must be [", I, "]");
  KDET_CHECK(k >= 1 && H >= k && W >= k, "NonLocalBlock: a ", H, "x", W, " feature map is smaller than the pool ", k);
  const int64_t M = (H / k) * (W / k);
  if (!x.device().is_cpu()) {
    if (!(KDET_CUDA && x.device().is_cuda())) no_kernel("kd_nonlocal_attention", x.device());
    // CUDA: the definition from device ops (1×1 convs on cuDNN, max pooling with the same first-maximum rule,
    // batched cuBLAS products); autograd gives every gradient. Same values as the fused CPU op to rounding.
    const Conv2dArgs one = Conv2dArgs::make(1, 0);
    Var theta = reshape(conv2d(x, w_theta, b_theta, one), {N, I, HW});
    Var phi = conv2d(x, w_phi, b_phi, one), g = conv2d(x, w_g, b_g, one);
    if (k > 1) phi = max_pool2d(phi, k, k, 0), g = max_pool2d(g, k, k, 0);
    Var A = matmul(reshape(g, {N, I, M}), transpose(reshape(phi, {N, I, M}), 1, 2)) * (1.0 / static_cast<double>(M));
    return reshape(matmul(A, theta), {N, I, H, W});
  }
  const std::array<Tensor, 6> wb = {w_theta.data(), b_theta.data(), w_phi.data(), b_phi.data(), w_g.data(), b_g.data()};
  const Tensor xc = x.data().contiguous();
  auto S = std::make_shared<NlSaved>();
  S->Y = Tensor::empty({N, 3 * I, HW}, x.dtype());
  S->P = Tensor::empty({N, 2 * I, M}, x.dtype());
  S->idx = Tensor::empty({N, 2 * I, M}, DType::I64);
  S->A = Tensor::empty({N, I, I}, x.dtype());
  Tensor y = Tensor::empty({N, I, H, W}, x.dtype());
  dispatch_float(x.dtype(), "kd_nonlocal_attention", [&](auto tag) {
    using T = decltype(tag);
    Tensor wct = Tensor::empty({3 * I, C}, x.dtype());
    std::vector<T> bcat(3 * I);
    T* wcat = wct.data<T>();
    stack_weights<T>(wb, I, C, wcat, bcat.data());
    // Images in parallel with single-threaded GEMMs (one fork/join) when there are enough of them;
    // otherwise in order with threaded GEMMs. Same results either way.
#pragma omp parallel for schedule(static) if (images_in_parallel(N))
    for (int64_t n = 0; n < N; ++n) {
      T* Y = S->Y.data<T>() + n * 3 * I * HW;
      T* P = S->P.data<T>() + n * 2 * I * M;
      T* A = S->A.data<T>() + n * I * I;
      for (int64_t r = 0; r < 3 * I; ++r) std::fill(Y + r * HW, Y + (r + 1) * HW, bcat[r]);
      gemm(false, false, 3 * I, HW, C, T(1), wcat, C, xc.data<T>() + n * C * HW, HW, T(1), Y, HW);
      if (k == 1) {
        std::copy_n(Y + I * HW, 2 * I * HW, P);
        int64_t* ip = S->idx.data<int64_t>() + n * 2 * I * M;
        for (int64_t r = 0; r < 2 * I; ++r)
          for (int64_t p = 0; p < HW; ++p) ip[r * M + p] = p;
      } else {
        pool_rows<T>(Y + I * HW, P, S->idx.data<int64_t>() + n * 2 * I * M, 2 * I, H, W, k);
      }
      const T* phi = P;
      const T* g = P + I * M;
      gemm(false, true, I, I, M, T(1) / static_cast<T>(M), g, M, phi, M, T(0), A, I);       // A = g·φᵀ/M
      gemm(false, false, I, HW, I, T(1), A, I, Y, HW, T(0), y.data<T>() + n * I * HW, HW);  // y = A·θ
    }
  });
  return record("kd_nonlocal_attention", y, {&x, &w_theta, &b_theta, &w_phi, &b_phi, &w_g, &b_g},
                [xc, wb, S, I, C, H, W, M](const Tensor& gy, Grads& gr) {
                  const int64_t N = xc.size(0), HW = H * W;
                  const Tensor gc = gy.contiguous();
                  Tensor gx = gr.wants(0) ? Tensor::empty(xc.shape(), xc.dtype()) : Tensor();
                  const bool want_w = gr.wants(1) || gr.wants(2) || gr.wants(3) || gr.wants(4) || gr.wants(5) ||
                                      gr.wants(6);
                  Tensor dw = Tensor::zeros({3 * I, C}, xc.dtype());
                  std::vector<double> db(3 * I, 0.0);
                  dispatch_float(xc.dtype(), "kd_nonlocal_attention backward", [&](auto tag) {
                    using T = decltype(tag);
                    const bool par = images_in_parallel(N);
                    const int nbuf = par ? omp_get_max_threads() : 1;
                    // scratch from the caching allocator (std::vectors this size are page-faulted per call);
                    // per-image weight/bias gradient partials, added in image order below
                    Tensor bufs[3] = {Tensor::empty({3 * I, C}, xc.dtype()), Tensor::empty({nbuf, 3 * I, HW}, xc.dtype()),
                                      Tensor::empty({N, 3 * I, C}, xc.dtype())};
                    T* wcat = bufs[0].data<T>();
                    std::vector<T> bcat(3 * I);
                    std::vector<double> dbn(N * 3 * I, 0.0);
                    stack_weights<T>(wb, I, C, wcat, bcat.data());
#pragma omp parallel for schedule(static) num_threads(nbuf) if (par)
                    for (int64_t n = 0; n < N; ++n) {
                      T* dY = bufs[1].data<T>() + (par ? omp_get_thread_num() : 0) * 3 * I * HW;
                      std::vector<T> dA(I * I), dP(2 * I * M);
                      const T* dy = gc.data<T>() + n * I * HW;
                      const T* Y = S->Y.data<T>() + n * 3 * I * HW;
                      const T* P = S->P.data<T>() + n * 2 * I * M;
                      const T* A = S->A.data<T>() + n * I * I;
                      const int64_t* ip = S->idx.data<int64_t>() + n * 2 * I * M;
                      gemm(true, false, I, HW, I, T(1), A, I, dy, HW, T(0), dY, HW);    // dθ = Aᵀ·dy
                      gemm(false, true, I, I, HW, T(1), dy, HW, Y, HW, T(0), dA.data(), I);    // dA = dy·θᵀ
                      const T invM = T(1) / static_cast<T>(M);
                      gemm(true, false, I, M, I, invM, dA.data(), I, P + I * M, M, T(0), dP.data(), M);  // dφ = dAᵀ·g/M
                      gemm(false, false, I, M, I, invM, dA.data(), I, P, M, T(0), dP.data() + I * M, M);  // dg = dA·φ/M
                      std::fill(dY + I * HW, dY + 3 * I * HW, T(0));
                      for (int64_t r = 0; r < 2 * I; ++r)  // pooled gradients to the argmax
                        for (int64_t m = 0; m < M; ++m) dY[(I + r) * HW + ip[r * M + m]] += dP[r * M + m];
                      if (want_w) {
                        gemm(false, true, 3 * I, C, HW, T(1), dY, HW, xc.data<T>() + n * C * HW, HW, T(0),
                             bufs[2].data<T>() + n * 3 * I * C, C);
                        for (int64_t r = 0; r < 3 * I; ++r) {
                          double acc = 0;
                          const T* d = dY + r * HW;
#pragma omp simd reduction(+ : acc)
                          for (int64_t p = 0; p < HW; ++p) acc += static_cast<double>(d[p]);
                          dbn[n * 3 * I + r] = acc;
                        }
                      }
                      if (gx.defined())
                        gemm(true, false, C, HW, 3 * I, T(1), wcat, C, dY, HW, T(0),
                             gx.data<T>() + n * C * HW, HW);
                    }
                    if (want_w) {
                      T* out = dw.data<T>();
                      for (int64_t n = 0; n < N; ++n) {
                        const T* src = bufs[2].data<T>() + n * 3 * I * C;
                        for (int64_t i = 0; i < 3 * I * C; ++i) out[i] += src[i];
                        for (int64_t r = 0; r < 3 * I; ++r) db[r] += dbn[n * 3 * I + r];
                      }
                    }
                  });
                  if (gx.defined()) gr.accumulate(0, gx);
                  const Tensor dbt = Tensor::from_vector(db).to(xc.dtype());
                  for (int j = 0; j < 3; ++j) {
                    if (gr.wants(1 + 2 * j))
                      gr.accumulate(1 + 2 * j, dw.slice(0, j * I, (j + 1) * I).contiguous().reshape({I, C, 1, 1}));
                    if (gr.wants(2 + 2 * j)) gr.accumulate(2 + 2 * j, dbt.slice(0, j * I, (j + 1) * I).contiguous());
                  }
                });
}

Var NonLocalBlock::forward(const Var& x) {
  Var y = nonlocal_attention(x, theta_->weight(), theta_->bias(), phi_->weight(), phi_->bias(), g_->weight(),
                             g_->bias(), spec_.pool);
  return x + bn_->forward(W_->forward(y));
}

FBKDLoss::FBKDLoss(int64_t c, const FBKDConfig& cfg) : cfg_(cfg), channels_(c) {
  KDET_CHECK(!cfg.nonlocal.empty(), "FBKDLoss: config has no levels (nonlocal is empty)");
  for (size_t i = 0; i < cfg.nonlocal.size(); ++i) {
    auto h = std::make_unique<LevelModule>();
    Level L;
    L.adaptation = &h->add("adaptation", std::make_unique<Conv2d>(c, c, 1));
    L.channel_adapt = &h->add("channel_adapt", std::make_unique<Linear>(c, c));
    L.spatial_adapt = &h->add("spatial_adapt", std::make_unique<Conv2d>(1, 1, 3, 1, 1));
    L.nl_adapt = &h->add("nl_adapt", std::make_unique<Conv2d>(c, c, 1));
    L.student_nl = &h->add("student_nl", std::make_unique<NonLocalBlock>(c, cfg.nonlocal[i], cfg.bn_eps));
    L.teacher_nl = &h->add("teacher_nl", std::make_unique<NonLocalBlock>(c, cfg.nonlocal[i], cfg.bn_eps));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

KdResult FBKDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, MidSink* mid) {
  return run(S, T, nullptr, mid);
}

KdResult FBKDLoss::forward_weighted(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor& w,
                                    MidSink* mid) {
  return run(S, T, &w, mid);
}

KdResult FBKDLoss::run(const std::vector<Var>& S, const std::vector<Tensor>& T, const Tensor* w, MidSink* mid) {
  check_levels("FBKDLoss", S, T, true);
  KDET_CHECK(S.size() == levels_.size(), "FBKDLoss: built for ", levels_.size(), " levels, got ", S.size());
  const int64_t N = S[0].size(0), C = channels_;
  KDET_CHECK(S[0].size(1) == C, "FBKDLoss: built for ", C, " channels, got ", S[0].data().desc());
  Var wv;
  if (w) {
    KDET_CHECK(w->ndim() == 1 && w->size(0) == N && w->dtype() == S[0].dtype(), "FBKDLoss: instance weights ",
               w->desc(), " must be [", N, "] of the features' dtype");
    wv = Var(*w);
  }
  const double r = cfg_.s_ratio;
  // sqrt(Σ m·(a − b)²): a 0-d root over the batch, or [N] per-image roots (AID).
  auto root = [&](const Var& a, const Var& b, const Tensor& m = Tensor(), const Tensor& m2 = Tensor()) -> Var {
    return safe_sqrt(sq_dist_sum(a, b, m, w != nullptr, m2));
  };
  auto contribution = [&](const Var& l) { return w ? sum(l * wv) : l; };
  Var acc[4];
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const int64_t H = T[i].size(2), W = T[i].size(3);
    const Var& s = S[i];
    const Var t(T[i]);
    // One pass over each feature map for its signed means (GAP, channel mean) and |·| means (attention).
    std::pair<Tensor, Tensor> s_abs, t_abs;
    auto [s_gap, s_chm] = signed_means(s, &s_abs);
    Tensor ms, mc, t_gap, t_chm;
    {
      NoGradGuard ng;
      auto [tg, tc] = signed_means(t, &t_abs);
      t_gap = tg.data(), t_chm = tc.data();
      const auto [ast, act] = attention_from_abs_means(t_abs, cfg_.temp_s, cfg_.temp_c);
      const auto [ass, acs] = attention_from_abs_means(s_abs, cfg_.temp_s, cfg_.temp_c);
      ms = ((Var(ast) + Var(ass) * r) / (1.0 + r)).data().reshape({N, 1, H, W});
      mc = ((Var(act) + Var(acs) * r) / (1.0 + r)).data().reshape({N, C, 1, 1});
    }
    Var fa = L.adaptation->forward(s);
    Var gap = L.channel_adapt->forward(s_gap);  // [N, C]
    Var spa = L.spatial_adapt->forward(s_chm);  // [N, 1, H, W]
    Var nl_s = L.student_nl->forward(s);
    Var nl_sa = L.nl_adapt->forward(nl_s);
    Var nl_t = L.teacher_nl->forward(t);
    Var l[4] = {root(fa, t, ms, cfg_.use_channel_mask ? mc : Tensor()), root(gap, Var(t_gap)), root(spa, Var(t_chm)),
                root(nl_sa, nl_t)};
    for (int k = 0; k < 4; ++k) {
      Var c = contribution(l[k]);
      acc[k] = acc[k].defined() ? acc[k] + c : c;
    }
    if (mid) {
      put_mid(mid, level_key(i, "mask_spatial"), ms);
      put_mid(mid, level_key(i, "mask_channel"), mc);
      put_mid(mid, level_key(i, "feat_adapt"), fa.data());
      put_mid(mid, level_key(i, "gap_adapt"), gap.data());
      put_mid(mid, level_key(i, "sp_adapt"), spa.data());
      put_mid(mid, level_key(i, "nl_s"), nl_s.data());
      put_mid(mid, level_key(i, "nl_s_adapt"), nl_sa.data());
      put_mid(mid, level_key(i, "nl_t"), nl_t.data());
      put_mid(mid, level_key(i, "l_feat"), l[0].data());
      put_mid(mid, level_key(i, "l_channel"), l[1].data());
      put_mid(mid, level_key(i, "l_spatial"), l[2].data());
      put_mid(mid, level_key(i, "l_nonlocal"), l[3].data());
    }
  }
  KdResult res;
  const char* names[4] = {"kd_feat_loss", "kd_channel_loss", "kd_spatial_loss", "kd_nonlocal_loss"};
  const double wts[4] = {cfg_.w_feat, cfg_.w_channel, cfg_.w_spatial, cfg_.w_nonlocal};
  for (int k = 0; k < 4; ++k) {
    Var v = acc[k] * wts[k];
    res.terms[names[k]] = v;
    res.loss = res.loss.defined() ? res.loss + v : v;
  }
  return res;
}

}  // namespace kdet::kd
