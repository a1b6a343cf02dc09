// The teacher/student runner (distill/distiller.h): frozen teacher (no grad, no graph, unchanged
// weights), every method through one training step on tiny RetinaNets and 64-px synthetic images,
// FitNet's loss going down on a fixed batch, teacher-side KD modules receiving gradients, inheriting,
// and the build-time errors (unknown tap / method, channel mismatch).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <unistd.h>

#include "data/image.h"
#include "detectors/build.h"
#include "distill/distiller.h"
#include "detectors/reppoints.h"
#include "detectors/retinanet.h"
#include "detectors/two_stage.h"
#include "engine/ops/reduce.h"
#include "engine/optim.h"
#include "engine/safetensors.h"

#include "tests/cli_util.h"

using namespace kdet;
using kdet::test::slurp;
using namespace kdet::kd;

namespace {

// 64x64 images: bright rectangles (class = colour channel) on black, two per image.
data::Batch tiny_batch(uint64_t seed, int n, bool empty_gt = false) {
  Generator g(seed);
  data::Batch b;
  b.images = Tensor::zeros({n, 3, 64, 64});
  float* p = b.images.data<float>();
  for (int i = 0; i < n; ++i) {
    data::ImageMeta m;
    m.ori_h = m.img_h = m.pad_h = 64;
    m.ori_w = m.img_w = m.pad_w = 64;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    if (!empty_gt) {
      for (int k = 0; k < 2; ++k) {
        data::BoxAnn a;
        const float w = static_cast<float>(g.uniform(14, 30)), h = static_cast<float>(g.uniform(14, 30));
        a.x1 = static_cast<float>(g.uniform(0, 64 - w));
        a.y1 = static_cast<float>(g.uniform(0, 64 - h));
        a.x2 = a.x1 + w;
        a.y2 = a.y1 + h;
        a.label = g.randint(0, 3);
        for (int y = static_cast<int>(a.y1); y < static_cast<int>(a.y2); ++y)
          for (int x = static_cast<int>(a.x1); x < static_cast<int>(a.x2); ++x)
            p[((i * 3 + a.label) * 64 + y) * 64 + x] = 2.0f;
        anns.push_back(a);
      }
    }
    b.gts.push_back(anns);
  }
  return b;
}

// depth / base channels / FPN+head width; 1 head conv, 3 classes; nothing frozen.
std::unique_ptr<RetinaNet> tiny(int depth, int64_t base, int64_t width, uint64_t seed) {
  RetinaNetConfig c = RetinaNetConfig::small(depth, base, width, 1, 3);
  c.backbone.frozen_stages = -1;
  auto m = std::make_unique<RetinaNet>(c);
  Generator g(seed);
  m->init_weights(g);
  return m;
}

std::unique_ptr<Distiller> make(KdMethod m, int64_t t_width = 16, int64_t s_width = 16, int t_depth = 34,
                                int64_t t_base = 8) {
  DistillConfig c = DistillConfig::defaults(m);
  c.inherit = false;
  // 64-px images: P5..P7 are 2x2, 1x1, 1x1, too small for the spec's pool-2 non-local blocks.
  if (m == KdMethod::FBKD || m == KdMethod::AID) c.fbkd.nonlocal = {{8, 4}, {8, 2}, {8, 1}, {8, 1}, {8, 1}};
  auto d = std::make_unique<Distiller>(tiny(t_depth, t_base, t_width, 1), tiny(18, 8, s_width, 2), c);
  Generator g(3);
  d->init_kd_weights(g);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.contiguous().raw_data(), b.contiguous().raw_data(), a.nbytes()) == 0;
}

double grad_norm(const Var& v) {
  const Tensor g = v.grad();
  if (!g.defined()) return 0;
  double s = 0;
  for (double x : g.to(DType::F64).to_vector<double>()) s += x * x;
  return std::sqrt(s);
}

}  // namespace

