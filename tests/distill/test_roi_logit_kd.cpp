// RoI logit KD for two-stage pairs (distill/distiller.h, specs/kd_losses.md §8b): the softmax KL(T) between
// the student's R-CNN class logits on its sampled RoIs and the teacher's R-CNN logits on the same RoIs.
// Float64 value and gradient against a hand computation, a gradcheck, the Distiller on tiny Faster -> Faster
// and Cascade -> Faster pairs (teacher logits recomputed independently, no graph, no teacher gradient, zero
// loss for identical weights, the Cascade stage rule), the config keys and files, and `kdet distill` runs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "detectors/build.h"
#include "detectors/retinanet.h"
#include "detectors/two_stage.h"
#include "distill/distiller.h"
#include "engine/optim.h"
#include "tests/gradcheck.h"

#include "tests/cli_util.h"

using namespace kdet;
using kdet::test::slurp;
using namespace kdet::kd;

namespace {

// Hand computation of T²·Σ_i Σ_k p_t,ik (log p_t,ik − log p_s,ik) / denom in double (rows of [R, K]).
double hand_kl(const std::vector<double>& s, const std::vector<double>& t, int64_t R, int64_t K, double T,
               double denom, std::vector<double>* grad = nullptr) {
  double tot = 0;
  if (grad) grad->assign(static_cast<size_t>(R * K), 0.0);
  for (int64_t i = 0; i < R; ++i) {
    double ms = -1e300, mt = -1e300;
    for (int64_t k = 0; k < K; ++k) ms = std::max(ms, s[i * K + k] / T), mt = std::max(mt, t[i * K + k] / T);
    double zs = 0, zt = 0;
    for (int64_t k = 0; k < K; ++k) zs += std::exp(s[i * K + k] / T - ms), zt += std::exp(t[i * K + k] / T - mt);
    for (int64_t k = 0; k < K; ++k) {
      const double lps = s[i * K + k] / T - ms - std::log(zs), lpt = t[i * K + k] / T - mt - std::log(zt);
      tot += std::exp(lpt) * (lpt - lps);
      // ∂/∂s = T²/denom · (p_s − p_t)/T
      if (grad) (*grad)[i * K + k] = T / denom * (std::exp(lps) - std::exp(lpt));
    }
  }
  return T * T * tot / denom;
}

std::vector<double> f64(const Tensor& t) { return t.to(DType::F64).contiguous().to_vector<double>(); }

// 64-px random images with three GT boxes each (classes 0..2).
data::Batch rcnn_batch(uint64_t seed, int64_t n = 2) {
  Generator g(seed);
  data::Batch b;
  b.images = rand_normal({n, 3, 64, 64}, g);
  for (int64_t i = 0; i < n; ++i) {
    data::ImageMeta m;
    m.image_id = 20 + i;
    m.img_h = m.img_w = m.pad_h = m.pad_w = m.ori_h = m.ori_w = 64;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    for (int k = 0; k < 3; ++k) {
      data::BoxAnn a;
      a.x1 = static_cast<float>(g.uniform(0, 32));
      a.y1 = static_cast<float>(g.uniform(0, 32));
      a.x2 = a.x1 + static_cast<float>(g.uniform(8, 24));
      a.y2 = a.y1 + static_cast<float>(g.uniform(8, 24));
      a.label = k % 3;
      anns.push_back(a);
    }
    b.gts.push_back(anns);
  }
  return b;
}

Config rcnn_config(const std::string& type, int depth, bool norm_eval = false) {
  return Config::parse("[model]\ntype = " + type + "\ndepth = " + std::to_string(depth) +
                       "\nnum_classes = 3\nbase_channels = 8\nfrozen_stages = -1\nnorm_eval = " +
                       (norm_eval ? "true" : "false") +
                       "\nneck_channels = 16\nfc_out_channels = 32\nrcnn_sampler_num = 64\nrpn_train_max_per_img = 100\n"
                       "rpn_test_max_per_img = 50\n");
}

std::unique_ptr<Detector> rcnn(const std::string& type, int depth, uint64_t seed, bool norm_eval = false) {
  auto m = build_detector(rcnn_config(type, depth, norm_eval));
  Generator g(seed);
  m->init_weights(g);
  return m;
}

TwoStageDetector& two_stage(Detector& d) { return dynamic_cast<TwoStageDetector&>(d); }

// The teacher's R-CNN logits on given RoIs, recomputed from scratch (not through the Distiller).
Tensor recompute_teacher(Detector& teacher, const data::Batch& b, const Tensor& rois, int stage, bool mean) {
  NoGradGuard ng;
  TwoStageDetector& t = two_stage(teacher);
  DetectorTaps taps = t.forward(Var(b.images));
  if (mean) return t.roi_head().forward_rois(taps.neck, rois, Detector::geometry(b)).cls_score.data();
  return t.roi_head().forward_stage(stage, taps.neck, rois).cls_score.data();
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

}  // namespace

TEST_CASE("roi logit KD: KL(T) on [R, C+1] logits equals a hand computation (float64; batchmean, classmean, sum)") {
  const int64_t R = 6, K = 5;  // 4 classes + background
  Generator g(3);
  const Tensor s0 = rand_normal({R, K}, g, 0.0, 2.0, DType::F64), t0 = rand_normal({R, K}, g, 0.0, 2.0, DType::F64);
  const std::vector<double> sv = f64(s0), tv = f64(t0);
  for (double T : {1.0, 2.5}) {
    const std::pair<KLReduction, double> reds[] = {
        {KLReduction::BatchMean, double(R)}, {KLReduction::ClassMean, double(R * K)}, {KLReduction::Sum, 1.0}};
    for (const auto& [red, denom] : reds) {
      CAPTURE(T);
      CAPTURE(static_cast<int>(red));
      Var s(s0.clone(), true);
      KdResult r = logit_kd_kl(s, t0, LogitKLConfig{T, red});
      std::vector<double> want_grad;
      const double want = hand_kl(sv, tv, R, K, T, denom, &want_grad);
      CHECK(want > 0);
      CHECK(r.loss.item() == doctest::Approx(want).epsilon(1e-12));
      r.loss.backward();
      const std::vector<double> got = f64(s.grad());
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want_grad[i]).epsilon(1e-10).scale(1e-12));
    }
  }
  // identical logits: exactly zero
  Var s(t0.clone(), true);
  CHECK(logit_kd_kl(s, t0, LogitKLConfig{2.0, KLReduction::BatchMean}).loss.item() == 0.0);
}

