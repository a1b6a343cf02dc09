// data/synth.h — a synthetic detection data set: shapes of several classes (circle, square,
// triangle, ring, cross, diamond) in random colours and aspect ratios, from tiny (a few pixels) to
// large, overlapping (later shapes occlude earlier ones), on gradient backgrounds with clutter
// (lines, specks: not annotated) and pixel noise. Written as PNGs + a COCO instances JSON so it goes
// through exactly the loading path of real data.
//
// Annotations are modal, COCO style: bbox = the tight box of the shape's visible pixels, area =
// the visible pixel count; a shape less than 30% visible becomes a crowd (ignore) region.
// Deterministic per seed: image k is drawn from Generator(seed).fork(k), so the output is
// byte-identical for a seed whatever the number of threads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/types.h"

namespace kdet::data {

struct SynthConfig {
  int images = 200;
  int size = 256;  // images are size x size
  uint64_t seed = 0;
  int max_objects = 8;
  double noise_max = 10.0;  // per-image Gaussian pixel noise sigma drawn from [0, noise_max]
  // Additive options (the defaults reproduce the original set byte for byte):
  double min_radius = 3.0;      // object radius drawn log-uniformly from [min_radius, max(4, max_radius_frac * size)]
  double max_radius_frac = 0.4;
  int num_classes = 6;          // the first num_classes of synth_class_names()
  bool clutter = true;          // lines and specks
};

const std::vector<std::string>& synth_class_names();

struct SynthImage {
  Image image;
  std::vector<BoxAnn> anns;  // label, xywh, x1..y2, area, iscrowd/ignore; ann_id left 0
};
SynthImage synth_image(int index, const SynthConfig& cfg);

// The whole set in memory (images in `pixels`, file names "images/%06d.png", ids 1..N).
Dataset synth_dataset(const SynthConfig& cfg, std::vector<Image>* pixels = nullptr);
// Writes DIR/images/*.png and DIR/annotations.json; returns the data set as written.
Dataset write_synth(const SynthConfig& cfg, const std::string& dir);

}  // namespace kdet::data
