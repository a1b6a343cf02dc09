// tools/train_loop.h — the training loop shared by `kdet train` and `kdet distill`: data and optimizer
// from a config, iteration loop with lr schedule, gradient clipping, NaN/Inf checks, progress line,
// JSONL log, atomic periodic checkpoints, resume, periodic and final evaluation.
//
//   Config c = Config::load(path);                       // + --set overrides
//   DataSetup d = build_data(c, work_dir);               // [data]
//   TrainOptions o = TrainOptions::from_config(c);       // [train]
//   auto opt = build_optimizer(c, model.named_parameters("", true), d.train_loader.batch_size);
//   LRSchedule s = build_lr_schedule(c, *opt, iters_per_epoch);
//   c.check_all_used();
//   run_training(o, c.dump(), loader, *opt, s, Trainable::of(model), loss_fn, eval_fn, resume_path);
//
// A distiller plugs in its own loss callback (student + KD losses, teacher under NoGradGuard) and a
// Trainable whose state is the student's (+ adapters') tensors.
//
// Resume is bit-identical to an uninterrupted run on the CPU (fixed thread count): the checkpoint
// holds the weights and buffers, the optimizer state, the iteration and the loader position (epoch,
// batch within the epoch; the loader's order and augmentation depend only on seed and epoch, so the
// position is the whole RNG state — the models have no other randomness during training). The lr is a
// pure function of the iteration.
//
// Checkpoint = safetensors: model state dict under its own names, optimizer state under
// "optimizer.<param>.<slot>", metadata {format: kdet-train-1, iter, epoch, batch_in_epoch, seed,
// config (resolved text)}. Written as temp file + rename; WORK/last_checkpoint names the newest.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/coco_eval.h"
#include "data/loader.h"
#include "data/types.h"
#include "detectors/types.h"
#include "engine/config.h"
#include "engine/lr_schedule.h"
#include "engine/optim.h"
#include "layers/module.h"

namespace kdet {
class Detector;
}

