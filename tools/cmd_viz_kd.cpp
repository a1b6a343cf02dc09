// kdet viz-kd CONFIG IMAGE --out DIR [--student CKPT] [--methods a,b,...] [--score-thr T] [--set k=v ...]
//
// Pictures for people learning how the KD methods work: for one image, runs the config's teacher
// ([teacher] + teacher.weights) and student ([model]; random init unless --student), feeds their FPN
// levels to each method's loss module (defaults of specs/kd_losses.md) and writes, per method and per
// FPN level, the maps that method weights or masks its loss with, as a heat map over the image with a
// legend (title, colour bar, min / max):
//   fgd   mask_fg (foreground, 1/box-area), mask_bg (background, 1/#bg cells), att_spatial_t (teacher A^S)
//   mgd   keep (the random keep mask)          amd   keep (attention top-k masked), att_spatial_t
//   dmkd  keep_spatial, att_spatial_t, att_channel_t (channel weights as a strip)
//   fbkd  mask_spatial (M^S = (A^S_t + A^S_s)/2)   ssim  ssim_map (mean over channels)
//   aid   mask_spatial, with the image's instance weight exp(-β·L_T) in the title
// Boxes (FGD's masks, AID's teacher loss): --boxes (original-image pixels, optional class), else the
// teacher's detections with score >= --score-thr (default 0.3) on this image.
// Files: DIR/<method>_<map>_P<level>.png (P3..P7; two-stage students: P2..P5, the Distiller's default taps).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/transforms.h"
#include "detectors/build.h"
#include "distill/distiller.h"
#include "engine/check.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

