#include "data/coco_eval.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "data/coco.h"
#include "engine/check.h"

namespace kdet::data {

namespace {
// numpy.linspace(start, stop, num): y = arange(num) * ((stop - start) / (num - 1)) + start; y[-1] = stop
std::vector<double> np_linspace(double start, double stop, int num) {
  std::vector<double> y(static_cast<size_t>(num));
  double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) y[i] = static_cast<double>(i) * step + start;
  y[num - 1] = stop;
  return y;
}

struct Gt {
  double box[4];
  double area;
  bool crowd;
  int64_t id;
};
struct Dt {
  double box[4];
  double area;
  double score;
  int64_t id;
};

// maskApi.c bbIou
inline double bb_iou(const double* d, const double* g, double da, double ga, bool crowd) {
  double w = std::fmin(d[2] + d[0], g[2] + g[0]) - std::fmax(d[0], g[0]);
  if (w <= 0) return 0;
  double h = std::fmin(d[3] + d[1], g[3] + g[1]) - std::fmax(d[1], g[1]);
  if (h <= 0) return 0;
  double i = w * h;
  double u = crowd ? da : da + ga - i;
  return i / u;
}

// evaluateImg's result for one (category, area range, image)
struct EvalImg {
  bool present = false;
  std::vector<double> scores;  // sorted by score, cut to maxDets[-1]
  std::vector<uint8_t> flags;  // [t * D + d]: bit0 = matched to a gt with nonzero id, bit1 = ignored
  int64_t num_gt_not_ignored = 0;
};

double mean_over_valid(const std::vector<double>& v) {
  double s = 0;
  int64_t n = 0;
  for (double x : v)
    if (x > -1) {
      s += x;
      ++n;
    }
  return n ? s / static_cast<double>(n) : -1.0;
}
}  // namespace

CocoEvalParams::CocoEvalParams() {
  iou_thrs = np_linspace(0.5, 0.95, static_cast<int>(std::round((0.95 - 0.5) / 0.05)) + 1);
  rec_thrs = np_linspace(0.0, 1.0, static_cast<int>(std::round((1.0 - 0.0) / 0.01)) + 1);
}

