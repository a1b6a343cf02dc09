// data/stb_impl.cpp — the single translation unit that compiles stb_image and stb_image_write.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#include <cstdint>
#include <cstdlib>
#include <cstring>
// Every buffer stb_image allocates starts zeroed. stb 2.27 leaves the pixels a truncated file does not
// have (PNM, TGA rows; JPEG components no scan covers) as they come from malloc: the same file then
// decodes to different, uninitialised pixels from run to run (found by tests/fuzz/fuzz_image). Zeroed,
// they are black, every time.
namespace kdet::data {
// stb's zlib decoder (PNG) reads zeros past the end of a truncated or crafted stream and can go on
// producing output, doubling its buffer up to 2 GB: a 69-byte PNG took 11 s and 1.8 GB (found by
// tests/fuzz/fuzz_image). Its buffer only grows through STBI_REALLOC_SIZED, and a valid image never
// needs more than a small multiple of its pixel size: data/image.cpp sets this cap per decode (from the
// header's size); a growth beyond it fails (stb: "outofmem") and sets stbi_realloc_refused.
thread_local size_t stbi_realloc_limit = SIZE_MAX;
thread_local bool stbi_realloc_refused = false;
}  // namespace kdet::data

static void* kdet_stbi_realloc_zeroed(void* p, size_t old_size, size_t new_size) {
  if (new_size > kdet::data::stbi_realloc_limit) {
    kdet::data::stbi_realloc_refused = true;
    return nullptr;  // stb frees p on this path
  }
  void* q = std::realloc(p, new_size);
  if (q && new_size > old_size) std::memset(static_cast<char*>(q) + old_size, 0, new_size - old_size);
  return q;
}
#define STBI_MALLOC(sz) std::calloc(1, sz)
#define STBI_REALLOC_SIZED(p, oldsz, newsz) kdet_stbi_realloc_zeroed(p, oldsz, newsz)
#define STBI_FREE(p) std::free(p)
// stb 2.27 (and later versions) copies zero bytes to a null buffer for a PNG whose first IDAT chunk is
// empty: memcpy(NULL, src, 0), undefined behaviour (UBSan: nonnull), harmless in practice (found by
// tests/fuzz/fuzz_image). stb_image's own memcpy calls go through this instead.
static void* kdet_stbi_memcpy(void* dst, const void* src, size_t n) { return n ? std::memcpy(dst, src, n) : dst; }
#define memcpy kdet_stbi_memcpy
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
#undef memcpy

namespace kdet::data {
// Some of stb's failure paths return without setting a reason (or leave "" from probing other formats):
// data/image.cpp clears it before each decode so that it never reports an unrelated, older reason.
void stbi_clear_failure_reason() { stbi__g_failure_reason = nullptr; }
}  // namespace kdet::data
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