namespace kdet::cli {

namespace {

const char* kVizUsage =
    "usage: kdet viz-kd CONFIG IMAGE --out DIR [--student CKPT] [--methods fgd,mgd,amd,dmkd,fbkd,ssim,aid]\n"
    "                   [--score-thr 0.3] [--boxes x1,y1,x2,y2[,label];...] [--set key=value ...]\n"
    "PNGs per FPN level of what each KD method sees on IMAGE (masks, attention, SSIM map, instance weights),\n"
    "with the CONFIG's teacher and student (see tools/cmd_viz_kd.cpp).\n";

// ---- a 3x5 pixel font for legends (digits, lower-case letters, a few symbols) --------------------
// Each glyph: 5 rows of 3 bits (MSB = left column).
int glyph(char c, int row) {
  static const char* kChars = "0123456789abcdefghijklmnopqrstuvwxyz.-:_=()/^,+ ";
  static const unsigned char kRows[][5] = {
      {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},  // 0-4
      {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},  // 5-9
      {2, 5, 7, 5, 5}, {6, 5, 6, 5, 6}, {7, 4, 4, 4, 7}, {6, 5, 5, 5, 6}, {7, 4, 6, 4, 7},  // a-e
      {7, 4, 6, 4, 4}, {7, 4, 5, 5, 7}, {5, 5, 7, 5, 5}, {7, 2, 2, 2, 7}, {1, 1, 1, 5, 7},  // f-j
      {5, 5, 6, 5, 5}, {4, 4, 4, 4, 7}, {5, 7, 7, 5, 5}, {6, 5, 5, 5, 5}, {7, 5, 5, 5, 7},  // k-o
      {7, 5, 7, 4, 4}, {7, 5, 5, 7, 1}, {6, 5, 6, 5, 5}, {7, 4, 7, 1, 7}, {7, 2, 2, 2, 2},  // p-t
      {5, 5, 5, 5, 7}, {5, 5, 5, 5, 2}, {5, 5, 7, 7, 5}, {5, 5, 2, 5, 5}, {5, 5, 2, 2, 2},  // u-y
      {7, 1, 2, 4, 7}, {0, 0, 0, 0, 2}, {0, 0, 7, 0, 0}, {0, 2, 0, 2, 0}, {0, 0, 0, 0, 7},  // z . - : _
      {0, 7, 0, 7, 0}, {1, 2, 2, 2, 1}, {4, 2, 2, 2, 4}, {1, 1, 2, 4, 4}, {2, 5, 0, 0, 0},  // = ( ) / ^
      {0, 0, 0, 2, 4}, {0, 2, 7, 2, 0}, {0, 0, 0, 0, 0}};                                  // , + space
  if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  const char* p = std::strchr(kChars, c);
  if (!p || !*p) return 0;
  return kRows[p - kChars][row];
}

void put_px(data::Image& im, int x, int y, const uint8_t rgb[3]) {
  if (x < 0 || y < 0 || x >= im.w || y >= im.h) return;
  uint8_t* q = im.row(y) + 3 * x;
  q[0] = rgb[0], q[1] = rgb[1], q[2] = rgb[2];
}

void draw_text(data::Image& im, int x, int y, const std::string& s, int scale, const uint8_t rgb[3]) {
  for (size_t i = 0; i < s.size(); ++i)
    for (int r = 0; r < 5; ++r) {
      const int bits = glyph(s[i], r);
      for (int c = 0; c < 3; ++c)
        if (bits & (4 >> c))
          for (int dy = 0; dy < scale; ++dy)
            for (int dx = 0; dx < scale; ++dx)
              put_px(im, x + static_cast<int>(i) * 4 * scale + c * scale + dx, y + r * scale + dy, rgb);
    }
}

// A perceptually ordered blue -> cyan -> yellow -> red ramp (t in [0, 1]).
void colormap(double t, uint8_t out[3]) {
  t = std::clamp(t, 0.0, 1.0);
  const double stops[5][3] = {{30, 20, 120}, {30, 140, 220}, {80, 220, 160}, {250, 230, 60}, {220, 40, 30}};
  const double f = t * 4;
  const int i = std::min(3, static_cast<int>(f));
  const double u = f - i;
  for (int k = 0; k < 3; ++k) out[k] = static_cast<uint8_t>(stops[i][k] * (1 - u) + stops[i + 1][k] * u + 0.5);
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, std::fabs(v) >= 1e-3 || v == 0 ? "%.4g" : "%.2e", v);
  return b;
}

// Heat map of `map` (H x W, row-major) over the network-input image `base` (blend 55%), each map cell
// covering the stride x stride pixels it sees; below: title, colour bar, min / max. `strip` (optional):
// a per-channel weight vector drawn as an extra colour strip.
data::Image upscale(const data::Image& im, int k) {
  data::Image out(im.w * k, im.h * k);
  for (int y = 0; y < out.h; ++y)
    for (int x = 0; x < out.w; ++x) std::memcpy(out.row(y) + 3 * x, im.row(y / k) + 3 * (x / k), 3);
  return out;
}

data::Image render(const data::Image& small, const std::vector<double>& map, int H, int W, const std::string& title,
                   const std::vector<double>& strip = {}) {
  // Small inputs (synthetic 64-128 px images) are enlarged so that cells and legend are readable.
  const data::Image base = small.w < 384 ? upscale(small, (384 + small.w - 1) / small.w) : small;
  double lo = *std::min_element(map.begin(), map.end()), hi = *std::max_element(map.begin(), map.end());
  const int scale = base.w >= 384 ? 2 : 1;
  const int legend_h = (strip.empty() ? 34 : 50) * scale;
  data::Image out(base.w, base.h + legend_h);
  for (int y = 0; y < base.h; ++y)
    for (int x = 0; x < base.w; ++x) {
      const int my = std::min(H - 1, y * H / base.h), mx = std::min(W - 1, x * W / base.w);
      const double v = map[static_cast<size_t>(my) * W + mx];
      uint8_t c[3];
      colormap(hi > lo ? (v - lo) / (hi - lo) : 0.5, c);
      const uint8_t* p = base.row(y) + 3 * x;
      uint8_t* q = out.row(y) + 3 * x;
      for (int k = 0; k < 3; ++k) q[k] = static_cast<uint8_t>(0.45 * p[k] + 0.55 * c[k] + 0.5);
    }
  const uint8_t white[3] = {255, 255, 255};
  const uint8_t dark[3] = {24, 24, 24};
  for (int y = base.h; y < out.h; ++y)
    for (int x = 0; x < out.w; ++x) put_px(out, x, y, dark);
  draw_text(out, 3 * scale, base.h + 3 * scale, title, scale, white);
  const int bar_y = base.h + 12 * scale, bar_w = std::max(16, out.w - 6 * scale);
  for (int x = 0; x < bar_w; ++x) {
    uint8_t c[3];
    colormap(static_cast<double>(x) / (bar_w - 1), c);
    for (int dy = 0; dy < 6 * scale; ++dy) put_px(out, 3 * scale + x, bar_y + dy, c);
  }
  const std::string lo_s = num(lo), hi_s = num(hi);
  draw_text(out, 3 * scale, bar_y + 8 * scale, lo_s, scale, white);
  draw_text(out, out.w - 3 * scale - static_cast<int>(hi_s.size()) * 4 * scale, bar_y + 8 * scale, hi_s, scale, white);
  if (!strip.empty()) {
    const double slo = *std::min_element(strip.begin(), strip.end()), shi = *std::max_element(strip.begin(), strip.end());
    const int sy = bar_y + 16 * scale;
    for (int x = 0; x < bar_w; ++x) {
      const size_t ci = std::min(strip.size() - 1, static_cast<size_t>(x) * strip.size() / static_cast<size_t>(bar_w));
      uint8_t c[3];
      colormap(shi > slo ? (strip[ci] - slo) / (shi - slo) : 0.5, c);
      for (int dy = 0; dy < 6 * scale; ++dy) put_px(out, 3 * scale + x, sy + dy, c);
    }
    draw_text(out, 3 * scale, sy + 8 * scale, "channels " + num(slo) + " to " + num(shi), scale, white);
  }
  return out;
}

// De-normalises the network input [3, H, W] of image 0 back to RGB bytes.
data::Image input_image(const Tensor& images, const data::TransformConfig& tf) {
  const int H = static_cast<int>(images.size(2)), W = static_cast<int>(images.size(3));
  data::Image im(W, H);
  const Tensor x = images.contiguous();
  const float* p = x.data<float>();
  for (int c = 0; c < 3; ++c) {
    const int oc = tf.to_rgb ? c : 2 - c;
    for (int y = 0; y < H; ++y)
      for (int xx = 0; xx < W; ++xx) {
        const double v = p[(static_cast<size_t>(c) * H + y) * W + xx] * tf.std[c] + tf.mean[c];
        im.row(y)[3 * xx + oc] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0) + 0.5);
      }
  }
  return im;
}

