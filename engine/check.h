// engine/check.h — errors. Every failed check throws kdet::Error with a message that names the op
// and the shapes/dtypes involved; nothing in kdet aborts on bad input.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kdet {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}
}  // namespace detail

}  // namespace kdet

// KDET_CHECK(cond, "conv2d: weight ", w.shape(), " vs input ", x.shape());
#define KDET_CHECK(cond, ...)                                           \
  do {                                                                  \
    if (!(cond)) throw ::kdet::Error(::kdet::detail::cat(__VA_ARGS__)); \
  } while (0)

#define KDET_FAIL(...) throw ::kdet::Error(::kdet::detail::cat(__VA_ARGS__))
