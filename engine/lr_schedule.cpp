// engine/lr_schedule.cpp — see lr_schedule.h.
#include "engine/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "engine/check.h"
#include "engine/optim.h"

namespace kdet {

void LRSchedule::validate() const {
  KDET_CHECK(base_lr >= 0, "LRSchedule: negative base_lr ", base_lr);
  if (policy != LRPolicy::Constant && by_epoch)
    KDET_CHECK(iters_per_epoch > 0, "LRSchedule: by_epoch needs iters_per_epoch > 0, got ", iters_per_epoch);
  if (policy == LRPolicy::Step) {
    KDET_CHECK(gamma > 0, "LRSchedule: gamma must be positive, got ", gamma);
    for (size_t i = 1; i < steps.size(); ++i)
      KDET_CHECK(steps[i] > steps[i - 1], "LRSchedule: steps must increase (", steps[i - 1], ", ", steps[i], ")");
  }
  if (policy == LRPolicy::Cosine) {
    if (by_epoch)
      KDET_CHECK(max_epochs > 0, "LRSchedule: cosine by epoch needs max_epochs > 0, got ", max_epochs);
    else
      KDET_CHECK(max_iters > 0, "LRSchedule: cosine by iteration needs max_iters > 0, got ", max_iters);
  }
  if (warmup != LRWarmup::None) {
    KDET_CHECK(warmup_iters > (warmup == LRWarmup::LinearMmengine ? 1 : 0),
               "LRSchedule: warmup_iters must be positive (> 1 for LinearMmengine), got ", warmup_iters);
    KDET_CHECK(warmup_ratio > 0 && warmup_ratio <= 1, "LRSchedule: warmup_ratio must be in (0, 1], got ",
               warmup_ratio);
  }
}

double LRSchedule::lr_at(int64_t iter, double base) const {
  validate();
  KDET_CHECK(iter >= 0, "LRSchedule::lr_at: negative iteration ", iter);
  double lr = base;
  switch (policy) {
    case LRPolicy::Constant: break;
    case LRPolicy::Step: {
      const int64_t progress = by_epoch ? iter / iters_per_epoch : iter;
      int exp = 0;
      for (int64_t s : steps) exp += progress >= s ? 1 : 0;
      lr = base * std::pow(gamma, exp);
      if (min_lr > 0) lr = std::max(lr, min_lr);
      break;
    }
    case LRPolicy::Cosine: {
      const double target = min_lr_ratio >= 0 ? base * min_lr_ratio : min_lr;
      const double frac = by_epoch ? static_cast<double>(iter / iters_per_epoch) / static_cast<double>(max_epochs)
                                   : static_cast<double>(iter) / static_cast<double>(max_iters);
      lr = target + 0.5 * (base - target) * (std::cos(std::numbers::pi * frac) + 1.0);
      break;
    }
  }
  if (warmup == LRWarmup::None || iter >= warmup_iters) return lr;
  const double t = static_cast<double>(iter), w = static_cast<double>(warmup_iters);
  switch (warmup) {
    case LRWarmup::Linear: return lr * (1.0 - (1.0 - t / w) * (1.0 - warmup_ratio));
    case LRWarmup::LinearMmengine: return lr * (warmup_ratio + (1.0 - warmup_ratio) * t / (w - 1.0));
    case LRWarmup::Constant: return lr * warmup_ratio;
    case LRWarmup::Exp: return lr * std::pow(warmup_ratio, 1.0 - t / w);
    case LRWarmup::None: break;
  }
  return lr;
}

void LRSchedule::apply(Optimizer& opt, int64_t iter) const {
  for (auto& g : opt.groups()) g.lr = lr_at(iter, g.initial_lr);
}

}  // namespace kdet
