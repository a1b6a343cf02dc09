// data/image.h — 8-bit RGB images (HWC) decoded with stb_image (JPEG, PNG, BMP, ...; grayscale and
// RGBA become 3-channel RGB) and PNGs written with stb_image_write.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kdet::data {

// The zeroed pixel buffer of a w x h RGB image. A request the machine cannot satisfy (a huge resize
// target, e.g. from data.img_scale) is a kdet::Error naming the size, not std::bad_alloc.
std::vector<uint8_t> alloc_pixels(int w, int h);

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> px;  // h * w * 3, row-major RGB
  Image() = default;
  Image(int w_, int h_) : w(w_), h(h_), px(alloc_pixels(w_, h_)) {}
  uint8_t* row(int y) { return px.data() + static_cast<size_t>(y) * w * 3; }
  const uint8_t* row(int y) const { return px.data() + static_cast<size_t>(y) * w * 3; }
  bool empty() const { return px.empty(); }
};

// Images above kMaxDecodePixels (8192 x 8192) are refused from their header, before the pixel
// buffer is allocated: a corrupt or hostile header must not ask for gigabytes.
constexpr int64_t kMaxDecodePixels = int64_t(1) << 26;

// Throws kdet::Error naming the file: missing/unreadable ("cannot open"), corrupt or unsupported
// ("cannot decode: <stb reason>"), larger than max_pixels ("exceeds the limit").
Image load_image(const std::string& path);
Image decode_image(const uint8_t* data, size_t n, const std::string& name, int64_t max_pixels = kMaxDecodePixels);
// Width and height from the header only (no decode). Throws like load_image.
void image_size(const std::string& path, int& w, int& h);
// Deterministic PNG (stb_image_write, fixed compression level): same pixels -> same bytes.
void write_png(const std::string& path, const Image& im);
std::vector<uint8_t> encode_png(const Image& im);

}  // namespace kdet::data
