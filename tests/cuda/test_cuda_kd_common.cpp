// tests/cuda/test_cuda_kd_common.cpp — the fused KD ops of distill/kd_common.h on CUDA (distill/kd_common_cuda.cu)
// against their CPU kernels ([cuda] tests, issue 5).
//
// abs_mean_channels / abs_mean_spatial / abs_means / signed_means (+ abs_out) / attention_maps /
// spatial_attention / channel_attention / sq_dist_sum (no weight, a full weight, [N,1,H,W] × [N,C,1,1] weights,
// per image or total), and SSIM-KD's minmax_normalize / ssim_map / ssim_loss (distill/loss_ssim_cuda.cu; the
// Gaussian filter is cuDNN's depthwise conv there, a separable row/column pass on the CPU: f32 tolerance 1e-4),
// FBKD's nonlocal_attention (the definition from device ops on CUDA) and the FBKD, FGD, AMD, DMKD and AID loss
// modules end to end (f64, every term, the student's gradient and every parameter gradient),
// f32 and f64: outputs and the gradients of Σ out ⊙ r with respect to every input. Both
// devices sum in double in different fixed orders: tolerances 1e-5 (f32) / 1e-12 (f64) relative to the largest
// reference magnitude. Repeated GPU runs must be bit-identical. Without a GPU each case reports
// "no CUDA device: skipped (...)" and returns; without the backend this file has no cases.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "distill/kd_common.h"
#include "distill/loss_aid.h"
#include "distill/loss_amd.h"
#include "distill/loss_dmkd.h"
#include "distill/loss_fbkd.h"
#include "distill/loss_fgd.h"
#include "distill/loss_ssim.h"
#include "engine/functional.h"
#include "engine/random.h"
#include "tests/gradcheck.h"

#if KDET_CUDA
#include "tests/cuda/cuda_test_util.h"

using namespace kdet;
using namespace kdet::test;

namespace {

double rel_for(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-12; }

// Every parameter gradient of a module on the GPU against the CPU's. The absolute tolerance is rel times the
// largest gradient of any parameter: a parameter whose exact gradient is 0 (a bias in front of a shift-invariant
// softmax or min-max normalisation) holds only round-off on both devices, which no relative test can match.
void check_param_grads(const std::vector<std::pair<std::string, Var>>& pg,
                       const std::vector<std::pair<std::string, Var>>& pc, double rel, const std::string& what) {
  REQUIRE(pc.size() == pg.size());
  double scale = 1e-30;
  for (const auto& [name, p] : pc)
    if (p.grad().defined()) scale = std::max(scale, max_abs(p.grad()));
  for (size_t i = 0; i < pc.size(); ++i) {
    REQUIRE_MESSAGE(pg[i].second.grad().defined() == pc[i].second.grad().defined(), what << pc[i].first);
    if (!pc[i].second.grad().defined()) continue;
    CHECK_MESSAGE(pg[i].second.grad().device() == kGpu, what << pc[i].first << ": gradient on the CPU");
    check_close(pg[i].second.grad(), pc[i].second.grad(), rel, rel * scale, what + pc[i].first);
  }
}

// fn on CPU Vars and on CUDA copies; compares the outputs and the gradients of Σ_k Σ out_k ⊙ r_k for the inputs
// flagged in grad. Also runs the GPU side twice: bit-identical outputs and gradients.
void compare(const std::string& what, const std::function<std::vector<Var>(const std::vector<Var>&)>& fn,
             const std::vector<Tensor>& inputs, const std::vector<bool>& grad, DType dt, double rel = 0) {
  if (rel == 0) rel = rel_for(dt);
  auto run = [&](Device d, std::vector<Tensor>& outs, std::vector<Tensor>& grads) {
    std::vector<Var> vs;
    for (size_t i = 0; i < inputs.size(); ++i) vs.emplace_back(inputs[i].to(d), static_cast<bool>(grad[i]));
    std::vector<Var> ys = fn(vs);
    Var total;
    for (size_t k = 0; k < ys.size(); ++k) {
      outs.push_back(ys[k].data());
      Generator g(50 + k);
      const Tensor r = rand_uniform(ys[k].shape(), g, -1.0, 1.0, dt).to(d);
      Var t = sum(ys[k] * Var(r));
      total = total.defined() ? total + t : t;
    }
    total.backward();
    for (size_t i = 0; i < vs.size(); ++i) grads.push_back(grad[i] ? vs[i].grad() : Tensor());
  };
  std::vector<Tensor> oc, gc, og, gg, og2, gg2;
  run(Device::cpu(), oc, gc);
  run(kGpu, og, gg);
  run(kGpu, og2, gg2);
  for (size_t k = 0; k < oc.size(); ++k) {
    check_vs_cpu(og[k], oc[k], rel, what + ": output " + std::to_string(k));
    CHECK_MESSAGE(bitwise_equal(og[k], og2[k]), what << ": output " << k << " differs run to run");
  }
  for (size_t i = 0; i < gc.size(); ++i) {
    if (!grad[i]) continue;
    REQUIRE_MESSAGE(gg[i].defined(), what << ": no CUDA gradient for input " << i);
    check_vs_cpu(gg[i], gc[i], rel, what + ": gradient of input " + std::to_string(i));
    CHECK_MESSAGE(bitwise_equal(gg[i], gg2[i]), what << ": gradient " << i << " differs run to run");
  }
}

}  // namespace

