#include "tools/train_loop.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/coco.h"
#include "data/synth.h"
#include "detectors/build.h"
#include "detectors/results.h"
#include "detectors/retinanet.h"
#include "engine/checkpoint.h"
#include "engine/check.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/safetensors.h"
#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace fs = std::filesystem;

namespace kdet::train {

namespace {

// The first parameter whose gradient holds a NaN or Inf ("" when all are finite). Device gradients: 0 * x is
// NaN exactly when x is NaN or +-Inf, and so is any sum containing it; all of them are fetched with one copy
// (ops::scalar_values), not one sync per parameter.
std::string first_nonfinite_grad(const Optimizer& opt) {
  std::vector<Tensor> dev_sums;
  std::vector<std::string> dev_names;
  for (auto& [name, p] : opt.named_params()) {
    const Tensor g = p.grad();
    if (g.defined() && !g.device().is_cpu()) {
      dev_sums.push_back(ops::sum(ops::mul_scalar(g, 0.0)));
      dev_names.push_back(name);
    }
  }
  const std::vector<double> dev_vals = ops::scalar_values(dev_sums);
  size_t di = 0;
  for (auto& [name, p] : opt.named_params()) {  // in parameter order: the first bad one is named
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!g.device().is_cpu()) {
      if (!std::isfinite(dev_vals[di++])) return name;
      continue;
    }
    g = g.contiguous();
    bool bad = false;
    dispatch_float(g.dtype(), "train: gradient check", [&](auto tag) {
      using T = decltype(tag);
      const T* x = g.template data<T>();
      const int64_t n = g.numel();
      for (int64_t i = 0; i < n && !bad; ++i) bad = !std::isfinite(x[i]);
    });
    if (bad) return name;
  }
  return "";
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string synth_set(const Config& c, const std::string& dir, const char* split, int images, uint64_t seed) {
  data::SynthConfig sc;
  sc.images = images;
  sc.size = static_cast<int>(c.get_int("data.synth_size", 128));
  sc.seed = seed;
  sc.max_objects = static_cast<int>(c.get_int("data.synth_max_objects", 8));
  sc.min_radius = c.get_double("data.synth_min_radius", sc.min_radius);
  sc.max_radius_frac = c.get_double("data.synth_max_radius_frac", sc.max_radius_frac);
  sc.num_classes = static_cast<int>(c.get_int("data.synth_classes", sc.num_classes));
  sc.clutter = c.get_bool("data.synth_clutter", sc.clutter);
  sc.noise_max = c.get_double("data.synth_noise", sc.noise_max);
  KDET_CHECK(sc.images > 0 && sc.size >= 32, "data: synth needs images > 0 and synth_size >= 32 (got ", sc.images,
             ", ", sc.size, ")");
  std::string d = dir + "/" + split + "_s" + std::to_string(sc.size) + "_n" + std::to_string(sc.images) + "_seed" +
                  std::to_string(sc.seed) + "_m" + std::to_string(sc.max_objects);
  const data::SynthConfig def;  // non-default options name the set too (the default sets keep their names)
  if (sc.min_radius != def.min_radius || sc.max_radius_frac != def.max_radius_frac || sc.num_classes != def.num_classes ||
      sc.clutter != def.clutter || sc.noise_max != def.noise_max) {
    char b[160];
    std::snprintf(b, sizeof b, "_r%g-%g_c%d_cl%d_n%g", sc.min_radius, sc.max_radius_frac, sc.num_classes,
                  static_cast<int>(sc.clutter), sc.noise_max);
    d += b;
  }
  if (!file_exists(d + "/annotations.json")) {
    // Written to a temporary directory and renamed, so an interrupted or concurrent run never sees half a set.
    std::string tmp = d + ".tmp" + std::to_string(::getpid());
    fs::create_directories(tmp);
    data::write_synth(sc, tmp);
    std::error_code ec;
    fs::rename(tmp, d, ec);
    if (ec) fs::remove_all(tmp);  // another process won the race
    KDET_CHECK(file_exists(d + "/annotations.json"), "data: could not create synthetic set ", d);
  }
  return d + "/annotations.json";
}

data::Dataset load_set(const std::string& key, const std::string& ann, const std::string& root) {
  KDET_CHECK(!ann.empty(), "data: ", key, " is empty");
  KDET_CHECK(file_exists(ann), "data: ", key, " = '", ann, "': no such file");
  data::CocoLoadOptions o;
  if (!root.empty()) {
    KDET_CHECK(file_exists(root), "data: image root '", root, "' (for ", key, "): no such directory");
    o.image_root = root;
  }
  return data::load_coco(ann, o);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  char b[32];
  std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  return b;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KDET_CHECK(f.good(), "cannot write ", tmp);
    f << text;
    f.flush();
    KDET_CHECK(f.good(), "write failed: ", tmp);
  }
  KDET_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " -> ", path);
}

}  // namespace

