#include "data/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

#include "engine/check.h"

namespace kdet::data {

namespace {
// kMaxDecodePixels: stb needs up to ~9 bytes per pixel while decoding (GIF: RGBA frame, background
// and history), + 3 for the Image: ~0.8 GB at the limit; a corrupt header must not ask for more.

// Two JPEG defects of stb_image 2.27 (Debian's libstb), both found by tests/fuzz/fuzz_image:
//  - it does not check that a Huffman table (DHT) declares at most 256 codes: stbi__build_huffman
//    then writes past its 257-entry size array into the rest of the decoder state (fixed in 2.28);
//  - it does not check that the Huffman tables a scan (SOS) selects were defined: the scan is decoded
//    with the never-initialised tables of its (malloc'd) decoder, which reads out of bounds or fails
//    an assertion (abort) in stbi__jpeg_huff_decode. libjpeg refuses such files.
// This walks the marker segments the way stb's decoder does (segments by length, entropy-coded data
// up to the next marker) and returns what is wrong ("" when neither), so that such a file is refused
// before stb sees it.
std::string jpeg_defect(const uint8_t* d, size_t n) {
  // stb's SOI test: 0xFF, any number of 0xFF fill bytes, 0xD8.
  size_t i = 1;
  if (n < 2 || d[0] != 0xFF) return "";
  while (i < n && d[i] == 0xFF) ++i;
  if (i >= n || d[i] != 0xD8) return "";
  ++i;
  auto at = [&](size_t k) -> unsigned { return k < n ? d[k] : 0; };  // stb reads 0 past the end
  bool defined[2][4] = {};  // [DC, AC][table id]
  bool have_sof = false, progressive = false;
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
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) {  // the SOFs stb decodes
      have_sof = true;
      progressive = m == 0xC2;
    }
    if (m == 0xC4) {
      int64_t left = static_cast<int64_t>(len) - 2;
      size_t p = i + 2;
      while (left > 0) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) return "";  // stb refuses the file here
        size_t codes = 0;
        for (int k = 1; k <= 16; ++k) codes += at(p + k);
        if (codes > 256) return "a Huffman table declares more than 256 codes";
        defined[q >> 4][q & 15] = true;
        left -= 17 + static_cast<int64_t>(codes);
        p += 17 + codes;
      }
      if (left != 0) return "";  // stb refuses an inconsistent DHT length
      i = p;
      continue;
    }
    if (m == 0xDA && have_sof) {  // SOS: Ns, Ns x (component, DC table << 4 | AC table), Ss, Se, Ah << 4 | Al
      const unsigned ns = at(i + 2), ss = at(i + 3 + 2 * ns), ah = at(i + 5 + 2 * ns) >> 4;
      for (unsigned k = 0; k < ns; ++k) {
        const unsigned sel = at(i + 4 + 2 * k), td = sel >> 4, ta = sel & 15;
        if (td > 3 || ta > 3) return "";  // stb refuses the file here
        // What stb decodes with: both tables (sequential); DC of a first DC scan; AC of an AC scan.
        const bool need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss != 0;
        if (need_dc && !defined[0][td]) return detail::cat("a scan uses DC Huffman table ", td, ", which is not defined");
        if (need_ac && !defined[1][ta]) return detail::cat("a scan uses AC Huffman table ", ta, ", which is not defined");
      }
    }
    i += len;
  }
  return "";
}