TEST_CASE("distiller: teacher frozen (no grad, no graph, bit-identical weights); optimizer gets student + KD params; FitNet converges") {
  DistillConfig c = DistillConfig::defaults(KdMethod::FitNet);
  c.fitnet.loss_weight = 0.05;
  Distiller d(tiny(34, 8, 16, 1), tiny(18, 8, 16, 2), c);
  Generator g(3);
  d.init_kd_weights(g);
  const TensorMap before = [&] {
    TensorMap m;
    for (auto& [k, v] : d.teacher().state_dict()) m[k] = v.clone();
    return m;
  }();
  CHECK(!d.teacher().training());

  // The optimizer's parameters: exactly the student's trainable ones and the KD module's.
  NamedParams params = d.named_parameters();
  std::set<const void*> teacher_storage;
  for (auto& [k, v] : d.teacher().named_parameters()) teacher_storage.insert(v.data().storage().get());
  int64_t n_kd = 0;
  for (auto& [k, v] : params) {
    CHECK(teacher_storage.count(v.data().storage().get()) == 0);
    if (k.rfind("distill.", 0) == 0) ++n_kd;
  }
  CHECK(n_kd == 2 * 5);  // weight + bias of 5 adapters
  CHECK(static_cast<int64_t>(params.size()) == n_kd + static_cast<int64_t>(d.student().named_parameters("", true).size()));

  SGD opt(params, 0.01, 0.9);
  const data::Batch batch = tiny_batch(7, 2);
  std::vector<double> kd;
  for (int it = 0; it < 6; ++it) {
    Distiller::Extra ex;
    LossList l = d.loss(batch, &ex);
    REQUIRE(l.size() == 3);
    CHECK(l[0].first == "loss_cls");
    CHECK(l[1].first == "loss_bbox");
    CHECK(l[2].first == "loss_fitnet");
    if (it == 0) {
      // Teacher taps: constants with no graph behind them; the student's are differentiable.
      for (const Var& t : ex.teacher_taps.neck) {
        CHECK(!t.requires_grad());
        CHECK(t.is_leaf());
      }
      CHECK(!ex.teacher_taps.head.cls_scores[0].requires_grad());
      CHECK(ex.student_taps.neck[0].requires_grad());
    }
    kd.push_back(l[2].second.item());
    opt.zero_grad();
    total_loss(l).backward();
    for (auto& [k, v] : d.teacher().named_parameters()) REQUIRE(!v.grad().defined());
    opt.step();
  }
  MESSAGE("FitNet KD loss on a fixed batch: " << kd[0] << " " << kd[1] << " " << kd[2] << " " << kd[3] << " " << kd[4]
                                                << " " << kd[5]);
  for (double v : kd) REQUIRE(std::isfinite(v));
  CHECK(kd.front() > 0);
  CHECK(kd.back() < 0.7 * kd.front());
  for (auto& [k, v] : d.teacher().state_dict()) CHECK_MESSAGE(bit_equal(v, before.at(k)), k);
  CHECK(!d.teacher().training());
  d.train(true);
  CHECK(!d.teacher().training());
}

namespace {
// One step of `name`: components finite and > 0, summing to the KD loss; every KD parameter (the
// teacher-side ones too) gets a gradient; the teacher gets none.
void one_method_step(const std::string& name) {
  const data::Batch batch = tiny_batch(11, 2);
  {
    CAPTURE(name);
    const KdMethod m = parse_kd_method(name);
    // FGD/MGD/AMD/DMKD/SSIM/FitNet with a wider teacher (align/adapter convs); the others need equal channels.
    const bool wide = !(m == KdMethod::FBKD || m == KdMethod::AID || m == KdMethod::LogitKD);
    auto d = make(m, wide ? 24 : 16, 16);
    Distiller::Extra ex;
    LossList l = d->loss(batch, &ex);
    const auto names = kd_component_names(m);
    REQUIRE(l.size() == 2 + names.size());
    double comp_sum = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      CHECK(l[2 + i].first == names[i]);
      const double v = l[2 + i].second.item();
      CHECK_MESSAGE(std::isfinite(v), names[i]);
      CHECK_MESSAGE(v > 0, names[i]);
      comp_sum += v;
    }
    CHECK(comp_sum == doctest::Approx(ex.kd.loss.item()).epsilon(1e-5));
    if (m == KdMethod::AID) {
      REQUIRE(ex.teacher_loss.defined());
      for (float v : ex.teacher_loss.to_vector<float>()) CHECK((std::isfinite(v) && v > 0));
    }
    total_loss(l).backward();
    int64_t with_grad = 0, total = 0;
    for (auto& [k, v] : d->named_parameters())
      if (k.rfind("distill.", 0) == 0) {
        ++total;
        with_grad += v.grad().defined() ? 1 : 0;
      }
    if (m != KdMethod::LogitKD) CHECK(total > 0);
    CHECK(with_grad == total);
    for (auto& [k, v] : d->teacher().named_parameters()) REQUIRE(!v.grad().defined());
    // Teacher-side KD modules are trained (kd_losses.md §1c, §6e).
    auto kdp = [&](const std::string& n) { return d->kd_module().find_parameter(n); };
    if (m == KdMethod::FGD) {
      REQUIRE(kdp("level0.gc_t.channel_add.3.weight"));
      CHECK(grad_norm(*kdp("level0.gc_t.channel_add.3.weight")) > 0);
    }
    if (m == KdMethod::FBKD || m == KdMethod::AID) {
      REQUIRE(kdp("level0.teacher_nl.bn.weight"));
      CHECK(grad_norm(*kdp("level0.teacher_nl.bn.weight")) > 0);
    }
  }
}
}  // namespace

