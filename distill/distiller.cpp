#include "distill/distiller.h"

#include <algorithm>
#include <sstream>

#include "detectors/anchors.h"
#include "detectors/retina_head.h"
#include "detectors/two_stage.h"
#include "detectors/types.h"
#include "engine/check.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace kdet::kd {

// ---- methods -------------------------------------------------------------------------------------

namespace {
const std::vector<std::pair<std::string, KdMethod>>& method_table() {
  static const std::vector<std::pair<std::string, KdMethod>> t = {
      {"fitnet", KdMethod::FitNet}, {"logit_kd", KdMethod::LogitKD}, {"fgd", KdMethod::FGD},
      {"mgd", KdMethod::MGD},       {"amd", KdMethod::AMD},          {"dmkd", KdMethod::DMKD},
      {"ssim", KdMethod::SSIM},     {"fbkd", KdMethod::FBKD},        {"aid", KdMethod::AID}};
  return t;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

const std::vector<std::string>& kd_method_names() {
  static const std::vector<std::string> n = [] {
    std::vector<std::string> r;
    for (const auto& [k, m] : method_table()) r.push_back(k);
    return r;
  }();
  return n;
}

KdMethod parse_kd_method(const std::string& name) {
  for (const auto& [k, m] : method_table())
    if (k == name) return m;
  KDET_FAIL("unknown KD method '", name, "' (known: ", joined(kd_method_names()), ")");
}

const char* kd_method_name(KdMethod m) {
  for (const auto& [k, v] : method_table())
    if (v == m) return k.c_str();
  return "?";
}

std::vector<std::string> kd_component_names(KdMethod m) {
  switch (m) {
    case KdMethod::FitNet: return {"loss_fitnet"};
    case KdMethod::LogitKD: return {"loss_logit_kd"};
    case KdMethod::FGD: return {"loss_fgd_fg", "loss_fgd_bg", "loss_fgd_mask", "loss_fgd_rela"};
    case KdMethod::MGD: return {"loss_mgd"};
    case KdMethod::AMD: return {"loss_amd"};
    case KdMethod::DMKD: return {"loss_dmkd"};
    case KdMethod::SSIM: return {"loss_ssim"};
    case KdMethod::FBKD: return {"loss_fbkd_feat", "loss_fbkd_channel", "loss_fbkd_spatial", "loss_fbkd_nonlocal"};
    case KdMethod::AID: return {"loss_aid_feat", "loss_aid_channel", "loss_aid_spatial", "loss_aid_nonlocal"};
  }
  return {};
}

// ---- taps ----------------------------------------------------------------------------------------

namespace {
const std::vector<std::pair<std::string, TapKind>>& tap_table() {
  static const std::vector<std::pair<std::string, TapKind>> t = {
      {"backbone", TapKind::Backbone}, {"neck", TapKind::Neck},         {"neck_conv", TapKind::NeckConv},
      {"cls_score", TapKind::ClsScore}, {"bbox_pred", TapKind::BboxPred}, {"cls_feat", TapKind::ClsFeat},
      {"reg_feat", TapKind::RegFeat}};
  return t;
}
// NeckConv taps have the levels and channels of the FPN outputs.
TapKind shape_kind(TapKind k) { return k == TapKind::NeckConv ? TapKind::Neck : k; }
}  // namespace

TapRef parse_tap(const std::string& name) {
  const size_t dot = name.rfind('.');
  std::vector<std::string> kinds;
  for (const auto& [k, v] : tap_table()) kinds.push_back(k + ".<level>");
  KDET_CHECK(dot != std::string::npos && dot + 1 < name.size(), "unknown tap '", name,
             "' (known: ", joined(kinds), ")");
  const std::string kind = name.substr(0, dot), lvl = name.substr(dot + 1);
  KDET_CHECK(std::all_of(lvl.begin(), lvl.end(), [](char c) { return c >= '0' && c <= '9'; }) && lvl.size() <= 3,
             "tap '", name, "': level '", lvl, "' is not a non-negative integer");
  for (const auto& [k, v] : tap_table())
    if (k == kind) return TapRef{v, std::stoll(lvl), name};
  KDET_FAIL("unknown tap '", name, "' (known: ", joined(kinds), ")");
}

const Var& tap_value(const DetectorTaps& t, const TapRef& r) {
  const std::vector<Var>& v = t.of(r.kind);
  KDET_CHECK(r.level < static_cast<int64_t>(v.size()), "tap '", r.name, "': the forward pass produced ", v.size(),
             " levels");
  return v[static_cast<size_t>(r.level)];
}

// ---- config --------------------------------------------------------------------------------------

DistillConfig DistillConfig::defaults(KdMethod m, const std::string& student_arch, const std::string& teacher_arch) {
  DistillConfig c;
  c.method = m;
  // §1d RetinaNet row (FGDConfig defaults), §2d RetinaNet row (MGDConfig defaults), §3b/§4b (one-stage),
  // §5 λ_ssim = 1, §6 weights (FBKDConfig defaults), §7 β = 0.1, §8a mmrazor L2Loss(normalize=False).
  const bool two_stage = student_arch == "faster_rcnn" || student_arch == "cascade_rcnn";
  if (student_arch == "reppoints") {  // §1d RepPoints row
    c.fgd.alpha_fgd = 1.6e-3, c.fgd.beta_fgd = 8e-4, c.fgd.gamma_fgd = 8e-4, c.fgd.lambda_fgd = 8e-6;
  } else if (two_stage) {  // §1d Faster/Cascade rows; §2d, §3b, §4b Cascade -> Faster
    c.fgd.alpha_fgd = 5e-5, c.fgd.beta_fgd = 2.5e-5, c.fgd.gamma_fgd = 5e-5, c.fgd.lambda_fgd = 5e-7;
    c.mgd.alpha_mgd = 5e-7, c.mgd.lambda_mgd = 0.45;
    c.amd.alpha = 5e-7, c.amd.mask_ratio = 0.45;
    c.dmkd.alpha = 5e-7, c.dmkd.spatial_ratio = c.dmkd.channel_ratio = 0.45;
  }
  // The inheriting strategy needs the same neck and heads: on for same-family pairs (§0: off for
  // Cascade -> Faster).
  // Logit KD on a two-stage student: the R-CNN head's softmax logits (§8b "RoI heads with K+1 classes");
  // its dense head is the RPN (1 objectness logit per anchor), which carries no class knowledge.
  c.logit_target = two_stage ? LogitTarget::RoI : LogitTarget::Dense;
  c.inherit = (m == KdMethod::FGD || m == KdMethod::MGD || m == KdMethod::AMD || m == KdMethod::DMKD) &&
              student_arch == teacher_arch;
  return c;
}

DistillConfig DistillConfig::from_config(const Config& c, const std::string& sec) {
  auto k = [&](const char* n) { return sec + "." + n; };
  DistillConfig d = defaults(parse_kd_method(c.get_string(k("method"))), c.get_string("model.type", "retinanet"),
                             c.get_string("teacher.type", "retinanet"));
  if (c.has(k("taps"))) d.taps = c.get_strings(k("taps"));
  if (c.has(k("teacher_taps"))) d.teacher_taps = c.get_strings(k("teacher_taps"));
  d.inherit = c.get_bool(k("inherit"), d.inherit);
  d.seed = static_cast<uint64_t>(c.get_int(k("seed"), 0));
  d.teacher_weights = c.get_string("teacher.weights", "");
  switch (d.method) {
    case KdMethod::FGD: {
      d.fgd.temp = c.get_double(k("temp"), d.fgd.temp);
      d.fgd.alpha_fgd = c.get_double(k("alpha_fgd"), d.fgd.alpha_fgd);
      d.fgd.beta_fgd = c.get_double(k("beta_fgd"), d.fgd.beta_fgd);
      d.fgd.gamma_fgd = c.get_double(k("gamma_fgd"), d.fgd.gamma_fgd);
      d.fgd.lambda_fgd = c.get_double(k("lambda_fgd"), d.fgd.lambda_fgd);
      const std::string r = c.get_string(k("box_ref"), "img");
      KDET_CHECK(r == "img" || r == "pad", k("box_ref"), " must be img or pad, got '", r, "'");
      d.fgd_pad_ref = r == "pad";
      break;
    }
    case KdMethod::MGD:
      d.mgd.alpha_mgd = c.get_double(k("alpha_mgd"), d.mgd.alpha_mgd);
      d.mgd.lambda_mgd = c.get_double(k("lambda_mgd"), d.mgd.lambda_mgd);
      break;
    case KdMethod::AMD: {
      d.amd.alpha = c.get_double(k("alpha"), d.amd.alpha);
      d.amd.temp = c.get_double(k("temp"), d.amd.temp);
      d.amd.mask_ratio = c.get_double(k("mask_ratio"), d.amd.mask_ratio);
      d.amd.se_reduction = c.get_int(k("se_reduction"), d.amd.se_reduction);
      const std::string mm = c.get_string(k("mask_mode"), "topk");
      KDET_CHECK(mm == "topk" || mm == "mean", k("mask_mode"), " must be topk or mean, got '", mm, "'");
      d.amd.mask_mode = mm == "mean" ? AMDMaskMode::Mean : AMDMaskMode::TopK;
      break;
    }
    case KdMethod::DMKD:
      d.dmkd.alpha = c.get_double(k("alpha"), d.dmkd.alpha);
      d.dmkd.temp = c.get_double(k("temp"), d.dmkd.temp);
      d.dmkd.spatial_ratio = c.get_double(k("spatial_ratio"), d.dmkd.spatial_ratio);
      d.dmkd.channel_ratio = c.get_double(k("channel_ratio"), d.dmkd.channel_ratio);
      break;
    case KdMethod::SSIM:
      d.ssim.loss_weight = c.get_double(k("loss_weight"), d.ssim.loss_weight);
      d.ssim.window_size = c.get_int(k("window_size"), d.ssim.window_size);
      d.ssim.sigma = c.get_double(k("sigma"), d.ssim.sigma);
      break;
    case KdMethod::FBKD:
    case KdMethod::AID:
      d.fbkd.temp_s = c.get_double(k("temp_s"), d.fbkd.temp_s);
      d.fbkd.temp_c = c.get_double(k("temp_c"), d.fbkd.temp_c);
      d.fbkd.w_feat = c.get_double(k("w_feat"), d.fbkd.w_feat);
      d.fbkd.w_channel = c.get_double(k("w_channel"), d.fbkd.w_channel);
      d.fbkd.w_spatial = c.get_double(k("w_spatial"), d.fbkd.w_spatial);
      d.fbkd.w_nonlocal = c.get_double(k("w_nonlocal"), d.fbkd.w_nonlocal);
      d.fbkd.use_channel_mask = c.get_bool(k("use_channel_mask"), d.fbkd.use_channel_mask);
      if (d.method == KdMethod::AID) d.aid_beta = c.get_double(k("beta"), d.aid_beta);
      if (c.has(k("nonlocal_inter")) || c.has(k("nonlocal_pool"))) {
        const auto I = c.get_ints(k("nonlocal_inter")), P = c.get_ints(k("nonlocal_pool"));
        KDET_CHECK(I.size() == P.size(), k("nonlocal_inter"), " (", I.size(), " values) and ", k("nonlocal_pool"), " (",
                   P.size(), " values) must have one value per tap");
        for (size_t i = 0; i < I.size(); ++i) d.fbkd.nonlocal.push_back(NonLocalSpec{I[i], P[i]});
      }
      break;
    case KdMethod::FitNet: {
      d.fitnet.loss_weight = c.get_double(k("loss_weight"), d.fitnet.loss_weight);
      const std::string r = c.get_string(k("reduction"), "sum_over_batch");
      KDET_CHECK(r == "sum_over_batch" || r == "mean" || r == "sum", k("reduction"),
                 " must be sum_over_batch, mean or sum, got '", r, "'");
      d.fitnet.reduction = r == "mean" ? FitNetReduction::Mean
                           : r == "sum" ? FitNetReduction::Sum
                                        : FitNetReduction::SumOverBatch;
      break;
    }
    case KdMethod::LogitKD: {
      d.logit.T = c.get_double(k("T"), d.logit.T);
      d.logit_weight = c.get_double(k("loss_weight"), d.logit_weight);
      const std::string tg = c.get_string(k("logit_kd_target"), d.logit_target == LogitTarget::RoI ? "roi" : "dense");
      KDET_CHECK(tg == "roi" || tg == "dense", k("logit_kd_target"), " must be roi or dense, got '", tg, "'");
      d.logit_target = tg == "roi" ? LogitTarget::RoI : LogitTarget::Dense;
      if (d.logit_target == LogitTarget::RoI) {
        const std::string r = c.get_string(k("reduction"), "batchmean");
        KDET_CHECK(r == "batchmean" || r == "classmean" || r == "sum", k("reduction"),
                   " must be batchmean, classmean or sum, got '", r, "'");
        d.roi_reduction = r == "classmean" ? KLReduction::ClassMean : r == "sum" ? KLReduction::Sum : KLReduction::BatchMean;
        const std::string st = c.get_string(k("roi_teacher_stage"), "last");
        if (st == "last") d.roi_teacher_stage = kRoITeacherLast;
        else if (st == "mean") d.roi_teacher_stage = kRoITeacherMean;
        else {
          KDET_CHECK(!st.empty() && st.size() <= 2 && std::all_of(st.begin(), st.end(), [](char ch) { return ch >= '0' && ch <= '9'; }),
                     k("roi_teacher_stage"), " must be last, mean or a stage index, got '", st, "'");
          d.roi_teacher_stage = std::stoi(st);
        }
      }
      break;
    }
  }
  return d;
}

// ---- Distiller -----------------------------------------------------------------------------------

Distiller::Distiller(std::unique_ptr<Detector> teacher, std::unique_ptr<Detector> student, DistillConfig cfg)
    : teacher_(std::move(teacher)), student_(std::move(student)), cfg_(std::move(cfg)) {
  KDET_CHECK(teacher_ && student_, "Distiller: teacher and student are required");
  KDET_CHECK(teacher_.get() != student_.get(), "Distiller: the teacher and the student must be different objects");
  const char* mname = kd_method_name(cfg_.method);
  const Detector &sc = *student_, &tc = *teacher_;
  // Default taps: every FPN level (logit KD: every level's classification logits).
  // Default taps: the outputs of neck.fpn_convs.{i}.conv (§0): every FPN level of a one-stage detector
  // (P3-P7), P2-P5 of a two-stage one (its max-pooled P6 is not distilled); logit KD: every level's
  // classification logits.
  if (roi_logit()) {
    // RoI logit KD reads the R-CNN heads' logits, not taps (distiller.h).
    KDET_CHECK(cfg_.taps.empty() && cfg_.teacher_taps.empty(), "Distiller: logit_kd with logit_kd_target = roi reads "
               "the R-CNN heads' RoI logits; taps / teacher_taps must not be set (set logit_kd_target = dense to "
               "distil tapped dense-head logits)");
    KDET_CHECK(sc.two_stage() && tc.two_stage(), "Distiller: logit_kd_target = roi needs a two-stage student and "
               "teacher (got a ", sc.arch(), " student and a ", tc.arch(), " teacher; use logit_kd_target = dense)");
    KDET_CHECK(sc.num_classes() == tc.num_classes(), "Distiller: RoI logit KD needs the same classes: the student "
               "has ", sc.num_classes(), ", the teacher ", tc.num_classes());
    auto* t2 = dynamic_cast<const TwoStageDetector*>(teacher_.get());
    KDET_CHECK(t2 != nullptr, "Distiller: RoI logit KD: the ", tc.arch(), " teacher is not a TwoStageDetector");
    const int ns = static_cast<int>(t2->config().roi.stages.size());
    KDET_CHECK(cfg_.roi_teacher_stage == kRoITeacherLast || cfg_.roi_teacher_stage == kRoITeacherMean ||
                   (cfg_.roi_teacher_stage >= 0 && cfg_.roi_teacher_stage < ns),
               "Distiller: roi_teacher_stage ", cfg_.roi_teacher_stage, " out of range (the ", tc.arch(),
               " teacher has ", ns, " R-CNN stage(s))");
  }
  std::vector<std::string> sn = cfg_.taps;
  if (sn.empty() && !roi_logit()) {
    const bool logit = cfg_.method == KdMethod::LogitKD;
    int64_t L = sc.tap_levels(logit ? TapKind::ClsScore : TapKind::Neck);
    if (!logit && sc.two_stage()) L -= 1;
    for (int64_t i = 0; i < L; ++i) sn.push_back((logit ? "cls_score." : "neck_conv.") + std::to_string(i));
  }
  std::vector<std::string> tn = cfg_.teacher_taps.empty() ? sn : cfg_.teacher_taps;
  KDET_CHECK(sn.size() == tn.size(), "Distiller (", mname, "): ", sn.size(), " student taps but ", tn.size(),
             " teacher taps");
  for (size_t i = 0; i < sn.size(); ++i) {
    TapRef s = parse_tap(sn[i]), t = parse_tap(tn[i]);
    KDET_CHECK(s.level < sc.tap_levels(shape_kind(s.kind)), "Distiller: student tap '", s.name, "' does not exist (the student has ",
               sc.tap_levels(shape_kind(s.kind)), " levels of that kind)");
    KDET_CHECK(t.level < tc.tap_levels(shape_kind(t.kind)), "Distiller: teacher tap '", t.name, "' does not exist (the teacher has ",
               tc.tap_levels(shape_kind(t.kind)), " levels of that kind)");
    s_taps_.push_back(s);
    t_taps_.push_back(t);
    channels_.emplace_back(sc.tap_channels(shape_kind(s.kind), s.level), tc.tap_channels(shape_kind(t.kind), t.level));
  }
  cfg_.taps = sn;
  cfg_.teacher_taps = tn;
  const bool need_equal = cfg_.method == KdMethod::FBKD || cfg_.method == KdMethod::AID || cfg_.method == KdMethod::LogitKD;
  if (need_equal) {
    std::ostringstream bad;
    for (size_t i = 0; i < channels_.size(); ++i)
      if (channels_[i].first != channels_[i].second)
        bad << "\n  " << sn[i] << ": student " << channels_[i].first << " channels, teacher " << tn[i] << ": "
            << channels_[i].second;
    KDET_CHECK(bad.str().empty(), "Distiller: ", mname,
               " needs equal student and teacher channels (it has no align conv); channel mismatch at:", bad.str());
  }
  if (cfg_.method == KdMethod::LogitKD)
    for (size_t i = 0; i < sn.size(); ++i)
      KDET_CHECK(s_taps_[i].kind == TapKind::ClsScore && t_taps_[i].kind == TapKind::ClsScore, "Distiller: logit_kd taps "
                 "must be cls_score.<level>, got ", sn[i], " / ", tn[i]);

  switch (cfg_.method) {
    case KdMethod::FitNet: kd_ = std::make_unique<FitNetLoss>(channels_, cfg_.fitnet); break;
    case KdMethod::LogitKD: kd_ = std::make_unique<LevelModule>(); break;  // no parameters
    case KdMethod::FGD: kd_ = std::make_unique<FGDLoss>(channels_, cfg_.fgd); break;
    case KdMethod::MGD: kd_ = std::make_unique<MGDLoss>(channels_, cfg_.mgd); break;
    case KdMethod::AMD: kd_ = std::make_unique<AMDLoss>(channels_, cfg_.amd); break;
    case KdMethod::DMKD: kd_ = std::make_unique<DMKDLoss>(channels_, cfg_.dmkd); break;
    case KdMethod::SSIM: kd_ = std::make_unique<SSIMKDLoss>(channels_, cfg_.ssim); break;
    case KdMethod::FBKD:
    case KdMethod::AID: {
      if (cfg_.fbkd.nonlocal.empty()) cfg_.fbkd.nonlocal = fbkd_default_nonlocal(channels_.size());
      KDET_CHECK(cfg_.fbkd.nonlocal.size() == channels_.size(), "Distiller: ", cfg_.fbkd.nonlocal.size(),
                 " non-local specs for ", channels_.size(), " taps");
      if (cfg_.method == KdMethod::FBKD)
        kd_ = std::make_unique<FBKDLoss>(channels_[0].first, cfg_.fbkd);
      else
        kd_ = std::make_unique<AIDLoss>(channels_[0].first, AIDConfig{cfg_.fbkd, cfg_.aid_beta});
      break;
    }
  }
  // The teacher: frozen for good.
  teacher_->set_requires_grad(false);
  teacher_->eval();
  student_->train();
  kd_->train();
}

void Distiller::init_kd_weights(Generator& g) { kd_->init_weights(g); }

void Distiller::inherit_from_teacher() {
  KDET_CHECK(teacher_->arch() == student_->arch(), "inherit: the teacher is a ", teacher_->arch(),
             ", the student a ", student_->arch(), ": only a detector of the same kind can inherit the neck and heads"
             " (set inherit = false)");
  const TensorMap ts = teacher_->state_dict(), ss = student_->state_dict();
  const std::vector<std::string> prefixes = student_->inherit_prefixes();
  auto inherited = [&](const std::string& k) {
    for (const auto& p : prefixes)
      if (k.rfind(p, 0) == 0) return true;
    return false;
  };
  std::vector<std::string> problems;
  for (const auto& [k, v] : ss) {
    if (!inherited(k)) continue;
    auto it = ts.find(k);
    if (it == ts.end())
      problems.push_back(k + ": in the student " + v.desc() + ", not in the teacher");
    else if (it->second.shape() != v.shape())
      problems.push_back(k + ": teacher " + it->second.desc() + " vs student " + v.desc());
  }
  for (const auto& [k, v] : ts)
    if (inherited(k) && !ss.count(k)) problems.push_back(k + ": in the teacher " + v.desc() + ", not in the student");
  if (!problems.empty()) {
    std::string s;
    for (const auto& p : problems) s += "\n  " + p;
    KDET_FAIL("inherit: the teacher's neck and heads do not match the student's (", problems.size(), " problems):", s);
  }
  for (const auto& [k, v] : ss)
    if (inherited(k)) {
      Tensor dst = v;  // shares storage with the student
      dst.copy_(ts.at(k));
    }
}

void Distiller::train(bool on) {
  student_->train(on);
  kd_->train(on);
  teacher_->eval();
}

NamedParams Distiller::named_parameters() const {
  NamedParams p = student_->named_parameters("", /*trainable_only=*/true);
  NamedParams k = kd_->named_parameters("distill", true);
  p.insert(p.end(), k.begin(), k.end());
  return p;
}

TensorMap Distiller::state_dict() const {
  TensorMap sd = student_->state_dict();
  TensorMap k = kd_->state_dict("distill");
  sd.insert(k.begin(), k.end());
  return sd;
}

void Distiller::load_state_dict(const TensorMap& sd) {
  TensorMap s, k;
  const std::string pre = "distill.";
  for (const auto& [name, t] : sd) {
    if (name.compare(0, pre.size(), pre) == 0)
      k.emplace(name.substr(pre.size()), t);
    else
      s.emplace(name, t);
  }
  // All or nothing: each load is itself all-or-nothing; the KD module is restored if the student fails.
  TensorMap kd_before;
  for (const auto& [name, t] : kd_->state_dict()) kd_before[name] = t.clone();
  try {
    kd_->load_state_dict(k, true);
  } catch (const Error& e) {
    KDET_FAIL("Distiller: KD module state (distill.*) does not match: ", e.what());
  }
  try {
    student_->load_state_dict(s, true);
  } catch (const Error&) {
    kd_->load_state_dict(kd_before, true);
    throw;
  }
}

DetectorTaps Distiller::teacher_forward(const Tensor& images) {
  NoGradGuard ng;
  teacher_->eval();
  return teacher_->forward(Var(images));
}

Tensor Distiller::teacher_roi_logits(const DetectorTaps& tt, const Tensor& rois, const std::vector<ImageGeometry>& geo) {
  auto* t2 = dynamic_cast<TwoStageDetector*>(teacher_.get());
  KDET_CHECK(t2 != nullptr, "teacher_roi_logits: the ", teacher_->arch(), " teacher has no R-CNN head");
  KDET_CHECK(!tt.neck.empty(), "teacher_roi_logits: the teacher taps have no FPN features (run teacher_forward)");
  NoGradGuard ng;
  teacher_->eval();
  RoIHead& rh = t2->roi_head();
  if (cfg_.roi_teacher_stage == kRoITeacherMean) return rh.forward_rois(tt.neck, rois, geo).cls_score.data();
  const int stage = cfg_.roi_teacher_stage == kRoITeacherLast ? rh.num_stages() - 1 : cfg_.roi_teacher_stage;
  return rh.forward_stage(stage, tt.neck, rois.to(DType::F32).contiguous()).cls_score.data();
}

Tensor Distiller::teacher_per_image_loss(const data::Batch& b, const DetectorTaps& taps) {
  NoGradGuard ng;
  return teacher_->per_image_loss(b, taps);
}

KdResult Distiller::run_kd(const data::Batch& b, const std::vector<Var>& S, const std::vector<Tensor>& T,
                           const DetectorTaps& staps, DetectorTaps& ttaps, Tensor* teacher_loss, MidSink* mid) {
  switch (cfg_.method) {
    case KdMethod::FitNet: return static_cast<FitNetLoss&>(*kd_).forward(S, T, mid);
    case KdMethod::FGD: {
      std::vector<Tensor> boxes;
      std::vector<double> ref;
      for (size_t i = 0; i < b.size(); ++i) {
        std::vector<double> bv;
        for (const auto& a : b.gts[i])
          if (!a.ignore) bv.insert(bv.end(), {a.x1, a.y1, a.x2, a.y2});
        const int64_t n = static_cast<int64_t>(bv.size() / 4);
        boxes.push_back(n ? Tensor::from_vector(bv, {n, 4}) : Tensor::zeros({0, 4}, DType::F64));
        const auto& m = b.metas[i];
        if (cfg_.fgd_pad_ref) {
          ref.push_back(static_cast<double>(b.images.size(2)));
          ref.push_back(static_cast<double>(b.images.size(3)));
        } else {
          ref.push_back(m.img_h);
          ref.push_back(m.img_w);
        }
      }
      const Tensor ref_hw = Tensor::from_vector(ref, {static_cast<int64_t>(b.size()), 2});
      return static_cast<FGDLoss&>(*kd_).forward(S, T, boxes, ref_hw, mid);
    }
    case KdMethod::MGD: {
      Generator g = Generator(cfg_.seed).fork(static_cast<uint64_t>(step_));
      return static_cast<MGDLoss&>(*kd_).forward(S, T, MGDLoss::draw_rand(T, g), mid);
    }
    case KdMethod::AMD: return static_cast<AMDLoss&>(*kd_).forward(S, T, mid);
    case KdMethod::DMKD: return static_cast<DMKDLoss&>(*kd_).forward(S, T, mid);
    case KdMethod::SSIM: return static_cast<SSIMKDLoss&>(*kd_).forward(S, T, mid);
    case KdMethod::FBKD: return static_cast<FBKDLoss&>(*kd_).forward(S, T, mid);
    case KdMethod::AID: {
      Tensor lt = teacher_per_image_loss(b, ttaps);
      if (teacher_loss) *teacher_loss = lt;
      return static_cast<AIDLoss&>(*kd_).forward(S, T, lt, mid);
    }
    case KdMethod::LogitKD: {
      if (cfg_.logit_target == LogitTarget::RoI) {
        // The student's R-CNN logits on the RoIs it sampled this step; the teacher's on the same RoIs.
        const Var& s = staps.roi_cls_score;
        KDET_CHECK(s.defined() && staps.rois.defined(), "Distiller: RoI logit KD: the ", student_->arch(),
                   " student's loss() returned no RoI logits");
        const Tensor t = teacher_roi_logits(ttaps, staps.rois, Detector::geometry(b));
        ttaps.rois = staps.rois;
        ttaps.roi_cls_score = Var(t);
        KdResult r;
        if (s.size(0) == 0) {  // no sampled RoI (no proposal and no GT): nothing to distil
          r.loss = sum(s) * 0.0;
          return r;
        }
        r = logit_kd_kl(s, t, LogitKLConfig{cfg_.logit.T, cfg_.roi_reduction}, mid);
        r.loss = r.loss * cfg_.logit_weight;
        return r;
      }
      const int64_t K = student_->dense_cls_channels();
      Var s = RetinaHead::flatten_levels(S, K);
      Tensor t;
      {
        NoGradGuard ng;
        std::vector<Var> tv(T.begin(), T.end());
        t = RetinaHead::flatten_levels(tv, K).data();
      }
      LogitBCEConfig lc = cfg_.logit;
      lc.avg_factor = static_cast<double>(s.size(0));  // mean over anchor rows (documented choice)
      KdResult r = logit_kd_bce(s, t, Tensor(), lc, mid);
      r.loss = r.loss * cfg_.logit_weight;
      return r;
    }
  }
  KDET_FAIL("Distiller: unhandled method");
}

LossList Distiller::loss(const data::Batch& b, Extra* extra, MidSink* mid) {
  DetectorTaps st;
  LossList losses = student_->loss(b, &st);
  DetectorTaps tt = teacher_forward(b.images);
  std::vector<Var> S;
  std::vector<Tensor> T;
  for (size_t i = 0; i < s_taps_.size(); ++i) {
    S.push_back(tap_value(st, s_taps_[i]));
    T.push_back(tap_value(tt, t_taps_[i]).data());
  }
  Tensor tl;
  KdResult kd = run_kd(b, S, T, st, tt, &tl, mid);
  ++step_;
  const auto names = kd_component_names(cfg_.method);
  switch (cfg_.method) {
    case KdMethod::FGD: {
      const double w[4] = {cfg_.fgd.alpha_fgd, cfg_.fgd.beta_fgd, cfg_.fgd.gamma_fgd, cfg_.fgd.lambda_fgd};
      const char* terms[4] = {"fg_loss", "bg_loss", "mask_loss", "rela_loss"};
      for (int k = 0; k < 4; ++k) losses.emplace_back(names[static_cast<size_t>(k)], kd.terms.at(terms[k]) * w[k]);
      break;
    }
    case KdMethod::FBKD:
    case KdMethod::AID: {
      const char* terms[4] = {"kd_feat_loss", "kd_channel_loss", "kd_spatial_loss", "kd_nonlocal_loss"};
      for (int k = 0; k < 4; ++k) losses.emplace_back(names[static_cast<size_t>(k)], kd.terms.at(terms[k]));
      break;
    }
    default: losses.emplace_back(names[0], kd.loss); break;
  }
  if (extra) {
    extra->student_taps = std::move(st);
    extra->teacher_taps = std::move(tt);
    extra->kd = std::move(kd);
    extra->teacher_loss = tl;
  }
  return losses;
}

}  // namespace kdet::kd
