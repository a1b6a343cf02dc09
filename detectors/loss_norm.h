// detectors/loss_norm.h — mmdet's loss normalisation by avg_factor, with the per-GPU grouping that
// images_per_group emulates on one device (specs/detectors.md 5).
//
// Each image n contributes af_n to the avg_factor (dense heads: max(#pos, 1), plus max(#neg, 1) with
// sampling). Without grouping the loss is Σ per-row losses / (Σ_n af_n + eps). With images_per_group k
// (and more than k images), the images are split into G = ceil(N / k) consecutive groups, each group's
// loss uses its own avg_factor, and the result is the mean over groups (what DDP's gradient averaging
// over G GPUs gives). This is expressed as a weight per image: 1 / (G · (Σ_{n in group} af_n + eps)).
#pragma once
#include <vector>

#include "engine/autograd.h"

namespace kdet {

// Per-image normalisers (see above); k <= 0 or k >= N: one group.
std::vector<double> group_norms(const std::vector<double>& per_image_af, int64_t k, double eps);

// Σ_r per[r] · norms[rows[r] / rows_per_image] · scale, per = [R, ...] per-row losses, rows = the row
// index (image-major, rows_per_image rows per image) of each of them.
Var normalised_sum(const Var& per, const std::vector<int64_t>& rows, int64_t rows_per_image,
                   const std::vector<double>& norms, double scale);

}  // namespace kdet
