#include "detectors/roi_extractor.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/index_ops.h"
#include "engine/ops/shape_ops.h"

namespace kdet {

SingleRoIExtractor::SingleRoIExtractor(RoIExtractorConfig cfg) : cfg_(std::move(cfg)) {
  KDET_CHECK(!cfg_.featmap_strides.empty() && cfg_.out_size > 0 && cfg_.sampling_ratio >= 0 &&
                 cfg_.finest_scale > 0,
             "SingleRoIExtractor: bad config (", cfg_.featmap_strides.size(), " strides, out_size ", cfg_.out_size,
             ", sampling_ratio ", cfg_.sampling_ratio, ", finest_scale ", cfg_.finest_scale, ")");
  for (int64_t s : cfg_.featmap_strides) KDET_CHECK(s > 0, "SingleRoIExtractor: stride ", s, " must be positive");
}

namespace {
template <class T>
void map_levels(const T* r, int64_t k, T finest, int64_t num_levels, int64_t* out) {
  for (int64_t i = 0; i < k; ++i) {
    const T* b = r + i * 5;
    const T scale = std::sqrt((b[3] - b[1]) * (b[4] - b[2]));
    const T lvl = std::floor(std::log2(scale / finest + T(1e-6)));
    // A RoI with negative area (NaN scale; never produced by the RPN or the box coder) goes to level 0.
    int64_t l = std::isnan(lvl) ? 0 : static_cast<int64_t>(std::min<T>(std::max<T>(lvl, T(0)), T(num_levels - 1)));
    out[i] = l;
  }
}
}  // namespace

Tensor SingleRoIExtractor::map_roi_levels(const Tensor& rois_in) const {
  KDET_CHECK(rois_in.ndim() == 2 && rois_in.size(1) == 5 && rois_in.device().is_cpu(),
             "SingleRoIExtractor: rois must be CPU [K, 5] (batch index, x1, y1, x2, y2), got ", rois_in.desc());
  const int64_t k = rois_in.size(0);
  Tensor out = Tensor::empty({k}, DType::I64);
  if (rois_in.dtype() == DType::F64) {
    Tensor r = rois_in.contiguous();
    map_levels<double>(r.data<double>(), k, cfg_.finest_scale, num_inputs(), out.data<int64_t>());
  } else {
    Tensor r = rois_in.to(DType::F32).contiguous();
    map_levels<float>(r.data<float>(), k, static_cast<float>(cfg_.finest_scale), num_inputs(), out.data<int64_t>());
  }
  return out;
}

Var SingleRoIExtractor::forward(const std::vector<Var>& feats, const Tensor& rois_in) const {
  const int64_t L = num_inputs();
  KDET_CHECK(static_cast<int64_t>(feats.size()) >= L, "SingleRoIExtractor: ", feats.size(),
             " feature maps for ", L, " featmap strides");
  for (int64_t l = 0; l < L; ++l)
    KDET_CHECK(feats[l].ndim() == 4 && feats[l].size(1) == feats[0].size(1) && feats[l].size(0) == feats[0].size(0),
               "SingleRoIExtractor: level ", l, " map ", feats[l].data().desc(), " does not match level 0 ",
               feats[0].data().desc());
  const DType dt = feats[0].dtype();
  const Device dev = feats[0].device();  // rois are mapped to levels on the host, pooled where the maps are
  Tensor rois = rois_in.to(Device::cpu()).to(dt).contiguous();
  Tensor lv = map_roi_levels(rois);
  const int64_t K = rois.size(0), C = feats[0].size(1), S = cfg_.out_size;
  if (K == 0) return Var(Tensor::zeros({0, C, S, S}, dt, dev));
  const int64_t* pl = lv.data<int64_t>();
  std::vector<std::vector<int64_t>> members(L);
  for (int64_t i = 0; i < K; ++i) members[pl[i]].push_back(i);
  std::vector<Var> parts;
  std::vector<int64_t> order;  // RoI index of each row of the concatenated level outputs
  for (int64_t l = 0; l < L; ++l) {
    if (members[l].empty()) continue;
    const int64_t n = static_cast<int64_t>(members[l].size());
    RoIAlignArgs a;
    a.out_h = a.out_w = S;
    a.spatial_scale = 1.0 / static_cast<double>(cfg_.featmap_strides[l]);
    a.sampling_ratio = cfg_.sampling_ratio;
    a.aligned = cfg_.aligned;
    Tensor sub = n == K ? rois : ops::index_select(rois, 0, Tensor::from_vector(members[l], Shape{n}));
    parts.push_back(roi_align(feats[l], sub, a));  // host RoIs: RoIAlign computes its samples on the host
    order.insert(order.end(), members[l].begin(), members[l].end());
  }
  if (parts.size() == 1) return parts[0];  // one level: rows already in RoI order
  std::vector<int64_t> inv(K);
  for (int64_t j = 0; j < K; ++j) inv[order[j]] = j;
  return index_select(concat(parts, 0), 0, Tensor::from_vector(inv, Shape{K}));
}

}  // namespace kdet