namespace kdet::train {

// ---- data ([data] section) -------------------------------------------------------------------------
//   type = coco | synth
//   coco:  train_ann, val_ann (COCO instances JSON), train_img_root, val_img_root (default: the JSON's dir)
//   synth: synth_dir (default WORK/synth), synth_train_images 400, synth_val_images 100, synth_size 128,
//          synth_seed 0, synth_max_objects 8, synth_min_radius 3, synth_max_radius_frac 0.4,
//          synth_classes 6, synth_clutter true, synth_noise 10 (data/synth.h) — generated once (kdet synth)
//          into synth_dir/{train,val}_s<size>_n<N>_seed<seed>_m<max>[_r.._c.._cl.._n.. when not default]
//          and reused
//   img_scale 1333, 800 | mean | std | to_rgb true | size_divisor 32 | batch_size 2 | workers 2 |
//   flip_ratio 0.5 | filter_min_size 32 | eval_batch_size 1
struct DataSetup {
  data::Dataset train, val;
  std::vector<size_t> train_indices;  // mmdet _filter_imgs
  data::LoaderConfig train_loader, val_loader;
};
// need_train = false: only the validation set is loaded (eval / infer); train-only keys are still read.
DataSetup build_data(const Config& c, const std::string& work_dir, bool need_train = true);
// Just the transform (infer).
data::TransformConfig transform_from_config(const Config& c);
// Class names for drawing / JSON when no data set is loaded: [data] class_names, else the data set's.
std::vector<std::string> class_names(const data::Dataset& ds);

// ---- optimizer and schedule ([train] section) ---------------------------------------------------
//   optimizer sgd|adamw | lr 0.01 | lr_base_batch 16 | momentum 0.9 | weight_decay 1e-4 |
//   betas 0.9, 0.999 (adamw) | lr_policy step|cosine|constant | lr_by_epoch true | lr_steps 8, 11 |
//   lr_gamma 0.1 | lr_min 0 | lr_min_ratio -1 | warmup linear|linear_mmengine|constant|exp|none |
//   warmup_iters 500 | warmup_ratio 0.001
// Linear scaling rule: `lr` is the learning rate for a total batch of `lr_base_batch` images; the run
// uses lr * batch_size / lr_base_batch (mmdet 0.01 @ 16 -> 0.00125 @ 2). Set lr_base_batch = batch_size
// to use `lr` as is.
double effective_lr(const Config& c, int batch_size);
std::unique_ptr<Optimizer> build_optimizer(const Config& c, const NamedParams& params, int batch_size);
// max_epochs / max_iters of the schedule come from TrainOptions (cosine).
LRSchedule build_lr_schedule(const Config& c, const Optimizer& opt, int64_t iters_per_epoch, int64_t max_iters);

// ---- loop options ([train] section) -------------------------------------------------------------
//   epochs 12 | max_iters 0 (0: epochs * iters per epoch) | seed 0 | log_interval 50 |
//   checkpoint_interval 0 (iterations; 0: at the end of every epoch) | eval_interval 0 (iterations;
//   0: only at the end) | grad_clip 0 (max global L2 norm; 0: off) | eval_at_end true
//   nonfinite stop|skip: a NaN/Inf loss term (KD terms included), parameter gradient or (grad_clip > 0)
//   global gradient norm either stops the run (the error names the term, the parameter or "gradient
//   norm", the iteration and the last good checkpoint to resume from, or says none was written yet) or
//   skips that step (no update, no iteration counted; each skip is a "mode":"skip" line with the reason
//   and the running "skipped_steps" count in the JSONL log, and TrainResult::skipped_steps)
//   | max_skips_in_a_row 100 (then stop)
//   device cpu|cuda|cuda:N (kdet train / distill: the model(s), the KD module, the batch images, the
//   optimizer state and the evaluation on that device; needs a CUDA build, make CUDA=1)
struct TrainOptions {
  int64_t epochs = 12;
  int64_t max_iters = 0;
  uint64_t seed = 0;
  int64_t log_interval = 50;
  int64_t checkpoint_interval = 0;
  int64_t eval_interval = 0;
  double grad_clip = 0;
  bool eval_at_end = true;
  bool skip_nonfinite = false;  // nonfinite = skip
  int64_t max_skips_in_a_row = 100;  // nonfinite = skip: a run that only produces NaN stops after this many
  std::string work_dir;
  int64_t stop_at = -1;  // stop (after checkpointing) when this iteration is reached: an interruption
  bool quiet = false;    // no progress lines (tests)
  // train.device = cpu | cuda | cuda:N — where the model(s), the batches and the optimizer state live.
  // Checkpoints are written from the host either way (a GPU run's checkpoint resumes on the CPU and back).
  Device device = Device::cpu();
  // On a CUDA device (ignored on the CPU): train.cudnn_deterministic (default true: deterministic cuDNN
  // algorithms, a run repeats bit for bit), train.cudnn_benchmark (default false: heuristics; true times the
  // candidates once per shape), train.allow_tf32 (default false: full f32 like the CPU).
  bool cudnn_deterministic = true, cudnn_benchmark = false, allow_tf32 = false;
  static TrainOptions from_config(const Config& c);
};

// "cpu", "cuda" or "cuda:N" (the value of config key `key`); a CUDA device needs a CUDA build
// (make CUDA=1) and that device present, else a clear error naming the key.
Device parse_device(const std::string& s, const std::string& key);
// Moves batches to a device: the images go to `d`, the annotations and metas stay on the host (as the
// detectors expect). On a CUDA device the images go through two page-locked staging buffers used in turn
// (cuda::upload_async): the host->device copy is an asynchronous DMA on the device's stream, and staging
// batch k+1 waits only for batch k-1's copy, not for batch k's kernels. On the CPU a batch passes as is.
// The result is `b` itself (CPU) or the uploader's copy, valid until the next call.
class BatchUploader {
 public:
  explicit BatchUploader(Device d);
  ~BatchUploader();
  BatchUploader(const BatchUploader&) = delete;
  BatchUploader& operator=(const BatchUploader&) = delete;
  const data::Batch& operator()(const data::Batch& b);
  Device device() const { return dev_; }