TEST_CASE("distiller: one step of fitnet, logit_kd, fgd, mgd, amd (components > 0, sum = KD loss, KD params get gradients)") {
  for (const char* m : {"fitnet", "logit_kd", "fgd", "mgd", "amd"}) one_method_step(m);
}

TEST_CASE("distiller: one step of dmkd, ssim, fbkd, aid (components > 0, sum = KD loss, teacher-side modules get gradients)") {
  for (const char* m : {"dmkd", "ssim", "fbkd", "aid"}) one_method_step(m);
  CHECK(kd_method_names().size() == 9);  // every method is covered by the two cases
}

TEST_CASE("distiller: MGD masks are random per step, reproducible per seed; empty GT works for FGD") {
  const data::Batch batch = tiny_batch(5, 2);
  auto a = make(KdMethod::MGD), b = make(KdMethod::MGD);
  const double a1 = a->loss(batch).back().second.item(), a2 = a->loss(batch).back().second.item();
  const double b1 = b->loss(batch).back().second.item();
  CHECK(a1 == b1);
  CHECK(a1 != a2);
  a->set_step(0);  // resume: step k draws the masks of step k again
  CHECK(a->loss(batch).back().second.item() == a1);
  auto f = make(KdMethod::FGD);
  data::Batch nobox = tiny_batch(6, 2);  // the rectangles are drawn, but not annotated
  for (auto& g : nobox.gts) g.clear();
  LossList l = f->loss(nobox);
  CHECK(find_loss(l, "loss_fgd_fg").item() == 0.0);  // no boxes: no foreground
  CHECK(find_loss(l, "loss_fgd_bg").item() > 0.0);
}

TEST_CASE("distiller: inheriting copies the teacher's neck and head; mismatches are listed") {
  auto d = make(KdMethod::FGD);
  const TensorMap t = d->teacher().state_dict();
  CHECK(!bit_equal(d->student().state_dict().at("neck.fpn_convs.0.conv.weight"), t.at("neck.fpn_convs.0.conv.weight")));
  d->inherit_from_teacher();
  int64_t copied = 0;
  for (auto& [k, v] : d->student().state_dict()) {
    if (k.rfind("neck.", 0) == 0 || k.rfind("bbox_head.", 0) == 0) {
      CHECK_MESSAGE(bit_equal(v, t.at(k)), k);
      ++copied;
    }
  }
  CHECK(copied > 10);
  // The backbone is not inherited (depth 34 vs 18: the first conv has the same shape, other values).
  CHECK(!bit_equal(d->student().state_dict().at("backbone.conv1.weight"), t.at("backbone.conv1.weight")));

  auto bad = make(KdMethod::FGD, 32, 16, 18, 16);  // wider teacher: lateral convs and head differ
  const std::string e = error_of([&] { bad->inherit_from_teacher(); });
  CHECK(e.find("inherit") != std::string::npos);
  CHECK(e.find("neck.lateral_convs.0.conv.weight") != std::string::npos);
  CHECK(e.find("bbox_head.retina_cls.weight") != std::string::npos);
}