TEST_CASE("roi logit KD: float64 gradcheck of the KL w.r.t. the student logits (teacher constant)") {
  Generator g(8);
  const Tensor s0 = rand_normal({7, 4}, g, 0.0, 1.5, DType::F64), t0 = rand_normal({7, 4}, g, 0.0, 1.5, DType::F64);
  for (double T : {1.0, 3.0})
    CHECK(test::gradcheck([&](const std::vector<Var>& v) { return logit_kd_kl(v[0], t0, LogitKLConfig{T}).loss; }, {s0}));
}

TEST_CASE("roi logit KD: Faster -> Faster distill step (teacher logits on the student's RoIs, no graph, no teacher grad)") {
  DistillConfig dc = DistillConfig::defaults(KdMethod::LogitKD, "faster_rcnn", "faster_rcnn");
  REQUIRE(dc.logit_target == LogitTarget::RoI);
  REQUIRE(dc.roi_teacher_stage == kRoITeacherLast);
  dc.logit.T = 2.0;
  dc.logit_weight = 0.5;
  Distiller d(rcnn("faster_rcnn", 34, 1), rcnn("faster_rcnn", 18, 2), dc);
  CHECK(d.student_taps().empty());  // RoI logit KD reads no taps
  CHECK(d.kd_module().num_parameters() == 0);
  d.train(true);
  const data::Batch b = rcnn_batch(4);
  Distiller::Extra ex;
  LossList l = d.loss(b, &ex);
  REQUIRE(l.size() == 5);
  CHECK(l[0].first == "loss_rpn_cls");
  CHECK(l[3].first == "loss_bbox");
  CHECK(l[4].first == "loss_logit_kd");
  CHECK(kd_component_names(KdMethod::LogitKD) == std::vector<std::string>{"loss_logit_kd"});

  const Var& s = ex.student_taps.roi_cls_score;
  const Var& t = ex.teacher_taps.roi_cls_score;
  REQUIRE(s.defined());
  REQUIRE(t.defined());
  const int64_t R = s.size(0);
  CHECK(R > 0);
  CHECK(s.shape() == Shape{R, 4});  // 3 classes + background
  CHECK(t.shape() == s.shape());
  CHECK(bit_equal(ex.teacher_taps.rois, ex.student_taps.rois));  // the same RoIs
  CHECK(t.is_leaf());                                             // no graph behind the teacher's logits
  CHECK_FALSE(t.requires_grad());
  CHECK_FALSE(s.is_leaf());
  // Recomputed independently: the teacher's (only) R-CNN stage on its own FPN features and the student's RoIs.
  const Tensor t_ref = recompute_teacher(d.teacher(), b, ex.student_taps.rois, 0, false);
  CHECK(bit_equal(t.data(), t_ref));
  // The loss = w · T² · (1/R) Σ_i KL(p_t,i ‖ p_s,i), by hand from the two logit tables.
  const double want = 0.5 * hand_kl(f64(s.data()), f64(t_ref), R, 4, 2.0, double(R));
  CHECK(want > 0);
  CHECK(l[4].second.item() == doctest::Approx(want).epsilon(1e-5));

  // The KD term alone: gradients reach the student's R-CNN head, neck and backbone (through the RoI
  // features), not its RPN (the RoIs are detached proposals), and never the teacher.
  l[4].second.backward();
  for (auto& [k, v] : d.teacher().named_parameters()) CHECK_MESSAGE(!v.grad().defined(), k);
  auto grad_norm = [&](const char* name) {
    Var* p = d.student().find_parameter(name);
    REQUIRE_MESSAGE(p != nullptr, name);
    if (!p->grad().defined()) return 0.0;
    double n = 0;
    for (double x : f64(p->grad())) n += x * x;
    return std::sqrt(n);
  };
  CHECK(grad_norm("roi_head.bbox_head.fc_cls.weight") > 0);
  CHECK(grad_norm("roi_head.bbox_head.shared_fcs.0.weight") > 0);
  CHECK(grad_norm("neck.fpn_convs.0.conv.weight") > 0);
  CHECK(grad_norm("backbone.conv1.weight") > 0);
  CHECK(grad_norm("rpn_head.rpn_cls.weight") == 0.0);
  CHECK(grad_norm("roi_head.bbox_head.fc_reg.weight") == 0.0);  // the KL reads the class logits only
}

