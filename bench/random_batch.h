// bench/random_batch.h — a random detection batch for the benchmarks and the [cuda] tests: n N(0,1) images
// of h x w (zero padding up to pad_h x pad_w is part of the tensor), `boxes` random boxes per image with
// sides in [min(h, w) * lo, min(h, w) * hi), inside the image, labels in [0, classes). The draws come in a
// fixed order (images, then per box: width, height, x1, y1, label), so a seed gives one batch.
#pragma once
#include <algorithm>

#include "data/types.h"
#include "engine/random.h"

namespace kdet::bench {

inline data::Batch random_detection_batch(int n, int h, int w, int pad_h, int pad_w, int64_t classes, int boxes,
                                          Generator& g, double lo = 1.0 / 16, double hi = 0.5) {
  data::Batch b;
  b.images = rand_normal({n, 3, pad_h, pad_w}, g);
  const double s = std::min(h, w);
  for (int i = 0; i < n; ++i) {
    data::ImageMeta m;
    m.image_id = i;
    m.index = static_cast<size_t>(i);
    m.ori_h = m.img_h = h;
    m.ori_w = m.img_w = w;
    m.pad_h = pad_h;
    m.pad_w = pad_w;
    b.metas.push_back(m);
    std::vector<data::BoxAnn> anns;
    for (int k = 0; k < boxes; ++k) {
      data::BoxAnn a;
      const float bw = static_cast<float>(g.uniform(s * lo, s * hi));
      const float bh = static_cast<float>(g.uniform(s * lo, s * hi));
      a.x1 = static_cast<float>(g.uniform(0, w - bw));
      a.y1 = static_cast<float>(g.uniform(0, h - bh));
      a.x2 = a.x1 + bw;
      a.y2 = a.y1 + bh;
      a.label = g.randint(0, classes);
      anns.push_back(a);
    }
    b.gts.push_back(anns);
  }
  return b;
}

}  // namespace kdet::bench