TEST_CASE("distiller: unknown tap / method, channel mismatch, tap mapping, config keys") {
  CHECK(error_of([] { parse_kd_method("foo"); }).find("unknown KD method 'foo'") != std::string::npos);
  CHECK(error_of([] { parse_tap("fpn.0"); }).find("unknown tap 'fpn.0'") != std::string::npos);
  CHECK(error_of([] { parse_tap("neck.x"); }).find("not a non-negative integer") != std::string::npos);
  {
    DistillConfig c = DistillConfig::defaults(KdMethod::FitNet);
    c.taps = {"neck.0", "neck.7"};
    const std::string e = error_of([&] { Distiller d(tiny(18, 8, 16, 1), tiny(18, 8, 16, 2), c); });
    CHECK(e.find("student tap 'neck.7' does not exist") != std::string::npos);
  }
  {
    const std::string e = error_of([] { make(KdMethod::FBKD, 32, 16); });
    CHECK(e.find("channel mismatch") != std::string::npos);
    CHECK(e.find("neck_conv.0: student 16 channels, teacher neck_conv.0: 32") != std::string::npos);
  }
  {
    // Default taps: the outputs of neck.fpn_convs.{i}.conv on every level (one-stage), the same tensors as
    // the FPN outputs for RetinaNet.
    Distiller d(tiny(18, 8, 16, 1), tiny(18, 8, 16, 2), DistillConfig::defaults(KdMethod::MGD));
    REQUIRE(d.config().taps.size() == 5);
    CHECK(d.config().taps[0] == "neck_conv.0");
    CHECK(d.config().taps[4] == "neck_conv.4");
    // Per-detector defaults (kd_losses.md §1d/§2d): two-stage and RepPoints rows; inherit only within a family.
    const DistillConfig fr = DistillConfig::defaults(KdMethod::FGD, "faster_rcnn", "cascade_rcnn");
    CHECK(fr.fgd.alpha_fgd == doctest::Approx(5e-5));
    CHECK(fr.fgd.lambda_fgd == doctest::Approx(5e-7));
    CHECK_FALSE(fr.inherit);
    const DistillConfig mg = DistillConfig::defaults(KdMethod::MGD, "faster_rcnn", "faster_rcnn");
    CHECK(mg.mgd.alpha_mgd == doctest::Approx(5e-7));
    CHECK(mg.mgd.lambda_mgd == doctest::Approx(0.45));
    CHECK(mg.inherit);
    const DistillConfig rp = DistillConfig::defaults(KdMethod::FGD, "reppoints", "reppoints");
    CHECK(rp.fgd.alpha_fgd == doctest::Approx(1.6e-3));
    CHECK(rp.inherit);
  }
  {
    // Explicit taps: head tower features and logits.
    DistillConfig c = DistillConfig::defaults(KdMethod::FitNet);
    c.taps = {"cls_feat.0", "bbox_pred.1", "backbone.3"};
    Distiller d(tiny(34, 8, 24, 1), tiny(18, 8, 16, 2), c);
    REQUIRE(d.channels().size() == 3);
    CHECK(d.channels()[0] == std::pair<int64_t, int64_t>{16, 24});
    CHECK(d.channels()[1] == std::pair<int64_t, int64_t>{36, 36});
    CHECK(d.channels()[2] == std::pair<int64_t, int64_t>{64, 64});
    CHECK(d.loss(tiny_batch(3, 2)).back().second.item() > 0);
  }
  {
    Config cfg = Config::parse("[distill]\nmethod = fgd\nalpha_fgd = 2e-3\nbox_ref = pad\nalpha_mgd = 1\n[teacher]\nweights = t.safetensors\n");
    DistillConfig d = DistillConfig::from_config(cfg);
    CHECK(d.method == KdMethod::FGD);
    CHECK(d.fgd.alpha_fgd == 2e-3);
    CHECK(d.fgd.beta_fgd == 5e-4);  // §1d RetinaNet default
    CHECK(d.fgd_pad_ref);
    CHECK(d.inherit);
    CHECK(d.teacher_weights == "t.safetensors");
    // alpha_mgd belongs to another method: left unread, reported.
    CHECK(error_of([&] { cfg.check_all_used(); }).find("alpha_mgd") != std::string::npos);
  }
}

