#include "data/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <memory>

#include "engine/check.h"

namespace kdet::data {

namespace {
// 8192 x 8192. stb needs up to ~9 bytes per pixel while decoding (GIF: RGBA frame, background and
// history), + 3 for the Image: ~0.8 GB at the limit; a corrupt header must not ask for more.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;

// stb_image 2.27 (Debian's libstb) does not check that a JPEG Huffman table (DHT) declares at most
// 256 codes: stbi__build_huffman then writes past its 257-entry size array into the rest of the
// decoder state (found by tests/fuzz/fuzz_image; fixed upstream in 2.28). This walks the marker
// segments the way stb's decoder does (segments by length, entropy-coded data up to the next marker)
// and reports a DHT with more than 256 codes, so such a file is refused before stb sees it.
bool jpeg_has_oversized_dht(const uint8_t* d, size_t n) {
  // stb's SOI test: 0xFF, any number of 0xFF fill bytes, 0xD8.
  size_t i = 1;
  if (n < 2 || d[0] != 0xFF) return false;
  while (i < n && d[i] == 0xFF) ++i;
  if (i >= n || d[i] != 0xD8) return false;
  ++i;
  auto at = [&](size_t k) -> unsigned { return k < n ? d[k] : 0; };  // stb reads 0 past the end
  while (i < n) {
    if (d[i] != 0xFF) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < n && d[j] == 0xFF) ++j;
    if (j >= n) break;
    const unsigned m = d[j];
    i = j + 1;
    if (m == 0x00 || (m >= 0xD0 && m <= 0xD7) || m == 0xD8 || m == 0x01) continue;  // stuffing, RSTn, SOI, TEM
    if (m == 0xD9) break;                                                              // EOI: stb stops here
    const size_t len = (at(i) << 8) | at(i + 1);
    if (m == 0xC4) {
      int64_t left = static_cast<int64_t>(len) - 2;
      size_t p = i + 2;
      while (left > 0) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) return false;  // stb refuses the file here
        size_t codes = 0;
        for (int k = 1; k <= 16; ++k) codes += at(p + k);
        if (codes > 256) return true;
        left -= 17 + static_cast<int64_t>(codes);
        p += 17 + codes;
      }
      if (left != 0) return false;  // stb refuses an inconsistent DHT length
      i = p;
      continue;
    }
    i += len;
  }
  return false;
}
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
  KDET_CHECK(n <= static_cast<size_t>(INT32_MAX), name, ": cannot decode image: ", n, " bytes (stb reads < 2 GiB)");
  KDET_CHECK(!jpeg_has_oversized_dht(data, n), name,
             ": cannot decode image (corrupt JPEG: a Huffman table declares more than 256 codes)");
  int w = 0, h = 0, c = 0;
  // The header is read first so that a corrupt or hostile size (stb accepts up to 2^24 per side) is
  // refused with a message before stb allocates the pixel buffer.
  if (stbi_info_from_memory(data, static_cast<int>(n), &w, &h, &c))
    KDET_CHECK(static_cast<int64_t>(w) * h <= kMaxImagePixels, name, ": image ", w, "x", h,
               " exceeds the limit of ", kMaxImagePixels, " pixels (corrupt header? tile or downscale larger images)");
  unsigned char* p = stbi_load_from_memory(data, static_cast<int>(n), &w, &h, &c, 3);
  KDET_CHECK(p, name, ": cannot decode image (", stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
  std::unique_ptr<unsigned char, void (*)(void*)> owned(p, stbi_image_free);  // freed on every path
  // stb accepts some headers that declare a 0-pixel side (e.g. a GIF): not an image we can train on.
  KDET_CHECK(w > 0 && h > 0, name, ": cannot decode image: it is ", w, "x", h, " pixels");
  Image im(w, h);
  std::memcpy(im.px.data(), p, im.px.size());
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