TEST_CASE("roi logit KD: zero when the student is the teacher (same weights); positive after a student step") {
  // norm_eval: BN uses running statistics in the student's training mode too, so both forwards agree.
  auto student = rcnn("faster_rcnn", 18, 6, true);
  auto teacher = rcnn("faster_rcnn", 18, 99, true);
  teacher->load_state_dict(student->state_dict());
  DistillConfig dc = DistillConfig::defaults(KdMethod::LogitKD, "faster_rcnn", "faster_rcnn");
  Distiller d(std::move(teacher), std::move(student), dc);
  d.train(true);
  const data::Batch b = rcnn_batch(12);
  Distiller::Extra ex;
  LossList l = d.loss(b, &ex);
  REQUIRE(l.back().first == "loss_logit_kd");
  test::check_close(ex.teacher_taps.roi_cls_score.data(), ex.student_taps.roi_cls_score.data(), 1e-5, 1e-6,
              "teacher vs student RoI logits");
  CHECK(std::abs(l.back().second.item()) < 1e-7);
  SGD opt(d.named_parameters(), 0.05, 0.0);
  opt.zero_grad();
  total_loss(l).backward();
  opt.step();
  CHECK(d.loss(b).back().second.item() > 1e-6);
}

TEST_CASE("roi logit KD: Cascade -> Faster (teacher stage rule: last by default, a stage index, the stage mean)") {
  const data::Batch b = rcnn_batch(5, 1);
  struct Case {
    int stage;
    int ref_stage;
    bool mean;
  };
  std::vector<Tensor> tl;
  for (const Case& c : {Case{kRoITeacherLast, 2, false}, Case{0, 0, false}, Case{kRoITeacherMean, -1, true}}) {
    CAPTURE(c.stage);
    DistillConfig dc = DistillConfig::defaults(KdMethod::LogitKD, "faster_rcnn", "cascade_rcnn");
    REQUIRE(dc.logit_target == LogitTarget::RoI);
    dc.roi_teacher_stage = c.stage;
    Distiller d(rcnn("cascade_rcnn", 18, 11), rcnn("faster_rcnn", 18, 12), dc);
    REQUIRE(two_stage(d.teacher()).roi_head().num_stages() == 3);
    d.train(true);
    Distiller::Extra ex;
    LossList l = d.loss(b, &ex);
    REQUIRE(l.size() == 5);
    CHECK(l[4].first == "loss_logit_kd");
    CHECK(std::isfinite(l[4].second.item()));
    CHECK(l[4].second.item() > 0);
    const Tensor ref = recompute_teacher(d.teacher(), b, ex.student_taps.rois, c.ref_stage, c.mean);
    CHECK(bit_equal(ex.teacher_taps.roi_cls_score.data(), ref));
    const int64_t R = ex.student_taps.rois.size(0);
    CHECK(l[4].second.item() ==
          doctest::Approx(hand_kl(f64(ex.student_taps.roi_cls_score.data()), f64(ref), R, 4, 1.0, double(R))).epsilon(1e-5));
    if (c.stage == kRoITeacherLast) {
      total_loss(l).backward();
      for (auto& [k, v] : d.teacher().named_parameters()) CHECK_MESSAGE(!v.grad().defined(), k);
    }
    tl.push_back(ref);
  }
  // Same batch and student init, so the same RoIs: the three rules give different teacher logits.
  REQUIRE(tl[0].shape() == tl[1].shape());
  REQUIRE(tl[0].shape() == tl[2].shape());
  CHECK_FALSE(bit_equal(tl[0], tl[1]));
  CHECK_FALSE(bit_equal(tl[0], tl[2]));
  // a stage the teacher does not have
  DistillConfig bad = DistillConfig::defaults(KdMethod::LogitKD, "faster_rcnn", "cascade_rcnn");
  bad.roi_teacher_stage = 3;
  CHECK_THROWS_WITH_AS(Distiller(rcnn("cascade_rcnn", 18, 1), rcnn("faster_rcnn", 18, 2), bad),
                       doctest::Contains("out of range"), Error);
}