TEST_CASE("distiller: state dict = student (detector names) + distill.*; round trip") {
  auto d = make(KdMethod::FGD, 24, 16);
  TensorMap sd = d->state_dict();
  CHECK(sd.count("backbone.conv1.weight") == 1);
  CHECK(sd.count("distill.level0.align.weight") == 1);
  CHECK(sd.count("distill.level4.gc_t.conv_mask.weight") == 1);
  TensorMap snap;
  for (auto& [k, v] : sd) snap[k] = v.clone();
  auto e = make(KdMethod::FGD, 24, 16);
  Generator g(99);
  e->init_kd_weights(g);
  e->load_state_dict(snap);
  for (auto& [k, v] : e->state_dict()) CHECK_MESSAGE(bit_equal(v, snap.at(k)), k);
  // A bad student part leaves the KD module as it was (all or nothing).
  TensorMap bad = snap;
  bad.erase("backbone.conv1.weight");
  for (auto& [k, v] : bad)
    if (k.rfind("distill.", 0) == 0) {
      v = v.clone();
      v.fill_(7.0);
    }
  const TensorMap kd_before = [&] {
    TensorMap m;
    for (auto& [k, v] : e->kd_module().state_dict()) m[k] = v.clone();
    return m;
  }();
  CHECK(error_of([&] { e->load_state_dict(bad); }).find("backbone.conv1.weight") != std::string::npos);
  for (auto& [k, v] : e->kd_module().state_dict()) CHECK_MESSAGE(bit_equal(v, kd_before.at(k)), k);
  snap.erase("distill.level0.align.weight");
  CHECK(error_of([&] { e->load_state_dict(snap); }).find("distill") != std::string::npos);
}

TEST_CASE("distiller: configs/kd_*.cfg parse, every key is read, taps resolve, demo students can inherit") {
  namespace fs = std::filesystem;
  if (!fs::exists("configs/kd_fgd_r34_r18_tiny_synth.cfg")) {
    MESSAGE("configs/ not found from the working directory: skipped (run from the repository root)");
    return;
  }
  int n = 0;
  for (const auto& e : fs::directory_iterator("configs")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("kd_", 0) != 0 || name.find("teacher") != std::string::npos) continue;
    CAPTURE(name);
    Config c = Config::load(e.path().string());
    if (c.get_string("model.type", "retinanet") != "retinanet") continue;  // next test case
    ++n;
    const DistillConfig dc = DistillConfig::from_config(c);
    const RetinaNetConfig sc = RetinaNetConfig::from_config(c, "model"), tc = RetinaNetConfig::from_config(c, "teacher");
    CHECK(c.get_string("teacher.type") == "retinanet");
    CHECK(c.get_string("model.type") == "retinanet");
    for (const char* sec : {"data", "train"})  // the train loop's sections (tools/train_loop.cpp reads them)
      for (const auto& k : c.keys(sec)) (void)c.get_string(std::string(sec) + "." + k);
    CHECK_NOTHROW(c.check_all_used());
    CHECK(!dc.teacher_weights.empty());
    CHECK(sc.head.num_classes == tc.head.num_classes);
    for (const auto& t : dc.taps) {
      const TapRef r = parse_tap(t);
      CHECK(r.level < (r.kind == TapKind::Backbone ? static_cast<int64_t>(sc.neck.in_channels.size()) : sc.neck.num_outs));
    }
    if (dc.inherit) {  // identical neck and head
      CHECK(sc.neck.in_channels == tc.neck.in_channels);
      CHECK(sc.neck.out_channels == tc.neck.out_channels);
      CHECK(sc.head.feat_channels == tc.head.feat_channels);
      CHECK(sc.head.stacked_convs == tc.head.stacked_convs);
    }
    if (name.find("tiny_synth") != std::string::npos) {
      // Small enough to build: the Distiller accepts the config, and inheriting works.
      Distiller d(std::make_unique<RetinaNet>(tc), std::make_unique<RetinaNet>(sc), dc);
      if (dc.inherit) CHECK_NOTHROW(d.inherit_from_teacher());
    }
  }
  CHECK(n >= 13);
}