const std::array<const char*, 12>& CocoMetrics::keys() {
  static const std::array<const char*, 12> k{"AP", "AP50", "AP75", "APs", "APm", "APl",
                                             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
  return k;
}

std::string CocoMetrics::to_json() const {
  std::string s = "{";
  auto st = stats();
  for (size_t i = 0; i < 12; ++i) s += detail::cat(i ? ", " : "", "\"", keys()[i], "\": ", format_double(st[i]));
  s += ", \"per_class\": {";
  for (size_t k = 0; k < per_class_ap.size(); ++k) {
    std::string name = k < class_names.size() ? class_names[k] : std::to_string(class_ids[k]);
    std::string esc;
    for (char c : name) {
      if (c == '"' || c == '\\') esc += '\\';
      if (static_cast<unsigned char>(c) >= 0x20) esc += c;
    }
    s += detail::cat(k ? ", " : "", "\"", esc, "\": ", format_double(per_class_ap[k]));
  }
  s += "}}\n";
  return s;
}

void CocoMetrics::print(FILE* f, bool per_class) const {
  auto st = stats();
  const char* lines[12] = {
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
      " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
      " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
      " Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
      " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]"};
  for (int i = 0; i < 12; ++i) std::fprintf(f, "%s = %.3f\n", lines[i], st[i]);
  if (per_class) {
    std::fprintf(f, "per-class AP (IoU=0.50:0.95, area=all, maxDets=100):\n");
    for (size_t k = 0; k < per_class_ap.size(); ++k)
      std::fprintf(f, "  %-20s %.3f\n", (k < class_names.size() ? class_names[k] : std::to_string(class_ids[k])).c_str(),
                   per_class_ap[k]);
  }
}

CocoMetrics coco_evaluate(const Dataset& gt, const std::vector<Detection>& dets, const CocoEvalParams& p,
                          CocoEvalArrays* arrays) {
  KDET_CHECK(!p.iou_thrs.empty() && !p.rec_thrs.empty() && !p.max_dets.empty() && !p.area_rngs.empty(),
             "coco_evaluate: empty parameter list");
  std::vector<int> max_dets = p.max_dets;
  std::sort(max_dets.begin(), max_dets.end());
  const int maxDet = max_dets.back();

  // imgIds = np.unique(gt image ids), catIds = np.unique(gt category ids)
  std::vector<int64_t> img_ids;
  for (const auto& im : gt.images) img_ids.push_back(im.id);
  std::sort(img_ids.begin(), img_ids.end());
  std::map<int64_t, size_t> img_pos;
  for (size_t i = 0; i < img_ids.size(); ++i) img_pos[img_ids[i]] = i;
  const size_t I = img_ids.size(), K = gt.categories.size();
  const int T = static_cast<int>(p.iou_thrs.size()), R = static_cast<int>(p.rec_thrs.size());
  const int A = static_cast<int>(p.area_rngs.size()), M = static_cast<int>(max_dets.size());

  // _prepare: per (category, image) buckets in file order
  std::vector<std::vector<Gt>> gts(K * I);
  std::vector<std::vector<Dt>> dts(K * I);
  for (const auto& im : gt.images) {
    size_t i = img_pos[im.id];
    for (const auto& a : im.anns) {
      Gt g;
      std::copy(a.xywh.begin(), a.xywh.end(), g.box);
      g.area = a.area;
      g.crowd = a.iscrowd;
      g.id = a.ann_id;
      gts[static_cast<size_t>(a.label) * I + i].push_back(g);
    }
  }
  for (size_t n = 0; n < dets.size(); ++n) {
    const Detection& d = dets[n];
    auto ip = img_pos.find(d.image_id);
    KDET_CHECK(ip != img_pos.end(), "coco_evaluate: detection ", n, " on image_id ", d.image_id,
               " which is not an image of ", gt.source);
    auto cp = gt.cat_to_label.find(d.category_id);
    if (cp == gt.cat_to_label.end()) continue;  // pycocotools evaluates only the ground truth's categories
    Dt t;
    std::copy(d.bbox.begin(), d.bbox.end(), t.box);
    t.area = d.bbox[2] * d.bbox[3];
    t.score = d.score;
    t.id = static_cast<int64_t>(n) + 1;
    dts[static_cast<size_t>(cp->second) * I + ip->second].push_back(t);
  }

  // evaluate: evalImgs[k][a][i]
  std::vector<EvalImg> evals(K * A * I);
  const int64_t KI = static_cast<int64_t>(K * I);
#pragma omp parallel for schedule(static)
  for (int64_t ki = 0; ki < KI; ++ki) {
    size_t k = static_cast<size_t>(ki) / I, i = static_cast<size_t>(ki) % I;
    const auto& g = gts[ki];
    const auto& dall = dts[ki];
    if (g.empty() && dall.empty()) continue;
    // dt sorted by score (stable), cut to maxDet
    std::vector<size_t> order(dall.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return -dall[a].score < -dall[b].score; });
    if (order.size() > static_cast<size_t>(maxDet)) order.resize(static_cast<size_t>(maxDet));
    const size_t D = order.size(), G = g.size();
    std::vector<double> ious(D * G);
    for (size_t d = 0; d < D; ++d) {
      const Dt& dt = dall[order[d]];
      double da = dt.box[2] * dt.box[3];
      for (size_t j = 0; j < G; ++j) ious[d * G + j] = bb_iou(dt.box, g[j].box, da, g[j].box[2] * g[j].box[3], g[j].crowd);
    }
    for (int a = 0; a < A; ++a) {
      const double lo = p.area_rngs[a][0], hi = p.area_rngs[a][1];
      EvalImg& e = evals[(k * A + a) * I + i];
      e.present = true;
      std::vector<uint8_t> gig(G);
      for (size_t j = 0; j < G; ++j) gig[j] = (g[j].crowd || g[j].area < lo || g[j].area > hi) ? 1 : 0;
      std::vector<size_t> gind(G);
      std::iota(gind.begin(), gind.end(), 0);
      std::stable_sort(gind.begin(), gind.end(), [&](size_t x, size_t y) { return gig[x] < gig[y]; });
      std::vector<uint8_t> gtIg(G), crowd(G);
      for (size_t j = 0; j < G; ++j) {
        gtIg[j] = gig[gind[j]];
        crowd[j] = g[gind[j]].crowd;
        if (!gtIg[j]) ++e.num_gt_not_ignored;
      }
      e.scores.resize(D);
      for (size_t d = 0; d < D; ++d) e.scores[d] = dall[order[d]].score;
      e.flags.assign(static_cast<size_t>(T) * D, 0);
      std::vector<uint8_t> gtm(G);
      for (int t = 0; t < T; ++t) {
        std::fill(gtm.begin(), gtm.end(), 0);
        for (size_t d = 0; d < D && G > 0; ++d) {
          double iou = std::min(p.iou_thrs[t], 1 - 1e-10);
          long m = -1;
          for (size_t j = 0; j < G; ++j) {
            if (gtm[j] && !crowd[j]) continue;
            if (m > -1 && gtIg[m] == 0 && gtIg[j] == 1) break;
            double v = ious[d * G + gind[j]];
            if (v < iou) continue;
            iou = v;
            m = static_cast<long>(j);
          }
          if (m == -1) continue;
          uint8_t fl = 0;
          if (gtIg[m]) fl |= 2;
          if (g[gind[m]].id != 0) fl |= 1;  // pycocotools stores the gt id: id 0 reads as "unmatched"
          e.flags[t * D + d] = fl;
          gtm[m] = 1;
        }
      }
      // unmatched detections outside the area range are ignored
      for (size_t d = 0; d < D; ++d) {
        const Dt& dt = dall[order[d]];
        bool out = dt.area < lo || dt.area > hi;
        if (!out) continue;
        for (int t = 0; t < T; ++t)
          if (!(e.flags[t * D + d] & 1)) e.flags[t * D + d] |= 2;
      }
    }
  }

  // accumulate
  CocoEvalArrays arr;
  arr.T = T, arr.R = R, arr.K = static_cast<int>(K), arr.A = A, arr.M = M;
  arr.precision.assign(static_cast<size_t>(T) * R * K * A * M, -1.0);
  arr.recall.assign(static_cast<size_t>(T) * K * A * M, -1.0);
  auto pidx = [&](int t, int r, size_t k, int a, int m) {
    return (((static_cast<size_t>(t) * R + r) * K + k) * A + a) * M + m;
  };
  auto ridx = [&](int t, size_t k, int a, int m) { return ((static_cast<size_t>(t) * K + k) * A + a) * M + m; };
  const int64_t KA = static_cast<int64_t>(K) * A;
#pragma omp parallel for schedule(static)
  for (int64_t ka = 0; ka < KA; ++ka) {
    size_t k = static_cast<size_t>(ka / A);
    int a = static_cast<int>(ka % A);
    for (int m = 0; m < M; ++m) {
      const size_t md = static_cast<size_t>(max_dets[m]);
      std::vector<double> sc;
      std::vector<const EvalImg*> src;
      std::vector<uint32_t> col;  // column within its EvalImg
      int64_t npig = 0;
      bool any = false;
      for (size_t i = 0; i < I; ++i) {
        const EvalImg& e = evals[(k * A + a) * I + i];
        if (!e.present) continue;
        any = true;
        npig += e.num_gt_not_ignored;
        size_t n = std::min(md, e.scores.size());
        for (size_t d = 0; d < n; ++d) {
          sc.push_back(e.scores[d]);
          src.push_back(&e);
          col.push_back(static_cast<uint32_t>(d));
        }
      }
      if (!any || npig == 0) continue;
      std::vector<size_t> inds(sc.size());
      std::iota(inds.begin(), inds.end(), 0);
      std::stable_sort(inds.begin(), inds.end(), [&](size_t x, size_t y) { return -sc[x] < -sc[y]; });
      const size_t nd = inds.size();
      std::vector<double> rc(nd), pr(nd);
      for (int t = 0; t < T; ++t) {
        double tp = 0, fp = 0;
        for (size_t j = 0; j < nd; ++j) {
          const EvalImg& e = *src[inds[j]];
          uint8_t fl = e.flags[t * e.scores.size() + col[inds[j]]];
          bool ig = fl & 2, mt = fl & 1;
          if (mt && !ig) tp += 1;
          if (!mt && !ig) fp += 1;
          rc[j] = tp / static_cast<double>(npig);
          pr[j] = tp / (fp + tp + 2.220446049250313e-16);
        }
        arr.recall[ridx(t, k, a, m)] = nd ? rc[nd - 1] : 0.0;
        for (size_t j = nd; j-- > 1;)
          if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
        for (int r = 0; r < R; ++r) {
          size_t pi = static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), p.rec_thrs[r]) - rc.begin());
          arr.precision[pidx(t, r, k, a, m)] = pi < nd ? pr[pi] : 0.0;
        }
      }
    }
  }

  // summarize
  auto find_m = [&](int md) {
    for (int m = 0; m < M; ++m)
      if (max_dets[m] == md) return m;
    return -1;
  };
  auto find_t = [&](double thr) {
    for (int t = 0; t < T; ++t)
      if (p.iou_thrs[t] == thr) return t;
    return -1;
  };
  auto summ = [&](bool ap, double iou_thr, int a, int md) {
    int m = find_m(md);
    if (m < 0 || a >= A) return -1.0;
    int t_only = iou_thr < 0 ? -2 : find_t(iou_thr);
    if (t_only == -1) return -1.0;
    std::vector<double> v;
    for (int t = 0; t < T; ++t) {
      if (t_only >= 0 && t != t_only) continue;
      for (size_t k = 0; k < K; ++k) {
        if (ap)
          for (int r = 0; r < R; ++r) v.push_back(arr.precision[pidx(t, r, k, a, m)]);
        else
          v.push_back(arr.recall[ridx(t, k, a, m)]);
      }
    }
    return mean_over_valid(v);
  };
  CocoMetrics out;
  // pycocotools: stats[0] uses maxDets=100 literally, the rest params.maxDets[0..2]
  const int md2 = M > 2 ? max_dets[2] : -1;
  out.AP = summ(true, -1, 0, 100);
  out.AP50 = summ(true, 0.5, 0, md2);
  out.AP75 = summ(true, 0.75, 0, md2);
  out.APs = summ(true, -1, 1, md2);
  out.APm = summ(true, -1, 2, md2);
  out.APl = summ(true, -1, 3, md2);
  out.AR1 = summ(false, -1, 0, max_dets[0]);
  out.AR10 = summ(false, -1, 0, M > 1 ? max_dets[1] : -1);
  out.AR100 = summ(false, -1, 0, md2);
  out.ARs = summ(false, -1, 1, md2);
  out.ARm = summ(false, -1, 2, md2);
  out.ARl = summ(false, -1, 3, md2);
  const int m_last = M - 1;
  for (size_t k = 0; k < K; ++k) {
    std::vector<double> v;
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < R; ++r) v.push_back(arr.precision[pidx(t, r, k, 0, m_last)]);
    out.per_class_ap.push_back(mean_over_valid(v));
    out.class_ids.push_back(gt.categories[k].id);
    out.class_names.push_back(gt.categories[k].name);
  }
  if (arrays) *arrays = std::move(arr);
  return out;
}

}  // namespace kdet::data
