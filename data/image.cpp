#include "data/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/check.h"

namespace kdet::data {

namespace {
std::vector<uint8_t> read_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  KDET_CHECK(f, path, ": cannot open image (", std::strerror(errno), ")");
  std::vector<uint8_t> b;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) b.insert(b.end(), buf, buf + n);
  std::fclose(f);
  return b;
}
}  // namespace

Image decode_image(const uint8_t* data, size_t n, const std::string& name) {
  KDET_CHECK(n > 0, name, ": cannot decode image: empty file");
  int w = 0, h = 0, c = 0;
  unsigned char* p = stbi_load_from_memory(data, static_cast<int>(n), &w, &h, &c, 3);
  KDET_CHECK(p, name, ": cannot decode image (", stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
  Image im(w, h);
  std::memcpy(im.px.data(), p, im.px.size());
  stbi_image_free(p);
  return im;
}

Image load_image(const std::string& path) {
  auto b = read_bytes(path);
  return decode_image(b.data(), b.size(), path);
}

void image_size(const std::string& path, int& w, int& h) {
  FILE* f = std::fopen(path.c_str(), "rb");
  KDET_CHECK(f, path, ": cannot open image (", std::strerror(errno), ")");
  int c = 0;
  int ok = stbi_info_from_file(f, &w, &h, &c);
  std::fclose(f);
  KDET_CHECK(ok, path, ": cannot read image header (", stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
}

std::vector<uint8_t> encode_png(const Image& im) {
  KDET_CHECK(im.w > 0 && im.h > 0 && im.px.size() == static_cast<size_t>(im.w) * im.h * 3, "encode_png: bad image ",
             im.w, "x", im.h);
  std::vector<uint8_t> out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  int ok = stbi_write_png_to_func(sink, &out, im.w, im.h, 3, im.px.data(), im.w * 3);
  KDET_CHECK(ok, "encode_png: stb_image_write failed");
  return out;
}

void write_png(const std::string& path, const Image& im) {
  auto b = encode_png(im);
  FILE* f = std::fopen(path.c_str(), "wb");
  KDET_CHECK(f, path, ": cannot open for writing (", std::strerror(errno), ")");
  size_t n = std::fwrite(b.data(), 1, b.size(), f);
  int rc = std::fclose(f);
  KDET_CHECK(n == b.size() && rc == 0, path, ": write failed");
}

}  // namespace kdet::data