TEST_CASE("kdet distill (CLI): MGD 4 iterations straight == 2, interrupt, resume, 2 (bit for bit); KD loss logged; student file") {
  namespace fs = std::filesystem;
  const char* bin = test::kbin();
  if (!bin) {
    MESSAGE("KDET_BIN not set: kdet distill CLI test skipped (make test sets it)");
    return;
  }
  REQUIRE(fs::exists("configs/retinanet_r18_micro_synth.cfg"));
  const test::TmpDir tmp("distill");
  const std::string& d = tmp.path;
  // A random R34 teacher with the micro student's neck and head (inheritable).
  RetinaNetConfig tc = RetinaNetConfig::small(34, 8, 16, 1, 6);
  RetinaNet teacher(tc);
  Generator g(5);
  teacher.init_weights(g);
  teacher.save(d + "/teacher.safetensors");
  {
    std::ofstream f(d + "/kd.cfg");
    f << "base = " << fs::absolute("configs/retinanet_r18_micro_synth.cfg").string() << "\n"
      << "[teacher]\ntype = retinanet\ndepth = 34\nnum_classes = 6\nbase_channels = 8\nneck_channels = 16\n"
      << "stacked_convs = 1\nweights = " << d << "/teacher.safetensors\n"
      << "[distill]\nmethod = mgd\ninherit = true\nalpha_mgd = 0.001\n";
  }
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(bin) + " distill " + d + "/kd.cfg --quiet --set data.synth_dir=" + d +
                            "/synth data.synth_train_images=4 train.max_iters=4 train.checkpoint_interval=2 "
                            "train.eval_at_end=false " + args + " > " + d + "/out.txt 2>&1";
    return std::system(cmd.c_str());
  };
  REQUIRE_MESSAGE(run("--work-dir " + d + "/a") == 0, slurp(d + "/out.txt"));
  REQUIRE_MESSAGE(run("--work-dir " + d + "/b --stop-at 2") == 0, slurp(d + "/out.txt"));
  CHECK(!fs::exists(d + "/b/iter_4.safetensors"));
  REQUIRE_MESSAGE(run("--work-dir " + d + "/b --resume " + d + "/b/iter_2.safetensors") == 0, slurp(d + "/out.txt"));
  SafetensorsFile fa = load_safetensors(d + "/a/iter_4.safetensors"), fb = load_safetensors(d + "/b/iter_4.safetensors");
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  int differ = 0, kd_keys = 0, teacher_keys = 0;
  for (auto& [k, t] : fa.tensors) {
    REQUIRE_MESSAGE(fb.tensors.count(k), k);
    if (!bit_equal(t, fb.tensors.at(k))) {
      ++differ;
      MESSAGE("differs: " << k);
    }
    kd_keys += k.rfind("distill.level0.generation", 0) == 0;
    teacher_keys += k.rfind("teacher", 0) == 0;
  }
  CHECK(differ == 0);
  CHECK(kd_keys == 4);       // the generator's two convs (weight, bias) are trained and checkpointed
  CHECK(teacher_keys == 0);  // the teacher is not part of the checkpoint
  const std::string log = slurp(d + "/a/log.jsonl");
  CHECK(log.find("\"loss_mgd\"") != std::string::npos);
  CHECK(log.find("\"loss_cls\"") != std::string::npos);
  // The student alone loads into the detector the config builds.
  RetinaNet student(RetinaNetConfig::small(18, 8, 16, 1, 6));
  CHECK_NOTHROW(load_detector_weights(student, d + "/a/student.safetensors"));
  // viz-kd on one of the synthetic images: one PNG per method, map and FPN level, readable, with a legend
  // band under the (enlarged) image.
  std::string img;
  for (const auto& e : fs::recursive_directory_iterator(d + "/synth"))
    if (e.path().extension() == ".png" && img.empty()) img = e.path().string();
  REQUIRE(!img.empty());
  const std::string viz = std::string(bin) + " viz-kd " + d + "/kd.cfg " + img + " --out " + d +
                          "/viz --methods fgd,mgd,dmkd,ssim,aid --boxes '4,4,30,30,1;20,20,60,50,2' > " + d +
                          "/out.txt 2>&1";
  REQUIRE_MESSAGE(std::system(viz.c_str()) == 0, slurp(d + "/out.txt"));
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(d + "/viz")) pngs += e.path().extension() == ".png";
  CHECK(pngs == 5 * (3 + 1 + 2 + 1 + 1));  // fgd fg/bg/attention, mgd keep, dmkd keep/attention, ssim, aid
  const data::Image fg = data::load_image(d + "/viz/fgd_mask_fg_P3.png");
  CHECK(fg.w == 384);
  CHECK(fg.h > 384);
  // The teacher file is untouched and was inherited into the student's neck and head at the start.
  SafetensorsFile ft = load_safetensors(d + "/teacher.safetensors");
  CHECK(bit_equal(ft.tensors.at("neck.fpn_convs.0.conv.weight"), teacher.state_dict().at("neck.fpn_convs.0.conv.weight")));
}