TEST_CASE("[cuda] kd_common fused means: abs_mean_channels / spatial, abs_means, signed_means, attention maps") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string ds = dt == DType::F32 ? " f32" : " f64";
    Generator g(1);
    Tensor f = rand_normal({2, 37, 9, 13}, g, 0, 1, dt);  // C not a multiple of the CPU's channel blocks
    // Exact zeros: sign(0) = 0 in the |f| backward on both devices.
    {
      auto v = f.to_vector<double>();
      for (size_t i = 0; i < v.size(); i += 17) v[i] = 0.0;
      f = Tensor::from_vector(v, f.shape()).to(dt);
    }
    compare("abs_mean_channels" + ds, [](const V& v) { return V{kd::abs_mean_channels(v[0])}; }, {f}, {true}, dt);
    compare("abs_mean_spatial" + ds, [](const V& v) { return V{kd::abs_mean_spatial(v[0])}; }, {f}, {true}, dt);
    compare(
        "signed_means" + ds,
        [](const V& v) {
          auto [c, s] = kd::signed_means(v[0]);
          return V{c, s};
        },
        {f}, {true}, dt);
    compare("spatial / channel attention" + ds,
            [](const V& v) { return V{kd::spatial_attention(v[0], 0.5), kd::channel_attention(v[0], 0.7)}; }, {f},
            {true}, dt);
    // The constant forms, and signed_means' abs_out: the same values as the differentiable ops on each device.
    const Tensor fg = f.to(kGpu);
    const auto mc = kd::abs_means(f), mg = kd::abs_means(fg);
    check_vs_cpu(mg.first, mc.first, rel_for(dt), "abs_means sp" + ds);
    check_vs_cpu(mg.second, mc.second, rel_for(dt), "abs_means ch" + ds);
    CHECK(bitwise_equal(mg.first, kd::abs_mean_channels(Var(fg)).data()));
    CHECK(bitwise_equal(mg.second, kd::abs_mean_spatial(Var(fg)).data()));
    std::pair<Tensor, Tensor> ab;
    kd::signed_means(Var(fg), &ab);
    CHECK(bitwise_equal(ab.first, mg.first));
    CHECK(bitwise_equal(ab.second, mg.second));
    const auto ac = kd::attention_maps(f, 0.5, 0.7), ag = kd::attention_maps(fg, 0.5, 0.7);
    check_vs_cpu(ag.first, ac.first, 10 * rel_for(dt), "attention_maps spatial" + ds);
    check_vs_cpu(ag.second, ac.second, 10 * rel_for(dt), "attention_maps channel" + ds);
  }
}

