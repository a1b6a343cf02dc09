// data/transforms.h — the mmdet train/test pipeline (specs/detectors.md §1.2–1.3) on the CPU:
// keep-ratio resize (mmcv.imrescale: cv2 INTER_LINEAR on uint8, half-pixel centres, OpenCV's
// fixed-point arithmetic), horizontal flip with box flip, normalize (mean/std, RGB), pad to a
// multiple of 32, collate to the batch max. Boxes follow the image; ImageMeta keeps what is needed
// to map detections back (box_to_original in data/types.h).
#pragma once
#include <array>
#include <utility>
#include <vector>

#include "data/image.h"
#include "data/types.h"

namespace kdet::data {

struct TransformConfig {
  int scale_long = 1333, scale_short = 800;  // mmdet img_scale=(1333, 800), keep_ratio=True
  std::array<float, 3> mean{123.675f, 116.28f, 103.53f};  // RGB order
  std::array<float, 3> std{58.395f, 57.12f, 57.375f};
  bool to_rgb = true;    // false: caffe style, channels in BGR order (mean/std given in BGR order)
  int size_divisor = 32;
};

// mmcv.rescale_size: sf = min(long / max(h, w), short / min(h, w)); new = int(x * sf + 0.5).
std::pair<int, int> rescale_size(int w, int h, int scale_long, int scale_short);  // (new_w, new_h)

// cv2.resize(..., interpolation=INTER_LINEAR) on 8-bit RGB, bit-exact with opencv-python 4.8:
// 11-bit fixed-point weights, horizontal pass in int32, vertical pass rounded like OpenCV's
// vectorised VResizeLinearVec_32s8u.
Image resize_bilinear(const Image& src, int new_w, int new_h);
void flip_horizontal(Image& im);
// x1' = w - x2, x2' = w - x1 (mmdet bbox_flip, w = image width)
void flip_boxes(std::vector<BoxAnn>& boxes, int w);
// mmcv.imnormalize + Pad: float32 CHW, (x - mean) * (1 / std), zero padding bottom/right to pad_h x pad_w.
Tensor normalize_pad(const Image& im, const TransformConfig& cfg, int pad_h, int pad_w);

struct PreparedImage {
  Tensor chw;  // f32 [3, pad_h, pad_w]
  ImageMeta meta;
  std::vector<BoxAnn> boxes;  // network-input coordinates
};
// resize (keep ratio) -> boxes * scale_factor, clipped to the resized image -> optional flip ->
// normalize -> pad to the size divisor.
PreparedImage prepare_image(const Image& im, std::vector<BoxAnn> boxes, const TransformConfig& cfg, bool flip);
// Stacks to [N, 3, H, W] with H, W the batch max (zero padding bottom/right).
Batch collate(std::vector<PreparedImage>&& items);

}  // namespace kdet::data