TEST_CASE("distiller: teacher-side KD modules learn only through their own term (FGD gc_t: rela; FBKD teacher_nl: non-local)") {
  const data::Batch batch = tiny_batch(13, 2);
  auto teacher_side_grad = [&](KdMethod m, bool zero_own_term, const std::string& prefix) {
    DistillConfig c = DistillConfig::defaults(m);
    if (m == KdMethod::FBKD) c.fbkd.nonlocal = {{8, 4}, {8, 2}, {8, 1}, {8, 1}, {8, 1}};
    if (zero_own_term) {
      c.fgd.lambda_fgd = 0;
      c.fbkd.w_nonlocal = 0;
    }
    Distiller d(tiny(34, 8, 16, 1), tiny(18, 8, 16, 2), c);
    Generator g(3);
    d.init_kd_weights(g);
    total_loss(d.loss(batch)).backward();
    double s = 0;
    int n = 0;
    for (auto& [k, v] : d.kd_module().named_parameters())
      if (k.find(prefix) != std::string::npos) {
        s += grad_norm(v);
        ++n;
      }
    REQUIRE(n > 0);
    return s;
  };
  CHECK(teacher_side_grad(KdMethod::FGD, false, ".gc_t.") > 0);
  CHECK(teacher_side_grad(KdMethod::FGD, true, ".gc_t.") == 0.0);
  CHECK(teacher_side_grad(KdMethod::FBKD, false, ".teacher_nl.") > 0);
  CHECK(teacher_side_grad(KdMethod::FBKD, true, ".teacher_nl.") == 0.0);
}

TEST_CASE("distiller: KD configs for two-stage and RepPoints pairs (Cascade-X101-DCN -> Faster-R50, RepPoints-X101-DCN -> R50)") {
  namespace fs = std::filesystem;
  if (!fs::exists("configs")) {
    MESSAGE("configs/ not found (run from the repository root): skipped");
    return;
  }
  int n = 0;
  for (const auto& e : fs::directory_iterator("configs")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("kd_", 0) != 0) continue;
    Config c = Config::load(e.path().string());
    const std::string st = c.get_string("model.type", "retinanet"), tt = c.get_string("teacher.type", "retinanet");
    if (st == "retinanet" && tt == "retinanet") continue;
    if (st == "faster_rcnn" && tt == "faster_rcnn") continue;  // same-family two-stage: tests/distill/test_roi_logit_kd.cpp
    CAPTURE(name);
    ++n;
    const DistillConfig dc = DistillConfig::from_config(c);
    // Every [model] / [teacher] key is one the detector reads (unknown keys would be errors).
    for (const char* sec : {"model", "teacher"}) {
      const std::string t = c.get_string(std::string(sec) + ".type");
      if (t == "reppoints") (void)RepPointsConfig::from_config(c, sec);
      else (void)TwoStageConfig::from_config(c, sec);
    }
    for (const char* sec : {"data", "train"})
      for (const auto& k : c.keys(sec)) (void)c.get_string(std::string(sec) + "." + k);
    CHECK_NOTHROW(c.check_all_used());
    CHECK(!dc.teacher_weights.empty());
    for (const auto& t : dc.taps) CHECK(parse_tap(t).kind == TapKind::NeckConv);
    if (st == "reppoints") {
      CHECK(dc.taps.size() == 5);  // P3-P7
      CHECK(dc.inherit);
      if (dc.method == KdMethod::FGD) CHECK(dc.fgd.alpha_fgd == doctest::Approx(1.6e-3));
    } else {
      CHECK(dc.taps.size() == 4);  // P2-P5
      CHECK_FALSE(dc.inherit);     // Cascade -> Faster: different heads
      if (dc.method == KdMethod::FGD) CHECK(dc.fgd.alpha_fgd == doctest::Approx(5e-5));
      if (dc.method == KdMethod::MGD) CHECK(dc.mgd.lambda_mgd == doctest::Approx(0.45));
      const TwoStageConfig tc = TwoStageConfig::from_config(c, "teacher");
      CHECK(tc.backbone.dcn == ResNetCfg::Dcn::DCN);
    }
  }
  CHECK(n >= 4);
}