TEST_CASE("[cuda] kd_common sq_dist_sum: weights, per image, both gradients") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string ds = dt == DType::F32 ? " f32" : " f64";
    Generator g(2);
    const Tensor a = rand_normal({3, 5, 7, 6}, g, 0, 1, dt), b = rand_normal({3, 5, 7, 6}, g, 0, 1, dt);
    const Tensor wfull = rand_uniform({3, 5, 7, 6}, g, 0, 2, dt);
    const Tensor wsp = rand_uniform({3, 1, 7, 6}, g, 0, 2, dt), wch = rand_uniform({3, 5, 1, 1}, g, 0, 2, dt);
    for (bool per_image : {false, true}) {
      const std::string pi = per_image ? " per image" : " total";
      compare("sq_dist_sum" + pi + ds, [per_image](const V& v) { return V{kd::sq_dist_sum(v[0], v[1], Tensor(), per_image)}; },
              {a, b}, {true, true}, dt);
      compare(
          "sq_dist_sum full weight" + pi + ds,
          [per_image, wfull](const V& v) {
            return V{kd::sq_dist_sum(v[0], v[1], wfull.to(v[0].device()), per_image)};
          },
          {a, b}, {true, true}, dt);
      compare(
          "sq_dist_sum spatial x channel weights" + pi + ds,
          [per_image, wsp, wch](const V& v) {
            return V{kd::sq_dist_sum(v[0], v[1], wsp.to(v[0].device()), per_image, wch.to(v[0].device()))};
          },
          {a, b}, {true, true}, dt);
    }
    // One side constant (the teacher): only the student's gradient.
    compare("sq_dist_sum, b constant" + ds, [](const V& v) { return V{kd::sq_dist_sum(v[0], v[1])}; }, {a, b},
            {true, false}, dt);
    // 2-D operands (no channel weights allowed; L = row length).
    const Tensor a2 = rand_normal({4, 11}, g, 0, 1, dt), b2 = rand_normal({4, 11}, g, 0, 1, dt);
    compare("sq_dist_sum 2-D" + ds, [](const V& v) { return V{kd::sq_dist_sum(v[0], v[1], Tensor(), true)}; },
            {a2, b2}, {true, true}, dt);
  }
}

TEST_CASE("[cuda] kd_common: a large map (many blocks) matches the CPU") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  Generator g(3);
  const Tensor f = rand_normal({2, 256, 64, 64}, g), t = rand_normal({2, 256, 64, 64}, g);
  compare(
      "signed_means 2x256x64x64",
      [](const V& v) {
        auto [c, s] = kd::signed_means(v[0]);
        return V{c, s};
      },
      {f}, {true}, DType::F32);
  compare("sq_dist_sum 2x256x64x64", [](const V& v) { return V{kd::sq_dist_sum(v[0], v[1], Tensor(), true)}; },
          {f, t}, {true, true}, DType::F32);
}

TEST_CASE("[cuda] SSIM-KD: minmax_normalize (ties included), ssim_map, ssim_loss, the SSIM-KD loss module") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  const std::vector<double> win = kd::gaussian_kernel_1d(11, 1.5);
  const double C1 = 1e-4, C2 = 9e-4;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string ds = dt == DType::F32 ? " f32" : " f64";
    const double rel = dt == DType::F32 ? 1e-4 : 1e-10;
    Generator g(4);
    // Quantised values: several elements share each plane's min and max (the tie-splitting gradient rule).
    Tensor q = rand_uniform({2, 3, 9, 10}, g, 0, 8, dt);
    {
      auto v = q.to_vector<double>();
      for (auto& e : v) e = std::floor(e) * 0.25;
      q = Tensor::from_vector(v, q.shape()).to(dt);
    }
    compare("minmax_normalize with ties" + ds, [](const V& v) { return V{kd::minmax_normalize(v[0], 1e-6)}; }, {q},
            {true}, dt, rel);
    const Tensor x = rand_uniform({2, 3, 16, 13}, g, 0, 1, dt), y = rand_uniform({2, 3, 16, 13}, g, 0, 1, dt);
    compare(
        "ssim_map" + ds, [&](const V& v) { return V{kd::ssim_map(v[0], v[1], win, C1, C2)}; }, {x, y}, {true, false},
        dt, rel);
    compare(
        "ssim_loss" + ds, [&](const V& v) { return V{kd::ssim_loss(v[0], v[1].data(), win, C1, C2)}; }, {x, y},
        {true, false}, dt, rel);
    // A level smaller than the window (5x4 with an 11-tap window).
    const Tensor xs = rand_uniform({1, 2, 5, 4}, g, 0, 1, dt), ys = rand_uniform({1, 2, 5, 4}, g, 0, 1, dt);
    compare(
        "ssim_loss on a 5x4 level" + ds,
        [&](const V& v) { return V{kd::ssim_loss(kd::minmax_normalize(v[0], 1e-12), v[1].data(), win, C1, C2)}; },
        {xs, ys}, {true, false}, dt, rel);
  }
  // The loss module end to end (adapter conv on cuDNN, min-max, SSIM): loss and parameter gradients.
  kd::SSIMKDLoss mc({{4, 6}}, kd::SSIMConfig{}), mg({{4, 6}}, kd::SSIMConfig{});
  Generator g(9);
  for (auto& [name, p] : mc.named_parameters("", true)) p.data().copy_(rand_normal(p.shape(), g, 0, 0.2, p.dtype()));
  mg.load_state_dict(mc.state_dict());
  mg.to(kGpu);
  const Tensor s = rand_normal({2, 4, 12, 12}, g), t = rand_normal({2, 6, 12, 12}, g);
  Var sc(s, true), sg(s.to(kGpu), true);
  const kd::KdResult rc = mc.forward({sc}, {t}), rg = mg.forward({sg}, {t.to(kGpu)});
  check_vs_cpu(rg.loss.data(), rc.loss.data(), 1e-4, "SSIMKDLoss loss");
  rc.loss.backward();
  rg.loss.backward();
  check_vs_cpu(sg.grad(), sc.grad(), 1e-4, "SSIMKDLoss d student");
  check_param_grads(mg.named_parameters("", true), mc.named_parameters("", true), 1e-4, "d ");
}