// ---- data --------------------------------------------------------------------------------------

data::TransformConfig transform_from_config(const Config& c) {
  data::TransformConfig t;
  auto sc = c.get_ints("data.img_scale", {1333, 800});
  KDET_CHECK(sc.size() == 2 && sc[0] > 0 && sc[1] > 0, "data.img_scale must be two positive numbers (long, short)");
  t.scale_long = static_cast<int>(std::max(sc[0], sc[1]));
  t.scale_short = static_cast<int>(std::min(sc[0], sc[1]));
  auto mean = c.get_doubles("data.mean", {123.675, 116.28, 103.53});
  auto std = c.get_doubles("data.std", {58.395, 57.12, 57.375});
  KDET_CHECK(mean.size() == 3 && std.size() == 3, "data.mean / data.std need 3 numbers");
  for (int i = 0; i < 3; ++i) {
    t.mean[i] = static_cast<float>(mean[i]);
    t.std[i] = static_cast<float>(std[i]);
    KDET_CHECK(std[i] > 0, "data.std must be positive");
  }
  t.to_rgb = c.get_bool("data.to_rgb", true);
  t.size_divisor = static_cast<int>(c.get_int("data.size_divisor", 32));
  return t;
}

DataSetup build_data(const Config& c, const std::string& work_dir, bool need_train) {
  DataSetup d;
  const std::string type = c.get_string("data.type", "coco");
  KDET_CHECK(type == "coco" || type == "synth", "data.type must be coco or synth, got '", type, "'");
  data::TransformConfig tf = transform_from_config(c);
  // Read as 64-bit and range-checked before narrowing: a huge value is named, not wrapped to a negative int.
  auto count = [&](const char* key, int64_t def, int64_t lo) {
    const int64_t v = c.get_int(key, def);
    KDET_CHECK(v >= lo && v <= 1000000, key, " must be in [", lo, ", 1000000], got ", v);
    return static_cast<int>(v);
  };
  const int bs = count("data.batch_size", 2, 1);
  const int workers = count("data.workers", 2, 0);
  const int ebs = count("data.eval_batch_size", 1, 1);
  const double flip = c.get_double("data.flip_ratio", 0.5);
  const int min_size = static_cast<int>(c.get_int("data.filter_min_size", 32));
  d.train_loader.transform = tf;
  d.train_loader.batch_size = bs;
  d.train_loader.workers = workers;
  d.train_loader.flip_ratio = flip;
  d.train_loader.seed = static_cast<uint64_t>(c.get_int("train.seed", 0));
  d.val_loader = data::LoaderConfig::eval(ebs, workers);
  d.val_loader.transform = tf;

  std::string train_ann, val_ann, train_root, val_root;
  if (type == "synth") {
    std::string dir = c.get_string("data.synth_dir", "");
    if (dir.empty()) dir = work_dir.empty() ? std::string("synth") : work_dir + "/synth";
    const int ntr = static_cast<int>(c.get_int("data.synth_train_images", 400));
    const int nva = static_cast<int>(c.get_int("data.synth_val_images", 100));
    const uint64_t seed = static_cast<uint64_t>(c.get_int("data.synth_seed", 0));
    if (need_train) train_ann = synth_set(c, dir, "train", ntr, seed);
    val_ann = synth_set(c, dir, "val", nva, seed + 1000003);
  } else {
    train_ann = c.get_string("data.train_ann", "");
    train_root = c.get_string("data.train_img_root", "");
    val_ann = c.get_string("data.val_ann", "");
    val_root = c.get_string("data.val_img_root", "");
    if (!need_train) train_ann.clear();
  }
  if (need_train) {
    d.train = load_set("data.train_ann", train_ann, train_root);
    d.train_indices = data::train_image_indices(d.train, min_size, true);
    KDET_CHECK(!d.train_indices.empty(), "data: no training image of ", d.train.source,
               " has an annotation and min(w, h) >= ", min_size);
    // Not an error (tiny smoke runs do it), but every batch then holds fewer images than the learning
    // rate was scaled for (train.lr x batch_size / lr_base_batch): say so.
    if (static_cast<int64_t>(d.train_indices.size()) < bs)
      std::fprintf(stderr,
                   "warning: data.batch_size = %d but only %zu training images pass the filters: every batch holds "
                   "%zu images, while the learning rate is scaled for %d\n",
                   bs, d.train_indices.size(), d.train_indices.size(), bs);
  }
  d.val = load_set("data.val_ann", val_ann, val_root);
  return d;
}