 private:
  struct Staging;  // the pinned buffers (a CUDA build only)
  Device dev_;
  data::Batch out_;
  std::unique_ptr<Staging> staging_;
};
// Where a module's parameters live (the first parameter's device; the CPU for a module without any).
Device module_device(Module& m);

// What a checkpoint saves of the trained model(s) and how training/eval mode is switched.
struct Trainable {
  std::function<TensorMap()> state;                  // name -> tensor (shared storage is fine)
  std::function<void(const TensorMap&)> load_state;  // strict; throws listing every problem
  std::function<void(bool)> set_train;
  // Optional: called with the iteration (optimizer steps done) before each loss call, so that
  // per-step randomness (MGD's masks) follows the iteration, not the number of loss calls: a step
  // skipped for a NaN/Inf (nonfinite = skip) then leaves no trace, and a resumed run draws what an
  // uninterrupted one draws.
  std::function<void(int64_t)> set_iteration;
  static Trainable of(Module& m);
};

struct TrainPosition {
  int64_t iter = 0;            // optimizer steps done
  int64_t epoch = 0;           // loader epoch of the next batch
  int64_t batch_in_epoch = 0;  // batches of that epoch already consumed
};

using LossFn = std::function<LossList(const data::Batch&)>;
// Evaluates the current weights; returns metrics to log (e.g. AP, AP50). Called in eval mode.
using EvalFn = std::function<std::map<std::string, double>(int64_t iter)>;

struct TrainResult {
  TrainPosition pos;
  std::string last_checkpoint;
  std::map<std::string, double> final_metrics;
  double seconds = 0;
  std::map<std::string, double> last_losses;
  int64_t skipped_steps = 0;  // nonfinite = skip: steps dropped for a NaN/Inf loss or gradient
};

TrainResult run_training(const TrainOptions& o, const std::string& config_text, data::Loader& loader,
                         Optimizer& opt, const LRSchedule& sched, const Trainable& model, const LossFn& loss_fn,
                         const EvalFn& eval_fn, const std::string& resume_path = "");

// Checkpoint I/O (atomic). load_checkpoint restores weights and optimizer state and returns the
// position; `config_text` (optional) receives the resolved config stored in the file.
void save_checkpoint(const std::string& path, const Trainable& model, const Optimizer& opt, const TrainPosition& pos,
                     uint64_t seed, const std::string& config_text);
TrainPosition load_checkpoint(const std::string& path, const Trainable& model, Optimizer& opt,
                              std::string* config_text = nullptr);

// ---- evaluation shared by train / eval / distill ------------------------------------------------
// Runs predict over every image of `ds`, returns COCO metrics; `results` (optional) gets the detections.
data::CocoMetrics evaluate_detector(Detector& model, const data::Dataset& ds, const data::LoaderConfig& lc,
                                    std::vector<data::Detection>* results = nullptr, bool quiet = false);

// Marks every key of `section` as used (eval / infer do not train: they accept the [train] keys of the
// config they are given without checking them).
void accept_section(const Config& c, const std::string& section);

// "key=value" arguments of --set applied to the config (new keys are errors).
void apply_sets(Config& c, const std::vector<std::string>& sets);

// The command line shared by `kdet train` and `kdet distill`:
//   CONFIG [--resume CKPT|DIR] [--set key=value ...] [--work-dir DIR] [--stop-at ITER] [--quiet]
struct RunArgs {
  std::string cfg_path, resume, work_dir;
  std::vector<std::string> sets;
  int64_t stop_at = -1;
  bool quiet = false;
  bool help = false;  // --help was given: the caller prints `usage` and exits 0
};
RunArgs parse_run_args(const char* cmd, int argc, char** argv, const char* usage);
// Loads CONFIG, applies --set, defaults the work dir to work_dirs/<config stem> and creates it, and fills
// opts (TrainOptions::from_config plus work dir, stop-at and quiet).
Config load_run_config(RunArgs& args, TrainOptions& opts);

}  // namespace kdet::train
