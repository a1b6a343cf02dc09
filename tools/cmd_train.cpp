// kdet train CONFIG [--resume CKPT] [--set key=value ...] [--work-dir DIR] [--stop-at ITER] [--quiet]
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/coco.h"
#include "detectors/build.h"
#include "engine/check.h"
#include "engine/safetensors.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

namespace kdet::cli {

namespace {
const char* kTrainUsage =
    "usage: kdet train CONFIG [--resume CKPT] [--set key=value ...] [--work-dir DIR] [--stop-at ITER] [--quiet]\n"
    "Trains the detector of CONFIG ([model], [data], [train] sections; see configs/*.cfg and tools/train_loop.h).\n"
    "  --work-dir DIR   checkpoints, log.jsonl, config.cfg, metrics.json (default work_dirs/<config name>)\n"
    "  --resume CKPT    continue a run from one of its checkpoints (bit-identical to an uninterrupted run on CPU);\n"
    "                   a work directory: its newest valid checkpoint (damaged ones are skipped)\n"
    "  --set k=v        override a config key (section.key; the key must exist)\n"
    "  --stop-at ITER   checkpoint and stop at iteration ITER (an interruption, e.g. to test resume)\n";

}  // namespace

int cmd_train(int argc, char** argv) {
  train::RunArgs args = train::parse_run_args("train", argc, argv, kTrainUsage);
  if (args.help) {
    std::printf("%s", kTrainUsage);
    return 0;
  }
  train::TrainOptions opts;
  Config c = train::load_run_config(args, opts);
  const std::string& work_dir = args.work_dir;
  std::string resume = args.resume;
  const std::string& cfg_path = args.cfg_path;
  const bool quiet = args.quiet;
  train::DataSetup d = train::build_data(c, work_dir, true);
  auto model = build_detector(c);
  KDET_CHECK(model->num_classes() == d.train.num_classes(), "train: model.num_classes = ", model->num_classes(),
             " but ", d.train.source, " has ", d.train.num_classes(), " categories");
  Generator g = Generator(opts.seed).fork(0x1417);
  model->init_weights(g);
  const std::string load_from = c.get_string("train.load_from", "");
  const std::string backbone_from = c.get_string("train.backbone_from", "");
  if (!backbone_from.empty()) {
    // torchvision ImageNet files hold the ResNet's own names (+ fc.*, ignored); a detector file holds
    // them under "backbone.".
    bool prefixed = false;
    for (auto& [k, t] : load_safetensors(backbone_from).tensors) prefixed |= k.rfind("backbone.", 0) == 0;
    LoadReport r = model->backbone_module().load(backbone_from, false, prefixed ? "backbone." : "");
    KDET_CHECK(r.missing.empty(), backbone_from, ": backbone weights incomplete for the ", model->arch(),
               " backbone of the config:", r.str());
    if (!quiet)
      std::printf("backbone weights from %s (%zu missing, %zu unexpected keys ignored)\n", backbone_from.c_str(),
                  r.missing.size(), r.unexpected.size());
  }
  if (!load_from.empty()) load_detector_weights(*model, load_from);
  model->train(true);
  // Before the optimizer is built: it holds the parameters (and creates its state) where they are.
  if (!opts.device.is_cpu()) model->to(opts.device);

  data::Loader loader(d.train, d.train_indices, d.train_loader);
  const int64_t per_epoch = loader.batches_per_epoch();
  const int64_t max_iters = opts.max_iters > 0 ? opts.max_iters : opts.epochs * per_epoch;
  auto opt = train::build_optimizer(c, model->named_parameters("", true), d.train_loader.batch_size);
  LRSchedule sched = train::build_lr_schedule(c, *opt, per_epoch, max_iters);
  c.check_all_used();

  const std::string cfg_text = c.dump();
  {
    std::ofstream f(work_dir + "/config.cfg");
    f << cfg_text;
  }
  if (!quiet)
    std::printf("train: %s | %zu train images (%lld batches of %d per epoch), %zu val images | %lld iterations | "
                "lr %.6g (%s) | %lld trainable parameters | work dir %s\n",
                cfg_path.c_str(), d.train_indices.size(), (long long)per_epoch, d.train_loader.batch_size,
                d.val.images.size(), (long long)max_iters, opt->groups()[0].initial_lr,
                "train.lr x batch_size / train.lr_base_batch", (long long)model->num_parameters(true),
                work_dir.c_str());

  std::vector<data::Detection> last_results;
  data::CocoMetrics last_metrics;
  train::BatchUploader upload(opts.device);
  train::LossFn loss_fn = [&](const data::Batch& b) { return model->loss(upload(b)); };
  train::EvalFn eval_fn = [&](int64_t) {
    last_metrics = train::evaluate_detector(*model, d.val, d.val_loader, &last_results, quiet);
    std::map<std::string, double> m;
    auto st = last_metrics.stats();
    for (int i = 0; i < 12; ++i) m[data::CocoMetrics::keys()[i]] = st[i];
    return m;
  };
  train::TrainResult r = train::run_training(opts, cfg_text, loader, *opt, sched, train::Trainable::of(*model),
                                             loss_fn, eval_fn, resume);
  if (!r.final_metrics.empty()) {
    std::ofstream f(work_dir + "/metrics.json");
    f << last_metrics.to_json() << "\n";
    data::write_coco_results(last_results, work_dir + "/results.json");
    if (!quiet) {
      last_metrics.print(stdout, true);
      std::printf("metrics: %s/metrics.json, detections: %s/results.json\n", work_dir.c_str(), work_dir.c_str());
    }
  }
  if (!quiet)
    std::printf("train: done at iteration %lld in %.1f s; last checkpoint %s\n", (long long)r.pos.iter, r.seconds,
                r.last_checkpoint.c_str());
  return 0;
}

}  // namespace kdet::cli