// [1, ..., H, W] map (first image); `channels_mean` averages a [1, C, H, W] map over C.
std::vector<double> plane(const Tensor& t, bool channels_mean = false) {
  const Tensor x = t.to(DType::F64).contiguous();
  const int64_t H = x.size(-2), W = x.size(-1);
  const std::vector<double> v = x.to_vector<double>();
  std::vector<double> out(static_cast<size_t>(H * W), 0.0);
  const int64_t C = channels_mean ? x.numel() / x.size(0) / (H * W) : 1;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H * W; ++i) out[static_cast<size_t>(i)] += v[static_cast<size_t>(c * H * W + i)] / C;
  return out;
}

}  // namespace

int cmd_viz_kd(int argc, char** argv) {
  std::string cfg_path, image_path, out_dir, student_ckpt, boxes_arg;
  std::vector<std::string> sets, methods = {"fgd", "mgd", "amd", "dmkd", "fbkd", "ssim", "aid"};
  double score_thr = 0.3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "viz-kd: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s", kVizUsage);
      return 0;
    } else if (a == "--out") out_dir = val();
    else if (a == "--student") student_ckpt = val();
    else if (a == "--score-thr") score_thr = std::stod(val());
    else if (a == "--boxes") boxes_arg = val();
    else if (a == "--methods") {
      methods.clear();
      std::string s = val();
      size_t p = 0;
      while (p <= s.size()) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        if (q > p) methods.push_back(s.substr(p, q - p));
        p = q + 1;
      }
    } else if (a == "--set") sets.push_back(val());
    else if (!a.empty() && a[0] == '-') KDET_FAIL("viz-kd: unknown option '", a, "'\n", kVizUsage);
    else if (cfg_path.empty()) cfg_path = a;
    else if (image_path.empty()) image_path = a;
    else KDET_FAIL("viz-kd: unexpected argument '", a, "'\n", kVizUsage);
  }
  KDET_CHECK(!cfg_path.empty() && !image_path.empty() && !out_dir.empty(), "viz-kd: CONFIG, IMAGE and --out are required\n",
             kVizUsage);
  for (const auto& m : methods) {
    const kd::KdMethod km = kd::parse_kd_method(m);
    KDET_CHECK(km != kd::KdMethod::FitNet && km != kd::KdMethod::LogitKD, "viz-kd: ", m,
               " has no masks or attention to show (methods with pictures: fgd mgd amd dmkd fbkd ssim aid)");
  }
  Config c = Config::load(cfg_path);
  train::apply_sets(c, sets);
  std::filesystem::create_directories(out_dir);

  const std::string tw = c.get_string("teacher.weights", "");
  KDET_CHECK(!tw.empty(), "viz-kd: teacher.weights is empty in ", cfg_path);
  const data::TransformConfig tf = train::transform_from_config(c);
  // Two copies of the image: FBKD/AID's non-local BatchNorm (training mode) needs more than one value
  // per channel on 1x1 levels. The pictures show image 0.
  std::vector<data::PreparedImage> items;
  const data::Image src = data::load_image(image_path);
  items.push_back(data::prepare_image(src, {}, tf, false));
  items.push_back(data::prepare_image(src, {}, tf, false));
  data::Batch batch = data::collate(std::move(items));
  std::vector<data::BoxAnn> given;  // --boxes, in original pixels -> network input
  for (size_t p = 0; p < boxes_arg.size();) {
    size_t q = boxes_arg.find(';', p);
    if (q == std::string::npos) q = boxes_arg.size();
    const std::string one = boxes_arg.substr(p, q - p);
    p = q + 1;
    if (one.empty()) continue;
    data::BoxAnn a;
    long label = 0;
    const int got = std::sscanf(one.c_str(), "%f,%f,%f,%f,%ld", &a.x1, &a.y1, &a.x2, &a.y2, &label);
    KDET_CHECK(got == 4 || got == 5, "viz-kd: --boxes entry '", one, "' is not x1,y1,x2,y2[,label]");
    const auto& m = batch.metas[0];
    a.x1 *= m.scale_w, a.x2 *= m.scale_w, a.y1 *= m.scale_h, a.y2 *= m.scale_h;
    a.label = label;
    given.push_back(a);
  }
  const data::Image base = input_image(batch.images, tf);

  bool boxes_ready = false;
  for (const auto& mname : methods) {
    auto teacher = build_detector(c, "teacher");
    load_detector_weights(*teacher, tw);
    auto student = build_detector(c);
    Generator g(0);
    student->init_weights(g);
    if (!student_ckpt.empty()) load_detector_weights(*student, student_ckpt);
    kd::DistillConfig dc = kd::DistillConfig::defaults(kd::parse_kd_method(mname));
    dc.teacher_weights = tw;
    // The Distiller's default taps: every FPN level P3..P7 of a one-stage student, P2..P5 of a two-stage
    // one (its max-pooled P6 is not distilled).
    const int64_t L = student->tap_levels(kd::TapKind::Neck) - (student->two_stage() ? 1 : 0);
    const int64_t p0 = student->two_stage() ? 2 : 3;  // P<p0> = level 0
    if (dc.method == kd::KdMethod::FBKD || dc.method == kd::KdMethod::AID) {
      // The spec's non-local pooling where the level is big enough, no pooling on small levels.
      auto specs = kd::fbkd_default_nonlocal(static_cast<size_t>(L));
      for (int64_t i = 0; i < L; ++i) {
        const int64_t s = (batch.images.size(2) >> (p0 + i));
        if (specs[static_cast<size_t>(i)].pool > s) specs[static_cast<size_t>(i)].pool = 1;
      }
      dc.fbkd.nonlocal = specs;
    }
    // FGD's boxes: the teacher's confident detections (network-input coordinates).
    // The boxes FGD rasterises and AID's teacher loss is measured against: --boxes, else the teacher's
    // confident detections (network-input coordinates, with their classes). Decided once.
    if (!boxes_ready) {
      if (!given.empty()) {
        batch.gts.assign(2, given);
        std::printf("boxes: %zu from --boxes\n", given.size());
      } else {
        teacher->eval();
        auto dets = teacher->predict(batch, /*rescale=*/false);
        batch.gts.assign(2, {});
        const auto bx = dets[0].boxes.to_vector<float>();
        const auto sc = dets[0].scores.to_vector<float>();
        const auto lb = dets[0].labels.to_vector<int64_t>();
        for (size_t k = 0; k < sc.size(); ++k)
          if (sc[k] >= score_thr) {
            data::BoxAnn a;
            a.x1 = bx[4 * k], a.y1 = bx[4 * k + 1], a.x2 = bx[4 * k + 2], a.y2 = bx[4 * k + 3];
            a.label = lb[k];
            batch.gts[0].push_back(a);
            batch.gts[1].push_back(a);
          }
        std::printf("boxes: %zu teacher detections with score >= %.2f\n", batch.gts[0].size(), score_thr);
      }
      boxes_ready = true;
    }
    kd::Distiller dist(std::move(teacher), std::move(student), dc);
    Generator gk(1);
    dist.init_kd_weights(gk);
    kd::MidSink mid;
    kd::Distiller::Extra ex;
    {
      NoGradGuard ng;
      dist.loss(batch, &ex, &mid);
    }
    auto emit = [&](const std::string& what, int64_t lvl, const std::vector<double>& map, int64_t H, int64_t W,
                    const std::string& title, const std::vector<double>& strip = {}) {
      const std::string path = out_dir + "/" + mname + "_" + what + "_P" + std::to_string(lvl + p0) + ".png";
      data::write_png(path, render(base, map, static_cast<int>(H), static_cast<int>(W), title, strip));
      std::printf("  %s\n", path.c_str());
    };
    std::string aid_note;
    if (dc.method == kd::KdMethod::AID && ex.teacher_loss.defined()) {
      const double lt = ex.teacher_loss.to(DType::F64).to_vector<double>()[0];
      aid_note = " w=" + num(std::exp(-dc.aid_beta * lt)) + " lt=" + num(lt);
    }
    std::printf("%s:\n", mname.c_str());
    for (int64_t i = 0; i < L; ++i) {
      const std::string lk = "level" + std::to_string(i) + ".";
      const std::string P = " p" + std::to_string(i + p0);
      auto get = [&](const std::string& k) -> const Tensor& {
        auto it = mid.find(lk + k);
        KDET_CHECK(it != mid.end(), "viz-kd: ", mname, " produced no '", lk + k, "'");
        return it->second;
      };
      auto hw = [&](const Tensor& t) { return std::make_pair(t.size(-2), t.size(-1)); };
      auto show = [&](const std::string& k, const std::string& title, bool cmean = false,
                      const std::vector<double>& strip = {}) {
        const Tensor& t = get(k);
        auto [H, W] = hw(t);
        emit(k, i, plane(t, cmean), H, W, title + P, strip);
      };
      switch (dc.method) {
        case kd::KdMethod::FGD:
          show("mask_fg", "fgd foreground mask (1/box area)");
          show("mask_bg", "fgd background mask (1/bg cells)");
          show("att_spatial_t", "fgd teacher spatial attention");
          break;
        case kd::KdMethod::MGD: show("keep", "mgd random keep mask (0 = masked)"); break;
        case kd::KdMethod::AMD:
          show("keep", "amd keep mask (top teacher attention masked)");
          show("att_spatial_t", "amd teacher spatial attention");
          break;
        case kd::KdMethod::DMKD: {
          show("keep_spatial", "dmkd spatial keep mask");
          const auto ch = get("att_channel_t").to(DType::F64).to_vector<double>();
          const int64_t C = get("att_channel_t").size(-1);
          show("att_spatial_t", "dmkd spatial + channel attention", false,
               std::vector<double>(ch.begin(), ch.begin() + C));
          break;
        }
        case kd::KdMethod::FBKD: show("mask_spatial", "fbkd attention mask (a_t + a_s)/2"); break;
        case kd::KdMethod::AID: show("mask_spatial", "aid attention mask" + aid_note); break;
        case kd::KdMethod::SSIM: show("ssim_map", "ssim map (channel mean)", true); break;
        default: break;
      }
    }
  }
  return 0;
}

}  // namespace kdet::cli
