#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/check.h"

namespace kdet::data {

std::pair<int, int> rescale_size(int w, int h, int scale_long, int scale_short) {
  KDET_CHECK(w > 0 && h > 0, "rescale_size: bad image size ", w, "x", h);
  int max_long = std::max(scale_long, scale_short), max_short = std::min(scale_long, scale_short);
  double sf = std::min(static_cast<double>(max_long) / std::max(h, w), static_cast<double>(max_short) / std::min(h, w));
  int nw = static_cast<int>(w * sf + 0.5), nh = static_cast<int>(h * sf + 0.5);
  return {std::max(nw, 1), std::max(nh, 1)};
}

namespace {
constexpr int kCoefBits = 11, kCoefScale = 1 << kCoefBits;
inline short to_coef(float v) { return static_cast<short>(std::lrint(v * kCoefScale)); }  // saturate_cast<short>(float)
inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }
}  // namespace

Image resize_bilinear(const Image& src, int dw, int dh) {
  KDET_CHECK(src.w > 0 && src.h > 0 && dw > 0 && dh > 0, "resize_bilinear: ", src.w, "x", src.h, " -> ", dw, "x", dh);
  if (dw == src.w && dh == src.h) return src;
  const int sw = src.w, sh = src.h, cn = 3;
  const double scale_x = 1.0 / (static_cast<double>(dw) / sw), scale_y = 1.0 / (static_cast<double>(dh) / sh);
  std::vector<int> xofs(dw);
  std::vector<short> alpha(static_cast<size_t>(dw) * 2);
  for (int dx = 0; dx < dw; ++dx) {
    float fx = static_cast<float>((dx + 0.5) * scale_x - 0.5);
    int sx = static_cast<int>(std::floor(fx));
    fx -= static_cast<float>(sx);
    if (sx < 0) fx = 0, sx = 0;
    if (sx >= sw - 1) fx = 0, sx = sw - 1;
    xofs[dx] = sx;
    alpha[2 * dx] = to_coef(1.f - fx);
    alpha[2 * dx + 1] = to_coef(fx);
  }
  const int width = dw * cn;
  auto hresize = [&](int sy, std::vector<int>& buf) {
    const uint8_t* S = src.row(sy);
    for (int dx = 0; dx < dw; ++dx) {
      int sx = xofs[dx] * cn;
      int nx = std::min(xofs[dx] + 1, sw - 1) * cn;
      int a0 = alpha[2 * dx], a1 = alpha[2 * dx + 1];
      for (int c = 0; c < cn; ++c) buf[dx * cn + c] = S[sx + c] * a0 + S[nx + c] * a1;
    }
  };
  Image out(dw, dh);
  std::vector<int> b0(width), b1(width);
  int row0 = -1, row1 = -1;
  for (int dy = 0; dy < dh; ++dy) {
    float fy = static_cast<float>((dy + 0.5) * scale_y - 0.5);
    int sy = static_cast<int>(std::floor(fy));
    fy -= static_cast<float>(sy);
    short beta0 = to_coef(1.f - fy), beta1 = to_coef(fy);
    int r0 = std::clamp(sy, 0, sh - 1), r1 = std::clamp(sy + 1, 0, sh - 1);
    if (r0 != row0) {
      if (r0 == row1) std::swap(b0, b1), row0 = row1, row1 = -1;
      else hresize(r0, b0), row0 = r0;
    }
    if (r1 != row1) hresize(r1, b1), row1 = r1;
    uint8_t* D = out.row(dy);
    // OpenCV's vectorised vertical pass (VResizeLinearVec_32s8u): ((b0 >> 4) * beta0 >> 16) +
    // ((b1 >> 4) * beta1 >> 16), saturating int16 add, then (v + 2) >> 2 with u8 saturation. The
    // opencv-python 4.8 wheel gives exactly this for every value of the row (checked bit-exactly
    // against cv2.resize by tests/ref/gen_data_resize.py when cv2 is importable).
    for (int x = 0; x < width; ++x) {
      int s0 = static_cast<int16_t>(std::clamp(b0[x] >> 4, -32768, 32767));
      int s1 = static_cast<int16_t>(std::clamp(b1[x] >> 4, -32768, 32767));
      int v = ((s0 * beta0) >> 16) + ((s1 * beta1) >> 16);
      v = std::clamp(v, -32768, 32767);  // saturating int16 add
      D[x] = sat_u8((v + 2) >> 2);
    }
  }
  return out;
}

