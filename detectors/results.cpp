#include "detectors/results.h"

namespace kdet {

std::vector<data::Detection> to_coco_results(const data::Dataset& ds, int64_t image_id, const Detections& d) {
  std::vector<data::Detection> out;
  const int64_t k = d.size();
  if (k == 0) return out;
  Tensor b = d.boxes.to(Device::cpu()).to(DType::F32).contiguous(), s = d.scores.to(Device::cpu()).to(DType::F32).contiguous();
  auto lab = d.labels.to_vector<int64_t>();
  const float* pb = b.data<float>();
  const float* ps = s.data<float>();
  for (int64_t i = 0; i < k; ++i)
    out.push_back(data::make_detection(ds, image_id, lab[i], pb[i * 4], pb[i * 4 + 1], pb[i * 4 + 2], pb[i * 4 + 3],
                                       ps[i]));
  return out;
}

std::vector<data::Detection> to_coco_results(const data::Dataset& ds, const data::Batch& batch,
                                             const std::vector<Detections>& dets) {
  KDET_CHECK(dets.size() == batch.size(), "to_coco_results: ", dets.size(), " detection sets for a batch of ",
             batch.size());
  std::vector<data::Detection> out;
  for (size_t n = 0; n < dets.size(); ++n) {
    auto r = to_coco_results(ds, batch.metas[n].image_id, dets[n]);
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

}  // namespace kdet