std::vector<std::string> class_names(const data::Dataset& ds) {
  std::vector<std::string> r;
  for (auto& cat : ds.categories) r.push_back(cat.name);
  return r;
}

// ---- optimizer / schedule ---------------------------------------------------------------------

double effective_lr(const Config& c, int batch_size) {
  const double lr = c.get_double("train.lr", 0.01);
  const int64_t base = c.get_int("train.lr_base_batch", 16);
  KDET_CHECK(lr > 0 && base > 0, "train.lr and train.lr_base_batch must be positive");
  return lr * batch_size / static_cast<double>(base);
}

std::unique_ptr<Optimizer> build_optimizer(const Config& c, const NamedParams& params, int batch_size) {
  const std::string type = c.get_string("train.optimizer", "sgd");
  ParamGroup base;
  base.lr = effective_lr(c, batch_size);
  base.weight_decay = c.get_double("train.weight_decay", 1e-4);
  KDET_CHECK(!params.empty(), "build_optimizer: no trainable parameters");
  if (type == "sgd") {
    base.momentum = c.get_double("train.momentum", 0.9);
    return std::make_unique<SGD>(build_param_groups(params, base));
  }
  if (type == "adamw") {
    auto b = c.get_doubles("train.betas", {0.9, 0.999});
    KDET_CHECK(b.size() == 2, "train.betas needs 2 numbers");
    base.beta1 = b[0];
    base.beta2 = b[1];
    return std::make_unique<AdamW>(build_param_groups(params, base));
  }
  KDET_FAIL("train.optimizer must be sgd or adamw, got '", type, "'");
}

LRSchedule build_lr_schedule(const Config& c, const Optimizer& opt, int64_t iters_per_epoch, int64_t max_iters) {
  LRSchedule s;
  s.base_lr = opt.groups().at(0).initial_lr;
  const std::string pol = c.get_string("train.lr_policy", "step");
  if (pol == "step") s.policy = LRPolicy::Step;
  else if (pol == "cosine") s.policy = LRPolicy::Cosine;
  else if (pol == "constant") s.policy = LRPolicy::Constant;
  else KDET_FAIL("train.lr_policy must be step, cosine or constant, got '", pol, "'");
  s.by_epoch = c.get_bool("train.lr_by_epoch", true);
  s.iters_per_epoch = iters_per_epoch;
  s.steps = c.get_ints("train.lr_steps", {8, 11});
  s.gamma = c.get_double("train.lr_gamma", 0.1);
  s.min_lr = c.get_double("train.lr_min", 0.0);
  s.min_lr_ratio = c.get_double("train.lr_min_ratio", -1.0);
  s.max_iters = max_iters;
  s.max_epochs = (max_iters + iters_per_epoch - 1) / std::max<int64_t>(1, iters_per_epoch);
  const std::string w = c.get_string("train.warmup", "linear");
  if (w == "linear") s.warmup = LRWarmup::Linear;
  else if (w == "linear_mmengine") s.warmup = LRWarmup::LinearMmengine;
  else if (w == "constant") s.warmup = LRWarmup::Constant;
  else if (w == "exp") s.warmup = LRWarmup::Exp;
  else if (w == "none") s.warmup = LRWarmup::None;
  else KDET_FAIL("train.warmup must be linear, linear_mmengine, constant, exp or none, got '", w, "'");
  s.warmup_iters = c.get_int("train.warmup_iters", 500);
  s.warmup_ratio = c.get_double("train.warmup_ratio", 0.001);
  s.validate();
  return s;
}

