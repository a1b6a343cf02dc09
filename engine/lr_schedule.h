// engine/lr_schedule.h — learning-rate schedules as pure functions of the iteration (mmcv 1.x
// LrUpdaterHook semantics, spec detectors.md §12), so a resumed run gets exactly the same lrs.
//
//   LRSchedule s; s.base_lr = 0.02; s.steps = {8, 11}; s.iters_per_epoch = 7330;  // 1x, linear warmup
//   for (int64_t it = start; it < max_iters; ++it) { s.apply(opt, it); ...; opt.step(); }
//
// iter is 0-based and counts optimizer steps; epoch = iter / iters_per_epoch (when by_epoch).
//  regular lr (before warmup):
//    Constant  base
//    Step      base * gamma^(number of milestones <= progress), then max(., min_lr) when min_lr > 0;
//              progress = epoch (by_epoch) or iter
//    Cosine    target + 0.5*(base - target)*(1 + cos(pi * progress/max_progress)),
//              target = min_lr_ratio >= 0 ? base*min_lr_ratio : min_lr;
//              progress/max_progress = epoch/max_epochs (by_epoch) or iter/max_iters
//  warmup (multiplies the regular lr while iter < warmup_iters):
//    Linear          (mmcv)     1 - (1 - iter/warmup_iters)*(1 - warmup_ratio)
//    LinearMmengine  (mmdet 3)  warmup_ratio + (1 - warmup_ratio)*iter/(warmup_iters - 1)
//    Constant        (mmcv)     warmup_ratio
//    Exp             (mmcv)     warmup_ratio^(1 - iter/warmup_iters)
#pragma once
#include <cstdint>
#include <vector>

namespace kdet {

class Optimizer;

enum class LRPolicy { Constant, Step, Cosine };
enum class LRWarmup { None, Linear, LinearMmengine, Constant, Exp };

struct LRSchedule {
  double base_lr = 0.01;
  LRPolicy policy = LRPolicy::Step;
  bool by_epoch = true;
  int64_t iters_per_epoch = 0;   // required when by_epoch
  // Step
  std::vector<int64_t> steps;    // milestones (epochs when by_epoch, else iterations)
  double gamma = 0.1;
  // Cosine (min_lr is also Step's floor when > 0)
  double min_lr = 0.0;
  double min_lr_ratio = -1.0;    // >= 0: overrides min_lr with base*min_lr_ratio
  int64_t max_epochs = 0;        // Cosine, by_epoch
  int64_t max_iters = 0;         // Cosine, !by_epoch
  // Warmup
  LRWarmup warmup = LRWarmup::Linear;
  int64_t warmup_iters = 500;
  double warmup_ratio = 0.001;

  // Checks the fields (throws naming the bad one). lr_at calls it.
  void validate() const;
  double lr_at(int64_t iter) const { return lr_at(iter, base_lr); }
  // The same schedule applied to another base lr (parameter groups with lr_mult).
  double lr_at(int64_t iter, double base) const;
  // Sets every group's lr to lr_at(iter, group.initial_lr).
  void apply(Optimizer& opt, int64_t iter) const;
};

}  // namespace kdet
