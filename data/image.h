// data/image.h — 8-bit RGB images (HWC) decoded with stb_image (JPEG, PNG, BMP, ...; grayscale and
// RGBA become 3-channel RGB) and PNGs written with stb_image_write.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kdet::data {

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> px;  // h * w * 3, row-major RGB
  Image() = default;
  Image(int w_, int h_) : w(w_), h(h_), px(static_cast<size_t>(w_) * h_ * 3, 0) {}
  uint8_t* row(int y) { return px.data() + static_cast<size_t>(y) * w * 3; }
  const uint8_t* row(int y) const { return px.data() + static_cast<size_t>(y) * w * 3; }
  bool empty() const { return px.empty(); }
};

// Throws kdet::Error naming the file: missing/unreadable ("cannot open"), corrupt or unsupported
// ("cannot decode: <stb reason>").
Image load_image(const std::string& path);
Image decode_image(const uint8_t* data, size_t n, const std::string& name);
// Width and height from the header only (no decode). Throws like load_image.
void image_size(const std::string& path, int& w, int& h);
// Deterministic PNG (stb_image_write, fixed compression level): same pixels -> same bytes.
void write_png(const std::string& path, const Image& im);
std::vector<uint8_t> encode_png(const Image& im);

}  // namespace kdet::data
