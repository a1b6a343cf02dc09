#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "data/transforms.h"
#include "engine/random.h"
#include "engine/safetensors.h"
#include "tests/fixtures.h"

using namespace kdet;
using namespace kdet::data;

namespace {
Image random_image(int w, int h, uint64_t seed) {
  Image im(w, h);
  Generator g(seed);
  for (auto& p : im.px) p = static_cast<uint8_t>(g.randint(0, 256));
  return im;
}
}  // namespace

TEST_CASE("transforms: mmdet keep-ratio rescale sizes (specs/detectors.md 1.2)") {
  CHECK(rescale_size(640, 480, 1333, 800) == std::pair<int, int>{1067, 800});
  CHECK(rescale_size(640, 427, 1333, 800) == std::pair<int, int>{1199, 800});
  CHECK(rescale_size(480, 640, 1333, 800) == std::pair<int, int>{800, 1067});
  CHECK(rescale_size(2000, 500, 1333, 800) == std::pair<int, int>{1333, 333});  // long side bound
  CHECK(rescale_size(640, 480, 800, 1333) == std::pair<int, int>{1067, 800});   // order of the scale pair is free
}

TEST_CASE("transforms: bilinear resize within 1 grey level of torch bilinear (half-pixel centres)") {
  auto f = test::load_fixture("data_resize");
  if (!f) return;
  int n = std::stoi(f->metadata.at("num_cases"));
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    const Tensor& in = f->at("case" + std::to_string(i) + ".input");
    auto want = f->at("case" + std::to_string(i) + ".output").to_vector<double>();
    Image im(static_cast<int>(in.size(1)), static_cast<int>(in.size(0)));
    auto v = in.to_vector<uint8_t>();
    std::copy(v.begin(), v.end(), im.px.begin());
    const Tensor& out = f->at("case" + std::to_string(i) + ".output");
    Image r = resize_bilinear(im, static_cast<int>(out.size(1)), static_cast<int>(out.size(0)));
    REQUIRE(r.px.size() == want.size());
    double maxd = 0, sum = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      double d = std::fabs(r.px[k] - want[k]);
      maxd = std::max(maxd, d);
      sum += d;
    }
    CHECK(maxd <= 1.0);
    CHECK(sum / want.size() < 0.35);
    auto cv = f->tensors.find("case" + std::to_string(i) + ".cv2");
    if (cv != f->tensors.end()) {  // OpenCV's own output (stored when cv2 was importable): bit-exact
      auto c = cv->second.to_vector<uint8_t>();
      REQUIRE(c.size() == r.px.size());
      size_t mism = 0;
      for (size_t k = 0; k < c.size(); ++k) mism += c[k] != r.px[k];
      CHECK(mism == 0);
    }
  }
}

TEST_CASE("transforms: bilinear resize bit-exact with cv2.resize INTER_LINEAR (committed fixture)") {
  const std::string path = "tests/data/data_resize_cv2.safetensors";  // written by tests/ref/data_resize_cv2.py
  std::ifstream probe(path);
  if (!probe.good()) {
    MESSAGE(path << " not found (run the tests from the repository root): cv2 bit-exactness not checked");
    return;
  }
  auto st = load_safetensors(path);
  int n = std::stoi(st.metadata.at("num_cases"));
  REQUIRE(n >= 6);
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    const Tensor& in = st.tensors.at("case" + std::to_string(i) + ".input");
    const Tensor& cv = st.tensors.at("case" + std::to_string(i) + ".cv2");
    Image im(static_cast<int>(in.size(1)), static_cast<int>(in.size(0)));
    auto v = in.to_vector<uint8_t>();
    std::copy(v.begin(), v.end(), im.px.begin());
    Image r = resize_bilinear(im, static_cast<int>(cv.size(1)), static_cast<int>(cv.size(0)));
    auto c = cv.to_vector<uint8_t>();
    REQUIRE(c.size() == r.px.size());
    size_t mism = 0;
    for (size_t k = 0; k < c.size(); ++k) mism += c[k] != r.px[k];
    CHECK(mism == 0);
  }
}

TEST_CASE("transforms: resize keeps constants, same size is a copy; flip is an involution") {
  Image c(13, 7);
  std::fill(c.px.begin(), c.px.end(), 77);
  Image r = resize_bilinear(c, 40, 3);
  for (auto p : r.px) CHECK(p == 77);
  Image a = random_image(9, 5, 1);
  CHECK(resize_bilinear(a, 9, 5).px == a.px);
  Image b = a;
  flip_horizontal(b);
  CHECK(b.row(2)[0] == a.row(2)[8 * 3]);
  CHECK(b.row(2)[8 * 3 + 2] == a.row(2)[2]);
  flip_horizontal(b);
  CHECK(b.px == a.px);
  std::vector<BoxAnn> boxes(1);
  boxes[0].x1 = 1, boxes[0].x2 = 4, boxes[0].y1 = 2, boxes[0].y2 = 3;
  flip_boxes(boxes, 9);
  CHECK(boxes[0].x1 == 5.f);  // 9 - 4
  CHECK(boxes[0].x2 == 8.f);  // 9 - 1
  CHECK(boxes[0].y1 == 2.f);
}

