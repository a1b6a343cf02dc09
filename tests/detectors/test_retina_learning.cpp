// Learning check (skipped by default; minutes of CPU): a small RetinaNet trained from scratch on the
// synthetic shapes set (data/synth.h), then COCO-evaluated on a held-out synthetic set.
//   build/kdet_tests -tc="det learning*" --no-skip
// Environment: KDET_LEARN_ITERS (5000), KDET_LEARN_SIZE (128), KDET_LEARN_BASE (16), KDET_LEARN_WIDTH (32),
// KDET_LEARN_LR (0.01), KDET_LEARN_OBS (octave_base_scale, 4). Batch 4, SGD momentum 0.9, wd 1e-4,
// linear warmup 100 iterations, lr x0.1 for the last quarter, grad clip 35, flip every other image.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "data/coco_eval.h"
#include "data/synth.h"
#include "data/transforms.h"
#include "detectors/results.h"
#include "detectors/retinanet.h"
#include "engine/optim.h"

using namespace kdet;

namespace {
double env_or(const char* k, double d) {
  const char* v = std::getenv(k);
  return v ? std::atof(v) : d;
}
}  // namespace

TEST_CASE("det learning: small RetinaNet on the synthetic set reaches a non-trivial mAP" * doctest::skip(true)) {
  const int iters = static_cast<int>(env_or("KDET_LEARN_ITERS", 5000));
  const int size = static_cast<int>(env_or("KDET_LEARN_SIZE", 128));
  data::SynthConfig sc;
  sc.images = 400, sc.size = size, sc.seed = 1, sc.max_objects = 5;
  std::vector<data::Image> px, vpx;
  data::Dataset ds = data::synth_dataset(sc, &px);
  data::SynthConfig vc = sc;
  vc.images = 100, vc.seed = 2;
  data::Dataset vs = data::synth_dataset(vc, &vpx);
  RetinaNetConfig cfg = RetinaNetConfig::small(18, static_cast<int64_t>(env_or("KDET_LEARN_BASE", 16)),
                                               static_cast<int64_t>(env_or("KDET_LEARN_WIDTH", 32)), 2,
                                               ds.num_classes());
  cfg.backbone.frozen_stages = -1;
  cfg.backbone.norm_eval = false;  // from scratch: BN trains
  cfg.head.anchors.octave_base_scale = env_or("KDET_LEARN_OBS", 4.0);
  RetinaNet model(cfg);
  Generator g(0);
  model.init_weights(g);
  model.train();
  data::TransformConfig tc;
  tc.scale_long = tc.scale_short = size;
  SGD opt(model.named_parameters("", true), env_or("KDET_LEARN_LR", 0.01), 0.9, 1e-4);
  auto t0 = std::chrono::steady_clock::now();
  int it = 0;
  for (int epoch = 0; it < iters; ++epoch) {
    for (size_t i = 0; i + 4 <= px.size() && it < iters; i += 4, ++it) {
      std::vector<data::PreparedImage> items;
      for (size_t k = i; k < i + 4; ++k) {
        const size_t idx = (k * 7919 + epoch * 131) % px.size();
        items.push_back(data::prepare_image(px[idx], ds.images[idx].anns, tc, (k + epoch) % 2));
      }
      data::Batch b = data::collate(std::move(items));
      double scale = it < 100 ? 0.001 + 0.999 * it / 100.0 : 1.0;
      if (it >= iters * 3 / 4) scale *= 0.1;
      opt.set_lr_scale(scale);
      LossList l = model.loss(b);
      Var tot = total_loss(l);
      opt.zero_grad();
      tot.backward();
      clip_grad_norm(opt.params(), 35.0);
      opt.step();
      if (it % 500 == 0) MESSAGE("it " << it << " loss_cls " << l[0].second.item() << " loss_bbox " << l[1].second.item());
    }
  }
  const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  model.eval();
  std::vector<data::Detection> res;
  for (size_t i = 0; i < vpx.size(); i += 4) {
    std::vector<data::PreparedImage> items;
    for (size_t k = i; k < std::min(i + 4, vpx.size()); ++k) {
      items.push_back(data::prepare_image(vpx[k], vs.images[k].anns, tc, false));
      items.back().meta.image_id = vs.images[k].id;
    }
    data::Batch b = data::collate(std::move(items));
    auto r = to_coco_results(vs, b, model.predict(b));
    res.insert(res.end(), r.begin(), r.end());
  }
  auto m = data::coco_evaluate(vs, res);
  MESSAGE("train " << train_s << " s, " << iters << " iters: AP " << m.AP << " AP50 " << m.AP50 << " AP75 " << m.AP75);
  CHECK(m.AP50 > 0.1);
}