TEST_CASE("roi logit KD: config keys, per-detector defaults and errors") {
  auto cfg = [](const std::string& st, const std::string& tt, const std::string& extra) {
    return Config::parse("[model]\ntype = " + st + "\n[teacher]\ntype = " + tt + "\n[distill]\nmethod = logit_kd\n" + extra);
  };
  {
    Config c = cfg("faster_rcnn", "cascade_rcnn", "T = 2\nloss_weight = 0.25\nreduction = classmean\nroi_teacher_stage = mean\n");
    DistillConfig d = DistillConfig::from_config(c);
    CHECK(d.logit_target == LogitTarget::RoI);
    CHECK(d.logit.T == 2.0);
    CHECK(d.logit_weight == 0.25);
    CHECK(d.roi_reduction == KLReduction::ClassMean);
    CHECK(d.roi_teacher_stage == kRoITeacherMean);
    CHECK(DistillConfig::from_config(cfg("faster_rcnn", "cascade_rcnn", "roi_teacher_stage = 1\n")).roi_teacher_stage == 1);
    CHECK(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "")).roi_teacher_stage == kRoITeacherLast);
    CHECK(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "")).roi_reduction == KLReduction::BatchMean);
  }
  CHECK(DistillConfig::from_config(cfg("retinanet", "retinanet", "")).logit_target == LogitTarget::Dense);
  CHECK(DistillConfig::from_config(cfg("cascade_rcnn", "cascade_rcnn", "")).logit_target == LogitTarget::RoI);
  CHECK(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "logit_kd_target = dense\n")).logit_target ==
        LogitTarget::Dense);
  CHECK_THROWS_WITH_AS(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "logit_kd_target = rpn\n")),
                       doctest::Contains("roi or dense"), Error);
  CHECK_THROWS_WITH_AS(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "roi_teacher_stage = first\n")),
                       doctest::Contains("last, mean or a stage index"), Error);
  CHECK_THROWS_WITH_AS(DistillConfig::from_config(cfg("faster_rcnn", "faster_rcnn", "reduction = mean\n")),
                       doctest::Contains("batchmean, classmean or sum"), Error);
  {  // the RoI keys are not read for the dense form: check_all_used reports them
    Config c = cfg("retinanet", "retinanet", "reduction = batchmean\n");
    (void)DistillConfig::from_config(c);
    CHECK_THROWS_AS(c.check_all_used(), Error);
  }
  // Construction errors: a one-stage detector, taps with the RoI form.
  DistillConfig roi = DistillConfig::defaults(KdMethod::LogitKD, "faster_rcnn", "faster_rcnn");
  RetinaNetConfig rc = RetinaNetConfig::small(18, 8, 16, 1, 3);
  CHECK_THROWS_WITH_AS(Distiller(std::make_unique<RetinaNet>(rc), rcnn("faster_rcnn", 18, 1), roi),
                       doctest::Contains("two-stage student and teacher"), Error);
  DistillConfig tapped = roi;
  tapped.taps = {"cls_score.0"};
  CHECK_THROWS_WITH_AS(Distiller(rcnn("faster_rcnn", 18, 1), rcnn("faster_rcnn", 18, 2), tapped),
                       doctest::Contains("taps / teacher_taps must not be set"), Error);
  auto four = build_detector(Config::parse("[model]\ntype = faster_rcnn\ndepth = 18\nnum_classes = 4\nbase_channels = 8\n"
                                           "neck_channels = 16\nfc_out_channels = 32\n"));
  CHECK_THROWS_WITH_AS(Distiller(std::move(four), rcnn("faster_rcnn", 18, 2), roi), doctest::Contains("same classes"),
                       Error);
}