TEST_CASE("transforms: prepare_image (resize, boxes, flip, normalize, pad) and mapping back") {
  Image im = random_image(100, 60, 2);
  TransformConfig cfg;
  cfg.scale_long = 200, cfg.scale_short = 90;
  std::vector<BoxAnn> boxes(2);
  boxes[0].x1 = 10, boxes[0].y1 = 5, boxes[0].x2 = 50, boxes[0].y2 = 30;
  boxes[1].x1 = 80, boxes[1].y1 = 40, boxes[1].x2 = 120, boxes[1].y2 = 70;  // partly outside: clipped
  for (bool flip : {false, true}) {
    CAPTURE(flip);
    PreparedImage p = prepare_image(im, boxes, cfg, flip);
    const ImageMeta& m = p.meta;
    CHECK(m.img_w == 150);
    CHECK(m.img_h == 90);
    CHECK(m.pad_w == 160);
    CHECK(m.pad_h == 96);
    CHECK(m.scale_w == 1.5f);
    CHECK(m.ori_w == 100);
    CHECK(p.chw.shape() == Shape{3, 96, 160});
    // the second box is clipped to the resized image
    float x2 = flip ? m.img_w - p.boxes[1].x1 : p.boxes[1].x2;
    CHECK(x2 == 150.f);
    CHECK(p.boxes[1].y2 == 90.f);
    // mapping back gives the original box
    BoxAnn b = p.boxes[0];
    box_to_original(m, b.x1, b.y1, b.x2, b.y2);
    CHECK(b.x1 == doctest::Approx(10).epsilon(1e-6));
    CHECK(b.x2 == doctest::Approx(50).epsilon(1e-6));
    CHECK(b.y2 == doctest::Approx(30).epsilon(1e-6));
    // normalization of one pixel, zero padding
    Image r = resize_bilinear(im, 150, 90);
    if (flip) flip_horizontal(r);
    const float* d = p.chw.data<float>();
    int y = 17, x = 33;
    for (int c = 0; c < 3; ++c) {
      float want = (static_cast<float>(r.row(y)[x * 3 + c]) - cfg.mean[c]) * static_cast<float>(1.0 / cfg.std[c]);
      CHECK(d[(c * 96 + y) * 160 + x] == want);
      CHECK(d[(c * 96 + 95) * 160 + 5] == 0.f);
      CHECK(d[(c * 96 + 5) * 160 + 155] == 0.f);
    }
  }
  // collate pads to the batch max
  std::vector<PreparedImage> items;
  items.push_back(prepare_image(im, boxes, cfg, false));
  items.push_back(prepare_image(random_image(60, 100, 3), {}, cfg, false));
  Batch bt = collate(std::move(items));
  CHECK(bt.images.shape() == Shape{2, 3, 160, 160});
  CHECK(bt.metas[1].img_w == 90);
  CHECK(bt.gts[0].size() == 2);
  CHECK(bt.gts[1].empty());
}

#include <stb/stb_image_write.h>

TEST_CASE("image: grayscale PNG and JPEG decode to 3-channel RGB") {
  const int w = 7, h = 5;
  std::vector<uint8_t> gray(w * h);
  for (int i = 0; i < w * h; ++i) gray[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> png;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  REQUIRE(stbi_write_png_to_func(sink, &png, w, h, 1, gray.data(), w));
  Image g = decode_image(png.data(), png.size(), "gray.png");
  REQUIRE(g.w == w);
  REQUIRE(g.px.size() == static_cast<size_t>(w * h * 3));
  for (int i = 0; i < w * h; ++i) {
    CHECK(g.px[i * 3] == gray[i]);
    CHECK(g.px[i * 3 + 2] == gray[i]);
  }
  std::vector<uint8_t> jpg;
  Image flat(16, 16);
  std::fill(flat.px.begin(), flat.px.end(), 200);
  REQUIRE(stbi_write_jpg_to_func(sink, &jpg, 16, 16, 3, flat.px.data(), 95));
  Image j = decode_image(jpg.data(), jpg.size(), "flat.jpg");
  CHECK(j.w == 16);
  CHECK(std::abs(int(j.px[100]) - 200) <= 2);
  // PNG round trip of an RGB image is lossless
  Image r = random_image(11, 9, 4);
  auto enc = encode_png(r);
  CHECK(decode_image(enc.data(), enc.size(), "r.png").px == r.px);
  CHECK_THROWS_WITH_AS(decode_image(enc.data(), 20, "cut.png"), doctest::Contains("cut.png: cannot decode image"), Error);
}