TrainOptions TrainOptions::from_config(const Config& c) {
  TrainOptions o;
  o.epochs = c.get_int("train.epochs", 12);
  o.max_iters = c.get_int("train.max_iters", 0);
  o.seed = static_cast<uint64_t>(c.get_int("train.seed", 0));
  o.log_interval = c.get_int("train.log_interval", 50);
  o.checkpoint_interval = c.get_int("train.checkpoint_interval", 0);
  o.eval_interval = c.get_int("train.eval_interval", 0);
  o.grad_clip = c.get_double("train.grad_clip", 0.0);
  o.eval_at_end = c.get_bool("train.eval_at_end", true);
  const std::string nonfinite = c.get_string("train.nonfinite", "stop");
  KDET_CHECK(nonfinite == "stop" || nonfinite == "skip", "train.nonfinite must be stop or skip, got '", nonfinite, "'");
  o.skip_nonfinite = nonfinite == "skip";
  o.max_skips_in_a_row = c.get_int("train.max_skips_in_a_row", 100);
  KDET_CHECK(o.max_skips_in_a_row >= 0, "train.max_skips_in_a_row must be >= 0");
  o.device = parse_device(c.get_string("train.device", "cpu"), "train.device");
  o.cudnn_deterministic = c.get_bool("train.cudnn_deterministic", o.cudnn_deterministic);
  o.cudnn_benchmark = c.get_bool("train.cudnn_benchmark", o.cudnn_benchmark);
  o.allow_tf32 = c.get_bool("train.allow_tf32", o.allow_tf32);
  KDET_CHECK(o.epochs > 0 || o.max_iters > 0, "train: epochs or max_iters must be positive");
  KDET_CHECK(o.log_interval > 0, "train.log_interval must be positive");
  KDET_CHECK(o.checkpoint_interval >= 0 && o.eval_interval >= 0 && o.grad_clip >= 0,
             "train: checkpoint_interval, eval_interval and grad_clip must be >= 0");
  return o;
}

Device parse_device(const std::string& s, const std::string& key) {
  if (s == "cpu") return Device::cpu();
  int index = 0;
  if (s != "cuda") {
    KDET_CHECK(s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 8 &&
                   s.find_first_not_of("0123456789", 5) == std::string::npos,
               key, " must be cpu, cuda or cuda:N, got '", s, "'");
    index = std::stoi(s.substr(5));
  }
  KDET_CHECK(cuda_built(), key, " = ", s, ": this kdet binary was built without the CUDA backend (rebuild with make CUDA=1; ",
             "`kdet info` shows what a build has)");
  const int n = cuda_device_count();
  KDET_CHECK(index < n, key, " = ", s, ": ", n, " CUDA device(s) visible to this process");
  return Device::cuda(index);
}

#if KDET_CUDA
struct BatchUploader::Staging {
  cuda::PinnedBuffer buf[2];
  int next = 0;
};
#else
struct BatchUploader::Staging {};
#endif

BatchUploader::BatchUploader(Device d) : dev_(d) {
#if KDET_CUDA
  if (d.is_cuda()) staging_ = std::make_unique<Staging>();
#endif
}

BatchUploader::~BatchUploader() = default;

const data::Batch& BatchUploader::operator()(const data::Batch& b) {
  if (dev_.is_cpu() && b.images.device().is_cpu()) return b;
  out_.metas = b.metas;
  out_.gts = b.gts;
#if KDET_CUDA
  if (staging_ && b.images.device().is_cpu()) {
    Staging& s = *staging_;
    out_.images = cuda::upload_async(b.images, dev_, s.buf[s.next]);
    s.next ^= 1;
    return out_;
  }
#endif
  out_.images = b.images.to(dev_);
  return out_;
}

Device module_device(Module& m) {
  for (auto* v : m.parameters()) return v->data().device();
  return Device::cpu();
}