TEST_CASE("roi logit KD: two-stage KD configs and the two-stage study config parse; every key is read") {
  namespace fs = std::filesystem;
  if (!fs::exists("configs/kd_logit_roi_faster_r34_r18_tiny_synth.cfg")) {
    MESSAGE("configs/ not found from the working directory: skipped (run from the repository root)");
    return;
  }
  struct Want {
    const char* file;
    KdMethod method;
    bool inherit;
  };
  for (const Want& w : {Want{"kd_logit_roi_faster_r101_r50_2x_coco", KdMethod::LogitKD, false},
                        Want{"kd_logit_roi_faster_r34_r18_tiny_synth", KdMethod::LogitKD, false},
                        Want{"kd_fgd_faster_r34_r18_tiny_synth", KdMethod::FGD, true},
                        Want{"kd_mgd_faster_r34_r18_tiny_synth", KdMethod::MGD, true}}) {
    CAPTURE(w.file);
    Config c = Config::load(std::string("configs/") + w.file + ".cfg");
    const DistillConfig dc = DistillConfig::from_config(c);
    CHECK(dc.method == w.method);
    CHECK(dc.inherit == w.inherit);
    CHECK(!dc.teacher_weights.empty());
    const TwoStageConfig sc = TwoStageConfig::from_config(c, "model"), tc = TwoStageConfig::from_config(c, "teacher");
    CHECK_FALSE(sc.cascade);
    CHECK_FALSE(tc.cascade);
    CHECK(sc.roi.num_classes() == tc.roi.num_classes());
    for (const char* sec : {"data", "train"})
      for (const auto& k : c.keys(sec)) (void)c.get_string(std::string(sec) + "." + k);
    CHECK_NOTHROW(c.check_all_used());
    if (w.method == KdMethod::LogitKD) {
      CHECK(dc.logit_target == LogitTarget::RoI);
      CHECK(dc.taps.empty());
      CHECK(dc.roi_reduction == KLReduction::BatchMean);
      CHECK(dc.roi_teacher_stage == kRoITeacherLast);
    } else {
      CHECK(dc.taps == std::vector<std::string>{"neck_conv.0", "neck_conv.1", "neck_conv.2", "neck_conv.3"});
    }
    if (std::string(w.file).find("tiny_synth") != std::string::npos) {
      // The teacher is the study's teacher config's model; small enough to build the Distiller.
      const TwoStageConfig teacher_cfg = TwoStageConfig::from_config(Config::load("configs/faster_rcnn_r34_tiny_synth.cfg"));
      CHECK(teacher_cfg.backbone.depth == tc.backbone.depth);
      CHECK(teacher_cfg.neck.out_channels == tc.neck.out_channels);
      CHECK(teacher_cfg.roi.stages[0].head.fc_out_channels == tc.roi.stages[0].head.fc_out_channels);
      CHECK(teacher_cfg.rpn.anchors.scales == tc.rpn.anchors.scales);
      Distiller d(build_detector(c, "teacher"), build_detector(c), dc);
      if (dc.inherit) CHECK_NOTHROW(d.inherit_from_teacher());
    }
  }
  // The study: teacher / student / method files exist, and the methods are the two-stage ones.
  Config s = Config::load("configs/study_two_stage_synth.cfg");
  CHECK(fs::exists("configs/" + s.get_string("study.teacher")));
  CHECK(fs::exists("configs/" + s.get_string("study.student")));
  CHECK(Config::load("configs/" + s.get_string("study.teacher")).get_string("model.type") == "faster_rcnn");
  for (const auto& m : s.get_strings("study.methods")) {
    CAPTURE(m);
    const std::string f = "configs/" + s.get_string("methods." + m);
    REQUIRE(fs::exists(f));
    CHECK(kd_method_name(DistillConfig::from_config(Config::load(f)).method) == m);
  }
}