// Two PNM defects of stb_image 2.27, both found by tests/fuzz/fuzz_image (fixed upstream in 2.28):
//  - the numbers of a binary PNM header (P5/P6: width, height, maxval) are parsed into an int without
//    an overflow check (signed overflow, undefined behaviour);
//  - 16-bit samples (maxval > 255) are read in the wrong byte order (the low byte is kept), and a
//    16-bit grayscale file converted to RGB goes through the 8-bit converter, after which stb reads
//    twice the buffer it allocated (heap overflow).
// This reads the header the way stbi__pnm_info does (whitespace and # comments skipped; a digit is
// taken only while not at the end of the data; 0 past the end) and returns what is wrong ("" when
// neither), so that such a file is refused before stb sees it.
std::string pnm_defect(const uint8_t* d, size_t n) {
  if (n < 2 || d[0] != 'P' || (d[1] != '5' && d[1] != '6')) return "";
  size_t i = 2;
  auto eof = [&] { return i >= n; };
  auto get8 = [&]() -> char { return i < n ? static_cast<char>(d[i++]) : 0; };
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  char c = get8();
  int64_t v = 0;
  for (int field = 0; field < 3; ++field) {  // width, height, maxval
    for (;;) {  // stbi__pnm_skip_whitespace
      while (!eof() && space(c)) c = get8();
      if (eof() || c != '#') break;
      while (!eof() && c != '\n' && c != '\r') c = get8();
    }
    v = 0;  // stbi__pnm_getinteger
    while (!eof() && c >= '0' && c <= '9') {
      v = v * 10 + (c - '0');
      if (v > INT32_MAX) return "corrupt PNM header: a number above 2147483647";
      c = get8();
    }
  }
  if (v > 255 && v <= 65535)  // stb refuses larger ones itself
    return detail::cat("16-bit PNM (maxval ", v, ") is not supported: stb_image 2.27 decodes it wrongly; convert it to 8 bits");
  return "";
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

std::vector<uint8_t> alloc_pixels(int w, int h) {
  KDET_CHECK(w >= 0 && h >= 0, "image: bad size ", w, "x", h);
  const size_t n = static_cast<size_t>(w) * static_cast<size_t>(h) * 3;  // < 2^64 for any int w, h
  try {
    return std::vector<uint8_t>(n, 0);
  } catch (const std::bad_alloc&) {
  } catch (const std::length_error&) {
  }
  KDET_FAIL("out of memory: a ", w, "x", h, " RGB image needs ", n, " bytes (", static_cast<double>(n) / double(1 << 30),
            " GiB)");
}

void stbi_clear_failure_reason();  // data/stb_impl.cpp
extern thread_local size_t stbi_realloc_limit;  // data/stb_impl.cpp: cap on stb's buffer growth
extern thread_local bool stbi_realloc_refused;

Image decode_image(const uint8_t* data, size_t n, const std::string& name, int64_t max_pixels) {
  KDET_CHECK(n > 0, name, ": cannot decode image: empty file");
  KDET_CHECK(n <= static_cast<size_t>(INT32_MAX), name, ": cannot decode image: ", n, " bytes (stb reads < 2 GiB)");
  const std::string jpeg_bad = jpeg_defect(data, n);
  KDET_CHECK(jpeg_bad.empty(), name, ": cannot decode image (corrupt JPEG: ", jpeg_bad, ")");
  const std::string pnm_bad = pnm_defect(data, n);
  KDET_CHECK(pnm_bad.empty(), name, ": cannot decode image (", pnm_bad, ")");
  int w = 0, h = 0, c = 0;
  // The header is read first so that a corrupt or hostile size (stb accepts up to 2^24 per side) is
  // refused with a message before stb allocates the pixel buffer.
  const bool stb_header_ok = stbi_info_from_memory(data, static_cast<int>(n), &w, &h, &c);
  // (stb reads a BMP height as abs(int32): -2^31 stays negative)
  if (stb_header_ok) KDET_CHECK(w > 0 && h > 0, name, ": cannot decode image: it is ", w, "x", h, " pixels");
  if (stb_header_ok)
    KDET_CHECK(static_cast<int64_t>(w) * h <= max_pixels, name, ": image ", w, "x", h,
               " exceeds the limit of ", max_pixels, " pixels (corrupt header? tile or downscale larger images)");
  // stb's buffers grow (zlib output of a PNG; its compressed data) only as far as a valid image of this
  // size needs: twice 16-bit RGBA plus a filter byte per row and pass, or twice the file, + 1 MiB.
  // Beyond that the data is a decompression bomb or reads zeros past a truncated end (data/stb_impl.cpp).
  const int64_t cap_px = stb_header_ok ? static_cast<int64_t>(w) * h : max_pixels;
  const int64_t cap_rows = stb_header_ok ? h : max_pixels;
  struct GrowthCap {
    GrowthCap(size_t limit) { stbi_realloc_limit = limit, stbi_realloc_refused = false; }
    ~GrowthCap() { stbi_realloc_limit = SIZE_MAX; }
  } cap(static_cast<size_t>(std::max<int64_t>(2 * (8 * cap_px + 8 * cap_rows), 2 * static_cast<int64_t>(n)) +
                            (int64_t(1) << 20)));
  stbi_clear_failure_reason();
  unsigned char* p = stbi_load_from_memory(data, static_cast<int>(n), &w, &h, &c, 3);
  KDET_CHECK(p || !stbi_realloc_refused, name, ": cannot decode image (corrupt: its compressed data expands beyond ",
             stb_header_ok ? detail::cat("a ", cap_px / cap_rows, "x", cap_rows, " image") : detail::cat(max_pixels, " pixels"),
             ")");
  const char* why = stbi_failure_reason();
  KDET_CHECK(p, name, ": cannot decode image (", why && *why ? why : "corrupt or unsupported file", ")");
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
  stbi_clear_failure_reason();
  int ok = stbi_info_from_file(f, &w, &h, &c);
  std::fclose(f);
  const char* why = stbi_failure_reason();
  KDET_CHECK(ok, path, ": cannot read image header (", why && *why ? why : "corrupt or unsupported file", ")");
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
