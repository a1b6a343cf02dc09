#include "detectors/loss_norm.h"

#include <algorithm>

#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace kdet {

std::vector<double> group_norms(const std::vector<double>& af, int64_t k, double eps) {
  const int64_t N = static_cast<int64_t>(af.size());
  std::vector<double> w(N);
  const int64_t per = k > 0 && N > k ? k : std::max<int64_t>(N, 1);
  const int64_t G = (N + per - 1) / per;
  for (int64_t g = 0; g < G; ++g) {
    double s = 0;
    for (int64_t n = g * per; n < std::min(N, (g + 1) * per); ++n) s += af[n];
    for (int64_t n = g * per; n < std::min(N, (g + 1) * per); ++n) w[n] = 1.0 / (static_cast<double>(G) * (s + eps));
  }
  return w;
}

Var normalised_sum(const Var& per, const std::vector<int64_t>& rows, int64_t rows_per_image,
                   const std::vector<double>& norms, double scale) {
  KDET_CHECK(per.ndim() >= 1 && per.size(0) == static_cast<int64_t>(rows.size()) && rows_per_image > 0,
             "normalised_sum: ", per.data().desc(), " losses for ", rows.size(), " rows");
  std::vector<int64_t> ws(static_cast<size_t>(per.ndim()), 1);
  ws[0] = per.size(0);
  Tensor w = Tensor::empty(Shape(ws), DType::F64);
  double* p = w.data<double>();
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t n = rows[i] / rows_per_image;
    KDET_CHECK(n >= 0 && n < static_cast<int64_t>(norms.size()), "normalised_sum: row ", rows[i], " of image ", n,
               " with ", norms.size(), " normalisers");
    p[i] = norms[n] * scale;
  }
  return sum(per * Var(w.to(per.dtype()).to(per.device())));
}

}  // namespace kdet