TEST_CASE("[cuda] FBKD: nonlocal_attention (pool 1, 2, 3) and the FBKD loss module match the CPU") {
  KDET_REQUIRE_GPU();
  using V = std::vector<Var>;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string ds = dt == DType::F32 ? " f32" : " f64";
    const double rel = dt == DType::F32 ? 1e-4 : 1e-10;
    Generator g(6);
    const int64_t C = 8, I = 4;
    const Tensor x = rand_normal({2, C, 9, 8}, g, 0, 1, dt);
    std::vector<Tensor> in = {x};
    for (int j = 0; j < 3; ++j) {
      in.push_back(rand_normal({I, C, 1, 1}, g, 0, 0.3, dt));
      in.push_back(rand_normal({I}, g, 0, 0.3, dt));
    }
    for (int64_t pool : {1, 2, 3})
      compare(
          "nonlocal_attention pool " + std::to_string(pool) + ds,
          [pool](const V& v) { return V{kd::nonlocal_attention(v[0], v[1], v[2], v[3], v[4], v[5], v[6], pool)}; }, in,
          std::vector<bool>(7, true), dt, rel);
  }
  // The whole FBKD loss (signed means, attention masks, adapters, non-local blocks, safe square roots of
  // sq_dist_sum) in f64: the loss, the student's gradient and every parameter gradient.
  kd::FBKDConfig cfg;
  cfg.nonlocal = {{4, 2}};
  cfg.use_channel_mask = true;
  kd::FBKDLoss mc(8, cfg), mg(8, cfg);
  Generator g(8);
  for (auto& [name, p] : mc.named_parameters("", true)) p.data().copy_(rand_normal(p.shape(), g, 0, 0.3, p.dtype()));
  mg.load_state_dict(mc.state_dict());
  mc.to(DType::F64);
  mg.to(DType::F64);
  mg.to(kGpu);
  const Tensor s = rand_normal({2, 8, 10, 12}, g, 0, 1, DType::F64), t = rand_normal({2, 8, 10, 12}, g, 0, 1, DType::F64);
  Var sc(s, true), sg(s.to(kGpu), true);
  const kd::KdResult rc = mc.forward({sc}, {t}), rg = mg.forward({sg}, {t.to(kGpu)});
  for (const auto& [k, v] : rc.terms) {
    REQUIRE_MESSAGE(rg.terms.count(k), "FBKD term " << k << " missing on CUDA");
    check_vs_cpu(rg.terms.at(k).data(), v.data(), 1e-9, "FBKD " + k);
  }
  rc.loss.backward();
  rg.loss.backward();
  check_vs_cpu(sg.grad(), sc.grad(), 1e-9, "FBKD d student");
  check_param_grads(mg.named_parameters("", true), mc.named_parameters("", true), 1e-9, "FBKD d ");
}