Trainable Trainable::of(Module& m) {
  Trainable t;
  t.state = [&m] { return m.state_dict(); };
  t.load_state = [&m](const TensorMap& sd) { m.load_state_dict(sd, true); };
  t.set_train = [&m](bool on) { m.train(on); };
  return t;
}

// ---- checkpoints -------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const Trainable& model, const Optimizer& opt, const TrainPosition& pos,
                     uint64_t seed, const std::string& config_text) {
  std::map<std::string, Tensor> all = model.state();
  for (auto& [k, t] : opt.state_dict()) {
    auto r = all.emplace(std::string(kOptimizerPrefix) + k, t);
    KDET_CHECK(r.second, "save_checkpoint: model has a tensor named ", r.first->first);
  }
  std::map<std::string, std::string> meta{{"format", "kdet-train-1"},
                                          {"iter", std::to_string(pos.iter)},
                                          {"epoch", std::to_string(pos.epoch)},
                                          {"batch_in_epoch", std::to_string(pos.batch_in_epoch)},
                                          {"seed", std::to_string(seed)},
                                          {"config", config_text}};
  meta["checksum"] = checkpoint_checksum(all, meta);  // engine/checkpoint.h
  save_safetensors(path, all, meta);
}

TrainPosition load_checkpoint(const std::string& path, const Trainable& model, Optimizer& opt, std::string* config_text) {
  SafetensorsFile f = load_verified_checkpoint(path);  // refuses truncated / corrupted files
  auto meta = [&](const char* k) -> std::string {
    auto it = f.metadata.find(k);
    KDET_CHECK(it != f.metadata.end(), path, ": not a kdet training checkpoint (metadata '", k,
               "' missing; a weights-only file can be used with train.load_from instead)");
    return it->second;
  };
  KDET_CHECK(meta("format") == "kdet-train-1", path, ": unknown checkpoint format '", meta("format"), "'");
  TrainPosition p;
  try {
    p.iter = std::stoll(meta("iter"));
    p.epoch = std::stoll(meta("epoch"));
    p.batch_in_epoch = std::stoll(meta("batch_in_epoch"));
  } catch (const std::logic_error&) {
    KDET_FAIL(path, ": bad iter/epoch/batch_in_epoch metadata");
  }
  if (config_text) *config_text = f.metadata.count("config") ? f.metadata["config"] : "";
  TensorMap weights, ostate;
  const std::string pre = kOptimizerPrefix;
  for (auto& [k, t] : f.tensors) {
    if (k.compare(0, pre.size(), pre) == 0) ostate.emplace(k.substr(pre.size()), t);
    else weights.emplace(k, t);
  }
  try {
    model.load_state(weights);
  } catch (const Error& e) {
    KDET_FAIL(path, ": weights do not match the model: ", e.what());
  }
  try {
    opt.load_state_dict(ostate);
  } catch (const Error& e) {
    KDET_FAIL(path, ": optimizer state does not match: ", e.what());
  }
  return p;
}

// ---- evaluation --------------------------------------------------------------------------------

data::CocoMetrics evaluate_detector(Detector& model, const data::Dataset& ds, const data::LoaderConfig& lc,
                                    std::vector<data::Detection>* results, bool quiet) {
  const bool was_training = model.training();
  BatchUploader upload(module_device(model));  // the batches go where the model is
  model.eval();
  data::Loader loader(ds, lc);
  std::vector<data::Detection> dets;
  data::Batch b;
  auto t0 = std::chrono::steady_clock::now();
  int64_t n = 0, total = static_cast<int64_t>(ds.images.size());
  while (loader.next_batch(b)) {
    std::vector<Detections> d = model.predict(upload(b), true);
    auto r = to_coco_results(ds, b, d);
    dets.insert(dets.end(), r.begin(), r.end());
    n += static_cast<int64_t>(b.size());
    if (!quiet && (n % 50 < static_cast<int64_t>(b.size()) || n == total)) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "  eval %lld/%lld images (%.1f img/s)\n", (long long)n, (long long)total, n / s);
    }
  }
  model.train(was_training);
  data::CocoMetrics m = data::coco_evaluate(ds, dets);
  if (results) *results = std::move(dets);
  return m;
}