namespace {
// `kdet distill configs/kd_logit_roi_faster_r34_r18_tiny_synth.cfg` for 1 iteration (batch 1, fewer RPN
// proposals and R-CNN samples to keep it short) with a random teacher of type `type`; checks the log.
void cli_roi_logit_step(const std::string& type) {
  namespace fs = std::filesystem;
  const char* bin = test::kbin();
  if (!bin) {
    MESSAGE("KDET_BIN not set: kdet distill CLI test skipped (make test sets it)");
    return;
  }
  const std::string cfg = "configs/kd_logit_roi_faster_r34_r18_tiny_synth.cfg";
  REQUIRE(fs::exists(cfg));
  const test::TmpDir tmp("roi_logit_" + type);
  const std::string& d = tmp.path;
  {
    // A random teacher of the config's [teacher] section (type switched for the Cascade run).
    Config c = Config::load(cfg);
    c.set("teacher.type", type);
    auto teacher = build_detector(c, "teacher");
    Generator g(3);
    teacher->init_weights(g);
    const std::string tw = d + "/" + type + ".safetensors", wd = d + "/" + type;
    teacher->save(tw);
    const std::string cmd = std::string(bin) + " distill " + cfg + " --quiet --work-dir " + wd + " --set teacher.type=" +
                            type + " teacher.weights=" + tw + " data.synth_dir=" + d +
                            "/synth data.synth_train_images=2 data.synth_val_images=1 data.batch_size=1 "
                            "model.rpn_train_max_per_img=100 model.rcnn_sampler_num=64 train.max_iters=1 "
                            "train.log_interval=1 train.eval_at_end=false > " + d + "/out.txt 2>&1";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, slurp(d + "/out.txt"));
    const std::string log = slurp(wd + "/log.jsonl");
    CHECK(log.find("\"loss_logit_kd\"") != std::string::npos);
    CHECK(log.find("\"loss_rpn_cls\"") != std::string::npos);
    CHECK(fs::exists(wd + "/student.safetensors"));
    if (type != "faster_rcnn") return;
    // viz-kd on a two-stage pair (the study's picture step): FGD's maps on P2..P5, the distilled levels.
    std::string img;
    for (const auto& e : fs::recursive_directory_iterator(d + "/synth"))
      if (e.path().extension() == ".png" && img.empty()) img = e.path().string();
    REQUIRE(!img.empty());
    const std::string viz = std::string(bin) + " viz-kd " + cfg + " " + img + " --out " + d + "/viz --methods fgd --student " +
                            wd + "/student.safetensors --set teacher.weights=" + tw + " > " + d + "/viz.txt 2>&1";
    REQUIRE_MESSAGE(std::system(viz.c_str()) == 0, slurp(d + "/viz.txt"));
    for (int p = 2; p <= 5; ++p) CHECK_MESSAGE(fs::exists(d + "/viz/fgd_mask_bg_P" + std::to_string(p) + ".png"), p);
    CHECK_FALSE(fs::exists(d + "/viz/fgd_mask_bg_P6.png"));
  }
}
}  // namespace

TEST_CASE("kdet distill (CLI): RoI logit KD, Faster-R34 teacher -> Faster-R18 on tiny synth; loss_logit_kd logged; viz-kd P2-P5") {
  cli_roi_logit_step("faster_rcnn");
}

TEST_CASE("kdet distill (CLI): RoI logit KD, Cascade-R34 teacher -> Faster-R18 on tiny synth; loss_logit_kd logged") {
  cli_roi_logit_step("cascade_rcnn");
}
