#include "distill/loss_fgd.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "engine/ops/unary.h"
#include "layers/init.h"

namespace kdet::kd {

std::pair<Tensor, Tensor> fgd_masks(const std::vector<Tensor>& boxes, const Tensor& ref_hw, int64_t H, int64_t W) {
  const int64_t N = static_cast<int64_t>(boxes.size());
  KDET_CHECK(ref_hw.ndim() == 2 && ref_hw.size(0) == N && ref_hw.size(1) == 2, "fgd_masks: ref_hw ", ref_hw.desc(),
             " must be [", N, ", 2] for ", N, " images");
  KDET_CHECK(H > 0 && W > 0, "fgd_masks: empty grid ", H, "x", W);
  const std::vector<double> ref = ref_hw.to_vector<double>();
  Tensor fg = Tensor::zeros({N, H, W}, DType::F64);
  Tensor bg = Tensor::zeros({N, H, W}, DType::F64);
  double* pf = fg.data<double>();
  double* pb = bg.data<double>();
  for (int64_t i = 0; i < N; ++i) {
    const Tensor& b = boxes[i];
    KDET_CHECK(b.ndim() == 2 && b.size(1) == 4, "fgd_masks: boxes of image ", i, " must be [n, 4], got ", b.desc());
    const double h_ref = ref[2 * i], w_ref = ref[2 * i + 1];
    KDET_CHECK(h_ref > 0 && w_ref > 0, "fgd_masks: image ", i, " has ref_hw (", h_ref, ", ", w_ref, ")");
    const std::vector<double> bv = b.to_vector<double>();
    double* f = pf + i * H * W;
    for (int64_t j = 0; j < b.size(0); ++j) {
      const double x1 = bv[4 * j], y1 = bv[4 * j + 1], x2 = bv[4 * j + 2], y2 = bv[4 * j + 3];
      const int64_t wmin = static_cast<int64_t>(std::floor((x1 / w_ref) * static_cast<double>(W)));
      const int64_t wmax = static_cast<int64_t>(std::ceil((x2 / w_ref) * static_cast<double>(W)));
      const int64_t hmin = static_cast<int64_t>(std::floor((y1 / h_ref) * static_cast<double>(H)));
      const int64_t hmax = static_cast<int64_t>(std::ceil((y2 / h_ref) * static_cast<double>(H)));
      const double area = 1.0 / static_cast<double>((hmax - hmin + 1) * (wmax - wmin + 1));
      for (int64_t r = std::max<int64_t>(hmin, 0); r <= std::min(hmax, H - 1); ++r)
        for (int64_t c = std::max<int64_t>(wmin, 0); c <= std::min(wmax, W - 1); ++c)
          f[r * W + c] = std::max(f[r * W + c], area);
    }
    double* g = pb + i * H * W;
    int64_t cnt = 0;
    for (int64_t k = 0; k < H * W; ++k)
      if (f[k] == 0.0) {
        g[k] = 1.0;
        ++cnt;
      }
    if (cnt > 0)
      for (int64_t k = 0; k < H * W; ++k) g[k] /= static_cast<double>(cnt);
  }
  return {fg, bg};
}

GcBlock::GcBlock(int64_t c, double ln_eps) {
  KDET_CHECK(c >= 2, "GcBlock: needs at least 2 channels, got ", c);
  const int64_t h = c / 2;
  conv_mask_ = &register_module("conv_mask", std::make_unique<Conv2d>(c, 1, 1));
  auto seq = std::make_unique<Sequential>();
  seq->emplace_back<Conv2d>(c, h, 1);
  seq->emplace_back<LayerNorm>(Shape{h, 1, 1}, ln_eps);
  seq->emplace_back<ReLU>();
  seq->emplace_back<Conv2d>(h, c, 1);
  channel_add_ = &register_module("channel_add", std::move(seq));
}

void GcBlock::init_weights(Generator& g) {
  kaiming_normal_(conv_mask_->weight().data(), g, 0.0, FanMode::FanIn, Nonlinearity::ReLU);
  conv_mask_->bias().data().fill_(0.0);
  (*channel_add_)[0].init_weights(g);
  (*channel_add_)[1].init_weights(g);
  auto& last = static_cast<Conv2d&>((*channel_add_)[3]);
  last.weight().data().fill_(0.0);
  last.bias().data().fill_(0.0);
}

Var GcBlock::forward(const Var& x, Var* ctx_out) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  Var a = conv_mask_->forward(x);                              // [N, 1, H, W]
  Var p = softmax(reshape(a, {N, 1, HW}), 2);                   // [N, 1, HW]
  Var ctx = matmul(reshape(x, {N, C, HW}), reshape(p, {N, HW, 1}));  // [N, C, 1]
  if (ctx_out) *ctx_out = reshape(ctx, {N, C});
  Var phi = channel_add_->forward(reshape(ctx, {N, C, 1, 1}));  // [N, C, 1, 1]
  return x + phi;
}

