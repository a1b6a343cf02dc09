#include "detectors/point_assigner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/check.h"

namespace kdet {

AssignResult PointAssigner::assign(const Tensor& points_in, const Tensor& gt_in, const Tensor& gt_labels) const {
  KDET_CHECK(points_in.ndim() == 2 && points_in.size(1) >= 3, "PointAssigner::assign: points ", points_in.desc(),
             " must be [N, 3+] rows (x, y, stride)");
  KDET_CHECK(gt_in.ndim() == 2 && gt_in.size(1) >= 4, "PointAssigner::assign: gt boxes ", gt_in.desc(),
             " must be [G, 4]");
  KDET_CHECK(pos_num >= 1 && scale > 0, "PointAssigner: pos_num ", pos_num, " and scale ", scale,
             " must be positive");
  const Tensor pts = points_in.to(DType::F32).contiguous(), gt = gt_in.to(DType::F32).contiguous();
  const int64_t N = pts.size(0), G = gt.size(0), pk = pts.size(1), gk = gt.size(1);
  if (gt_labels.defined())
    KDET_CHECK(gt_labels.numel() == G, "PointAssigner::assign: ", gt_labels.desc(), " labels for ", G, " gt boxes");
  AssignResult r;
  r.num_gts = G;
  r.gt_inds = Tensor::zeros({N}, DType::I64);
  r.max_overlaps = Tensor::full({N}, std::numeric_limits<double>::infinity());
  r.labels = Tensor::full({N}, -1, DType::I64);
  if (G == 0 || N == 0) return r;
  const float* pp = pts.data<float>();
  const float* pg = gt.data<float>();
  int64_t* gi = r.gt_inds.data<int64_t>();
  float* dist_rec = r.max_overlaps.data<float>();
  std::vector<int> lvl(N);
  int lmin = std::numeric_limits<int>::max(), lmax = std::numeric_limits<int>::min();
  for (int64_t i = 0; i < N; ++i) {
    lvl[i] = static_cast<int>(std::log2(pp[i * pk + 2]));  // torch .int(): truncation
    lmin = std::min(lmin, lvl[i]), lmax = std::max(lmax, lvl[i]);
  }
  const float sc = static_cast<float>(scale);
  std::vector<int64_t> cand;
  std::vector<float> cd;
  for (int64_t g = 0; g < G; ++g) {
    const float* b = pg + g * gk;
    const float cx = (b[0] + b[2]) / 2.f, cy = (b[1] + b[3]) / 2.f;
    const float w = std::max(b[2] - b[0], 1e-6f), h = std::max(b[3] - b[1], 1e-6f);
    const float lv = (std::log2(w / sc) + std::log2(h / sc)) / 2.f;
    const int gl = std::clamp(static_cast<int>(lv), lmin, lmax);
    cand.clear(), cd.clear();
    for (int64_t i = 0; i < N; ++i) {
      if (lvl[i] != gl) continue;
      const float dx = (pp[i * pk] - cx) / w, dy = (pp[i * pk + 1] - cy) / h;
      cand.push_back(i);
      cd.push_back(std::sqrt(dx * dx + dy * dy));
    }
    const int64_t k = std::min<int64_t>(pos_num, static_cast<int64_t>(cand.size()));
    std::vector<int64_t> order(cand.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t a, int64_t c) { return cd[a] < cd[c] || (cd[a] == cd[c] && a < c); });
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = cand[order[j]];
      const float d = cd[order[j]];
      if (d < dist_rec[i]) {
        gi[i] = g + 1;
        dist_rec[i] = d;
      }
    }
  }
  if (gt_labels.defined()) {
    const Tensor gl = gt_labels.to(DType::I64).contiguous();
    const int64_t* pl = gl.data<int64_t>();
    int64_t* lab = r.labels.data<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      if (gi[i] > 0) lab[i] = pl[gi[i] - 1];
  }
  return r;
}

}  // namespace kdet