void accept_section(const Config& c, const std::string& section) {
  for (auto& k : c.keys(section)) (void)c.get_string(section + "." + k);
}

void apply_sets(Config& c, const std::vector<std::string>& sets) {
  for (auto& s : sets) c.apply_override(s, false);
}

// ---- the loop ----------------------------------------------------------------------------------

TrainResult run_training(const TrainOptions& o, const std::string& config_text, data::Loader& loader, Optimizer& opt,
                         const LRSchedule& sched, const Trainable& model, const LossFn& loss_fn, const EvalFn& eval_fn,
                         const std::string& resume_path) {
  KDET_CHECK(!o.work_dir.empty(), "train: no work directory");
  fs::create_directories(o.work_dir);
#if KDET_CUDA
  if (o.device.is_cuda()) {  // the device's math and algorithm settings for this run
    cuda::set_deterministic(o.cudnn_deterministic, o.device.index);
    cuda::set_conv_benchmark(o.cudnn_benchmark, o.device.index);
    cuda::set_allow_tf32(o.allow_tf32, o.device.index);
  }
#endif
  TrainResult res;
  TrainPosition pos;
  const int64_t per_epoch = loader.batches_per_epoch();
  KDET_CHECK(per_epoch > 0, "train: the loader has no batch in an epoch");
  const int64_t max_iters = o.max_iters > 0 ? o.max_iters : o.epochs * per_epoch;
  std::string resume_file;  // the checkpoint actually resumed from (resume_path may be a work dir)
  if (!resume_path.empty()) {
    std::string old_cfg;
    // A work dir: its newest valid checkpoint (skipped damaged ones are noted on stderr even when quiet).
    resume_file = resolve_resume(resume_path, nullptr, false);
    pos = load_checkpoint(resume_file, model, opt, &old_cfg);
    if (!o.quiet) {
      std::printf("resumed from %s at iteration %lld (epoch %lld, batch %lld)\n", resume_file.c_str(),
                  (long long)pos.iter, (long long)pos.epoch, (long long)pos.batch_in_epoch);
      if (!old_cfg.empty() && old_cfg != config_text)
        std::printf("note: the resolved config differs from the one stored in the checkpoint\n");
    }
    KDET_CHECK(pos.iter <= max_iters, resume_file, ": checkpoint is at iteration ", pos.iter, ", beyond max_iters ",
               max_iters);
  }
  model.set_train(true);
  loader.set_epoch(pos.epoch);
  data::Batch batch;
  for (int64_t k = 0; k < pos.batch_in_epoch; ++k)
    KDET_CHECK(loader.next_batch(batch), "resume: epoch ", pos.epoch, " has fewer than ", pos.batch_in_epoch,
               " batches (different data or batch size than the checkpoint's run?)");

  std::ofstream log(o.work_dir + "/log.jsonl", std::ios::app);
  KDET_CHECK(log.good(), "cannot write ", o.work_dir, "/log.jsonl");
  auto t_start = std::chrono::steady_clock::now();
  auto t_win = t_start;
  int64_t win_iters = 0, run_iters = 0;
  std::map<std::string, double> win_sum;

  auto checkpoint = [&]() {
    std::string name = "iter_" + std::to_string(pos.iter) + ".safetensors";
    TrainPosition p = pos;
    if (p.batch_in_epoch >= per_epoch) {
      p.epoch += 1;
      p.batch_in_epoch = 0;
    }
    save_checkpoint(o.work_dir + "/" + name, model, opt, p, o.seed, config_text);
    write_text_atomic(o.work_dir + "/last_checkpoint", name + "\n");
    res.last_checkpoint = o.work_dir + "/" + name;
    if (!o.quiet) std::printf("checkpoint: %s\n", res.last_checkpoint.c_str());
  };
  auto evaluate = [&](bool final_eval) {
    if (!eval_fn) return;
    auto m = eval_fn(pos.iter);
    model.set_train(true);
    nlohmann::json j;
    j["mode"] = "val";
    j["iter"] = pos.iter;
    for (auto& [k, v] : m) j[k] = v;
    log << j.dump() << "\n";
    log.flush();
    if (final_eval) res.final_metrics = m;
    if (!o.quiet) {
      std::printf("eval @ iter %lld:", (long long)pos.iter);
      for (auto& [k, v] : m) std::printf(" %s %.4f", k.c_str(), v);
      std::printf("\n");
      std::fflush(stdout);
    }
  };

  int64_t consecutive_skips = 0;  // nonfinite = skip
  while (pos.iter < max_iters) {
    if (pos.batch_in_epoch >= per_epoch || !loader.next_batch(batch)) {
      pos.epoch += 1;
      pos.batch_in_epoch = 0;
      loader.set_epoch(pos.epoch);
      continue;
    }
    pos.batch_in_epoch += 1;
    sched.apply(opt, pos.iter);
    if (model.set_iteration) model.set_iteration(pos.iter);
    LossList losses = loss_fn(batch);
    KDET_CHECK(!losses.empty(), "train: the loss callback returned no loss");
    // NaN/Inf guard, the same for every check below (a loss term, a parameter's gradient, the clipped
    // global gradient norm): nonfinite = stop throws naming what, the iteration and the checkpoint to
    // resume from; nonfinite = skip drops the step (no update, no iteration counted, gradients cleared,
    // the logged loss averages and last_losses untouched), logs and counts it.
    auto nonfinite = [&](const std::string& what) {
      const std::string last_good =
          !res.last_checkpoint.empty() ? res.last_checkpoint
          : !resume_file.empty()       ? resume_file
                                       : std::string("none written yet (the run would restart from scratch)");
      KDET_CHECK(o.skip_nonfinite, "train: ", what, " at iteration ", pos.iter + 1, " (epoch ", pos.epoch, ", lr ",
                 opt.groups()[0].lr, "); stopping. Last good checkpoint: ", last_good,
                 " (or set train.nonfinite = skip to skip such steps)");
      opt.zero_grad();
      res.skipped_steps += 1;
      consecutive_skips += 1;
      KDET_CHECK(consecutive_skips <= o.max_skips_in_a_row, "train: ", what, " at iteration ", pos.iter + 1, " after ",
                 consecutive_skips - 1, " skipped steps in a row (train.max_skips_in_a_row ", o.max_skips_in_a_row,
                 "); stopping. Last good checkpoint: ", last_good);
      nlohmann::json j;
      j["mode"] = "skip";
      j["iter"] = pos.iter + 1;
      j["epoch"] = pos.epoch;
      j["reason"] = what;
      j["skipped_steps"] = res.skipped_steps;
      log << j.dump() << "\n";
      log.flush();
      if (!o.quiet)
        std::printf("skipping iteration %lld: %s (%lld skipped so far)\n", (long long)pos.iter + 1, what.c_str(),
                    (long long)res.skipped_steps);
    };
    std::string bad_term;
    double bad_value = 0;
    std::map<std::string, double> step_losses;  // logged once the step is known to be taken
    std::vector<Tensor> loss_values;
    for (auto& [name, v] : losses) loss_values.push_back(v.data());
    const std::vector<double> loss_host = ops::scalar_values(loss_values);  // one copy for all terms
    size_t li = 0;
    for (auto& [name, v] : losses) {
      const double x = loss_host[li++];
      if (!std::isfinite(x) && bad_term.empty()) {
        bad_term = name;
        bad_value = x;
      }
      step_losses[name] += x;
      step_losses["loss"] += x;
    }
    if (!bad_term.empty()) {
      nonfinite("loss '" + bad_term + "' is " + fmt("%g", bad_value));
      continue;
    }
    total_loss(losses).backward();
    double gnorm = -1;
    const std::string bad_param = first_nonfinite_grad(opt);
    if (!bad_param.empty()) {
      nonfinite("gradient of '" + bad_param + "' is not finite");
      continue;
    }
    if (o.grad_clip > 0) {
      // Finite gradients can still have an infinite global norm (its squares overflow).
      gnorm = clip_grad_norm(opt.params(), o.grad_clip);
      if (!std::isfinite(gnorm)) {
        nonfinite("gradient norm is " + fmt("%g", gnorm) + " (train.grad_clip " + fmt("%g", o.grad_clip) + ")");
        continue;
      }
    }
    opt.step();
    opt.zero_grad();
    for (auto& [name, x] : step_losses) {
      win_sum[name] += x;
      res.last_losses[name] = x;
    }
    consecutive_skips = 0;
    pos.iter += 1;
    ++win_iters;
    ++run_iters;

    if (pos.iter % o.log_interval == 0 || pos.iter == max_iters) {
      auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - t_win).count();
      const double total_s = std::chrono::duration<double>(now - t_start).count();
      const double it_s = win_iters / std::max(dt, 1e-9);
      const double eta = (max_iters - pos.iter) / std::max(run_iters / std::max(total_s, 1e-9), 1e-9);
      nlohmann::json j;
      j["mode"] = "train";
      j["iter"] = pos.iter;
      j["epoch"] = pos.epoch;
      j["lr"] = opt.groups()[0].lr;
      char head[96];
      std::snprintf(head, sizeof head, "[%lld/%lld] epoch %lld lr %.3e", (long long)pos.iter, (long long)max_iters,
                    (long long)pos.epoch, opt.groups()[0].lr);
      std::string line = head;
      for (auto& [name, v] : losses) {
        j[name] = win_sum[name] / win_iters;
        line += " " + name + " " + fmt("%.4f", win_sum[name] / win_iters);
      }
      j["loss"] = win_sum["loss"] / win_iters;
      line += " loss " + fmt("%.4f", win_sum["loss"] / win_iters);
      if (gnorm >= 0) {
        j["grad_norm"] = gnorm;
        line += " grad_norm " + fmt("%.3f", gnorm);
      }
      j["it_s"] = it_s;
      j["time_s"] = total_s;
      line += " | " + fmt("%.2f", it_s) + " it/s ETA " + hms(eta);
      log << j.dump() << "\n";
      log.flush();
      if (!o.quiet) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      }
      win_sum.clear();
      win_iters = 0;
      t_win = now;
    }
    const bool stop = o.stop_at > 0 && pos.iter >= o.stop_at;
    const bool epoch_end = pos.batch_in_epoch >= per_epoch;
    if (stop || pos.iter == max_iters ||
        (o.checkpoint_interval > 0 ? pos.iter % o.checkpoint_interval == 0 : epoch_end))
      checkpoint();
    if (o.eval_interval > 0 && pos.iter % o.eval_interval == 0 && pos.iter < max_iters) evaluate(false);
    if (stop) break;
  }
  res.pos = pos;
  if (pos.iter >= max_iters && o.eval_at_end) evaluate(true);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