namespace {

// A KD loss module on the CPU and a copy of it on the GPU (same parameters, f64): every term, the student's
// gradient and every parameter gradient agree. run(module, student Var, teacher tensors' device) -> KdResult.
template <class M>
void compare_module(const std::string& what, M& mc, M& mg, const Tensor& s,
                    const std::function<kd::KdResult(M&, const Var&, Device)>& run) {
  Generator g(21);
  for (auto& [name, p] : mc.named_parameters("", true)) p.data().copy_(rand_normal(p.shape(), g, 0, 0.3, p.dtype()));
  mg.load_state_dict(mc.state_dict());
  mc.to(DType::F64);
  mg.to(DType::F64);
  mg.to(kGpu);
  Var sc(s, true), sg(s.to(kGpu), true);
  const kd::KdResult rc = run(mc, sc, Device::cpu()), rg = run(mg, sg, kGpu);
  for (const auto& [k, v] : rc.terms) {
    REQUIRE_MESSAGE(rg.terms.count(k), what << ": term " << k << " missing on CUDA");
    check_vs_cpu(rg.terms.at(k).data(), v.data(), 1e-9, what + " " + k);
  }
  rc.loss.backward();
  rg.loss.backward();
  check_vs_cpu(sg.grad(), sc.grad(), 1e-9, what + " d student");
  check_param_grads(mg.named_parameters("", true), mc.named_parameters("", true), 1e-9, what + " d ");
}

}  // namespace

TEST_CASE("[cuda] FGD, AMD, DMKD and AID loss modules on CUDA match the CPU (f64)") {
  KDET_REQUIRE_GPU();
  Generator g(22);
  const Tensor s = rand_normal({2, 4, 10, 12}, g, 0, 1, DType::F64), t = rand_normal({2, 6, 10, 12}, g, 0, 1, DType::F64);
  const Tensor t8 = rand_normal({2, 4, 10, 12}, g, 0, 1, DType::F64);
  {
    kd::FGDLoss mc({{4, 6}}, kd::FGDConfig{}), mg({{4, 6}}, kd::FGDConfig{});
    const std::vector<Tensor> boxes = {Tensor::from_vector(std::vector<double>{8, 6, 40, 30, 50, 40, 90, 78}, {2, 4}),
                                       Tensor::zeros({0, 4}, DType::F64)};  // the second image has no boxes
    const Tensor ref_hw = Tensor::from_vector(std::vector<double>{80, 96, 80, 96}, {2, 2});
    compare_module<kd::FGDLoss>("FGD", mc, mg, s, [&](kd::FGDLoss& m, const Var& sv, Device d) {
      return m.forward({sv}, {t.to(d)}, boxes, ref_hw);
    });
  }
  {
    kd::AMDLoss mc({{4, 6}}, kd::AMDConfig{}), mg({{4, 6}}, kd::AMDConfig{});
    compare_module<kd::AMDLoss>("AMD", mc, mg, s,
                                [&](kd::AMDLoss& m, const Var& sv, Device d) { return m.forward({sv}, {t.to(d)}); });
  }
  {
    kd::DMKDLoss mc({{4, 6}}, kd::DMKDConfig{}), mg({{4, 6}}, kd::DMKDConfig{});
    compare_module<kd::DMKDLoss>("DMKD", mc, mg, s,
                                 [&](kd::DMKDLoss& m, const Var& sv, Device d) { return m.forward({sv}, {t.to(d)}); });
  }
  {
    kd::AIDConfig cfg;
    cfg.fbkd.nonlocal = {{2, 2}};
    kd::AIDLoss mc(4, cfg), mg(4, cfg);
    const Tensor tl = Tensor::from_vector(std::vector<double>{0.7, 2.5}, {2});
    compare_module<kd::AIDLoss>("AID", mc, mg, s, [&](kd::AIDLoss& m, const Var& sv, Device d) {
      return m.forward({sv}, {t8.to(d)}, tl.to(d));
    });
  }
}

#endif  // KDET_CUDA