void flip_horizontal(Image& im) {
  for (int y = 0; y < im.h; ++y) {
    uint8_t* r = im.row(y);
    for (int a = 0, b = im.w - 1; a < b; ++a, --b)
      for (int c = 0; c < 3; ++c) std::swap(r[a * 3 + c], r[b * 3 + c]);
  }
}

void flip_boxes(std::vector<BoxAnn>& boxes, int w) {
  const float fw = static_cast<float>(w);
  for (auto& b : boxes) {
    float x1 = fw - b.x2, x2 = fw - b.x1;
    b.x1 = x1;
    b.x2 = x2;
  }
}

Tensor normalize_pad(const Image& im, const TransformConfig& cfg, int pad_h, int pad_w) {
  KDET_CHECK(pad_h >= im.h && pad_w >= im.w, "normalize_pad: pad ", pad_h, "x", pad_w, " smaller than image ", im.h,
             "x", im.w);
  Tensor t = Tensor::zeros({3, pad_h, pad_w});
  float* p = t.data<float>();
  for (int c = 0; c < 3; ++c) {
    // mmcv.imnormalize: cv2.subtract(img, mean); cv2.multiply(img, 1 / std) with float32 scalars
    const int src_c = cfg.to_rgb ? c : 2 - c;
    const float mean = cfg.mean[c];
    const float stdinv = static_cast<float>(1.0 / static_cast<double>(cfg.std[c]));
    for (int y = 0; y < im.h; ++y) {
      const uint8_t* r = im.row(y);
      float* o = p + (static_cast<size_t>(c) * pad_h + y) * pad_w;
      for (int x = 0; x < im.w; ++x) o[x] = (static_cast<float>(r[x * 3 + src_c]) - mean) * stdinv;
    }
  }
  return t;
}

PreparedImage prepare_image(const Image& im, std::vector<BoxAnn> boxes, const TransformConfig& cfg, bool flip) {
  PreparedImage out;
  auto [nw, nh] = rescale_size(im.w, im.h, cfg.scale_long, cfg.scale_short);
  Image r = resize_bilinear(im, nw, nh);
  ImageMeta& m = out.meta;
  m.ori_w = im.w;
  m.ori_h = im.h;
  m.img_w = nw;
  m.img_h = nh;
  m.scale_w = static_cast<float>(static_cast<double>(nw) / im.w);
  m.scale_h = static_cast<float>(static_cast<double>(nh) / im.h);
  for (auto& b : boxes) {
    b.x1 = std::clamp(b.x1 * m.scale_w, 0.f, static_cast<float>(nw));
    b.x2 = std::clamp(b.x2 * m.scale_w, 0.f, static_cast<float>(nw));
    b.y1 = std::clamp(b.y1 * m.scale_h, 0.f, static_cast<float>(nh));
    b.y2 = std::clamp(b.y2 * m.scale_h, 0.f, static_cast<float>(nh));
  }
  if (flip) {
    flip_horizontal(r);
    flip_boxes(boxes, nw);
  }
  m.flip = flip;
  const int d = std::max(cfg.size_divisor, 1);
  m.pad_h = (nh + d - 1) / d * d;
  m.pad_w = (nw + d - 1) / d * d;
  out.chw = normalize_pad(r, cfg, m.pad_h, m.pad_w);
  out.boxes = std::move(boxes);
  return out;
}

Batch collate(std::vector<PreparedImage>&& items) {
  Batch b;
  int H = 0, W = 0;
  for (auto& it : items) H = std::max(H, it.meta.pad_h), W = std::max(W, it.meta.pad_w);
  const int64_t N = static_cast<int64_t>(items.size());
  b.images = Tensor::zeros({N, 3, H, W});
  float* dst = b.images.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    auto& it = items[n];
    const float* s = it.chw.data<float>();
    const int ph = it.meta.pad_h, pw = it.meta.pad_w;
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < ph; ++y)
        std::memcpy(dst + ((n * 3 + c) * H + y) * W, s + (static_cast<size_t>(c) * ph + y) * pw, sizeof(float) * pw);
    b.metas.push_back(it.meta);
    b.gts.push_back(std::move(it.boxes));
  }
  return b;
}

}  // namespace kdet::data