FGDLoss::FGDLoss(const std::vector<std::pair<int64_t, int64_t>>& channels, const FGDConfig& cfg) : cfg_(cfg) {
  KDET_CHECK(!channels.empty(), "FGDLoss: no levels");
  for (size_t i = 0; i < channels.size(); ++i) {
    Level L;
    auto h = std::make_unique<LevelModule>();
    if (channels[i].first != channels[i].second)
      L.align = &h->add("align", make_align(channels[i].first, channels[i].second));
    L.gc_s = &h->add("gc_s", std::make_unique<GcBlock>(channels[i].second, cfg.ln_eps));
    L.gc_t = &h->add("gc_t", std::make_unique<GcBlock>(channels[i].second, cfg.ln_eps));
    register_module("level" + std::to_string(i), std::move(h));
    levels_.push_back(L);
  }
}

KdResult FGDLoss::forward(const std::vector<Var>& S, const std::vector<Tensor>& T, const std::vector<Tensor>& boxes,
                          const Tensor& ref_hw, MidSink* mid) {
  check_levels("FGDLoss", S, T, false);
  KDET_CHECK(S.size() == levels_.size(), "FGDLoss: built for ", levels_.size(), " levels, got ", S.size());
  const int64_t N = S[0].size(0);
  KDET_CHECK(static_cast<int64_t>(boxes.size()) == N, "FGDLoss: ", boxes.size(), " box lists for a batch of ", N);
  const double tau = cfg_.temp;
  const double invN = 1.0 / static_cast<double>(N);
  KdResult r;
  for (size_t i = 0; i < S.size(); ++i) {
    const Level& L = levels_[i];
    const int64_t C = T[i].size(1), H = T[i].size(2), W = T[i].size(3);
    KDET_CHECK((S[i].size(1) == C) == (L.align == nullptr), "FGDLoss: level ", i, " was built for other channels (",
               S[i].data().desc(), " vs teacher ", T[i].desc(), ")");
    Var s = L.align ? L.align->forward(S[i]) : S[i];
    Var t(T[i]);
    const auto [as_t, ac_t] = attention_maps(T[i], tau, tau);
    Var as_s = spatial_attention(s, tau), ac_s = channel_attention(s, tau);
    auto [fg64, bg64] = fgd_masks(boxes, ref_hw, H, W);
    const Tensor fg = fg64.to(s.dtype()).to(s.device()), bg = bg64.to(s.dtype()).to(s.device());  // built on the host
    // Σ (s − t)²·A^S_t·A^C_t·mask, the weight as a spatial [N,1,H,W] × channel [N,C,1,1] pair
    const Tensor ac4 = ac_t.reshape({N, C, 1, 1});
    Var fg_loss = sq_dist_sum(s, t, ops::mul(as_t, fg).reshape({N, 1, H, W}), false, ac4) * invN;
    Var bg_loss = sq_dist_sum(s, t, ops::mul(as_t, bg).reshape({N, 1, H, W}), false, ac4) * invN;
    Var mask_loss = sum(abs(ac_s - Var(ac_t))) * invN + sum(abs(as_s - Var(as_t))) * invN;
    Var ctx_s, ctx_t;
    Var out_s = L.gc_s->forward(s, &ctx_s);
    Var out_t = L.gc_t->forward(t, &ctx_t);
    Var rela_loss = sq_dist_sum(out_s, out_t) * invN;
    Var li = fg_loss * cfg_.alpha_fgd + bg_loss * cfg_.beta_fgd + mask_loss * cfg_.gamma_fgd +
             rela_loss * cfg_.lambda_fgd;
    const std::pair<const char*, Var*> comps[] = {
        {"fg_loss", &fg_loss}, {"bg_loss", &bg_loss}, {"mask_loss", &mask_loss}, {"rela_loss", &rela_loss}};
    for (auto& [name, v] : comps) {
      r.terms[level_key(i, name)] = *v;
      r.accumulate(name, *v);
    }
    r.terms[level_key(i, "loss")] = li;
    r.loss = r.loss.defined() ? r.loss + li : li;
    if (mid) {
      put_mid(mid, level_key(i, "s_aligned"), s.data());
      put_mid(mid, level_key(i, "mask_fg"), fg);
      put_mid(mid, level_key(i, "mask_bg"), bg);
      put_mid(mid, level_key(i, "att_spatial_t"), as_t);
      put_mid(mid, level_key(i, "att_channel_t"), ac_t);
      put_mid(mid, level_key(i, "att_spatial_s"), as_s.data());
      put_mid(mid, level_key(i, "att_channel_s"), ac_s.data());
      put_mid(mid, level_key(i, "gc_ctx_s"), ctx_s.data());
      put_mid(mid, level_key(i, "gc_ctx_t"), ctx_t.data());
      put_mid(mid, level_key(i, "gc_out_s"), out_s.data());
      put_mid(mid, level_key(i, "gc_out_t"), out_t.data());
    }
  }
  return r;
}

}  // namespace kdet::kd