RunArgs parse_run_args(const char* cmd, int argc, char** argv, const char* usage) {
  RunArgs r;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, cmd, ": ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      r.help = true;
      return r;
    } else if (a == "--resume") r.resume = val();
    else if (a == "--work-dir") r.work_dir = val();
    else if (a == "--stop-at") r.stop_at = std::stoll(val());
    else if (a == "--quiet") r.quiet = true;
    else if (a == "--set") {
      r.sets.push_back(val());
      while (i + 1 < argc && argv[i + 1][0] != '-' && std::string(argv[i + 1]).find('=') != std::string::npos)
        r.sets.push_back(argv[++i]);
    } else if (!a.empty() && a[0] == '-') KDET_FAIL(cmd, ": unknown option '", a, "'\n", usage);
    else if (r.cfg_path.empty()) r.cfg_path = a;
    else KDET_FAIL(cmd, ": unexpected argument '", a, "'\n", usage);
  }
  KDET_CHECK(!r.cfg_path.empty(), cmd, ": CONFIG is required\n", usage);
  return r;
}

Config load_run_config(RunArgs& args, TrainOptions& opts) {
  Config c = Config::load(args.cfg_path);
  apply_sets(c, args.sets);
  if (args.work_dir.empty()) args.work_dir = "work_dirs/" + std::filesystem::path(args.cfg_path).stem().string();
  std::filesystem::create_directories(args.work_dir);
  opts = TrainOptions::from_config(c);
  opts.work_dir = args.work_dir;
  opts.stop_at = args.stop_at;
  opts.quiet = args.quiet;
  return c;
}

}  // namespace kdet::train
