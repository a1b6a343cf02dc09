// kdet distill CONFIG [--resume CKPT] [--set key=value ...] [--work-dir DIR] [--stop-at ITER] [--quiet]
//
// The same loop as `kdet train` (tools/train_loop.h): progress lines, WORK/log.jsonl, checkpoints,
// resume, final COCO eval of the student. The config is a student training config ([model], [data],
// [train]) plus [teacher] (a detector config section + `weights`) and [distill] (method, taps,
// hyperparameters: distill/distiller.h). Every KD component is logged by name (loss_fgd_fg, ...).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/coco.h"
#include "detectors/build.h"
#include "distill/distiller.h"
#include "engine/check.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

namespace kdet::cli {

namespace {
const char* kDistillUsage =
    "usage: kdet distill CONFIG [--resume CKPT] [--set key=value ...] [--work-dir DIR] [--stop-at ITER] [--quiet]\n"
    "Distils the [teacher] detector into the student ([model]) with the [distill] method (see configs/kd_*.cfg,\n"
    "distill/distiller.h); [data] and [train] as for `kdet train`.\n"
    "  --work-dir DIR   checkpoints, log.jsonl, config.cfg, metrics.json, student.safetensors\n"
    "                   (default work_dirs/<config name>)\n"
    "  --resume CKPT    continue a run from one of its checkpoints (bit-identical to an uninterrupted run on CPU);\n"
    "                   a work directory: its newest valid checkpoint (damaged ones are skipped)\n"
    "  --set k=v        override a config key (section.key; the key must exist)\n"
    "  --stop-at ITER   checkpoint and stop at iteration ITER\n";

}  // namespace

int cmd_distill(int argc, char** argv) {
  train::RunArgs args = train::parse_run_args("distill", argc, argv, kDistillUsage);
  if (args.help) {
    std::printf("%s", kDistillUsage);
    return 0;
  }
  train::TrainOptions opts;
  Config c = train::load_run_config(args, opts);
  const std::string& work_dir = args.work_dir;
  const std::string& resume = args.resume;  // a checkpoint or a work dir (its newest valid checkpoint)
  const std::string& cfg_path = args.cfg_path;
  const bool quiet = args.quiet;
  kd::DistillConfig dc = kd::DistillConfig::from_config(c);
  train::DataSetup d = train::build_data(c, work_dir, true);

  // Teacher: built from [teacher], weights from teacher.weights (required: a random teacher teaches nothing).
  auto teacher = build_detector(c, "teacher");
  KDET_CHECK(!dc.teacher_weights.empty(), "distill: teacher.weights is empty (train the teacher first, e.g. kdet "
             "train <teacher config>, and point teacher.weights at its checkpoint)");
  load_detector_weights(*teacher, dc.teacher_weights);

  auto student = build_detector(c);
  KDET_CHECK(student->num_classes() == d.train.num_classes(), "distill: model.num_classes = ", student->num_classes(),
             " but ", d.train.source, " has ", d.train.num_classes(), " categories");
  KDET_CHECK(teacher->num_classes() == student->num_classes(), "distill: teacher.num_classes = ",
             teacher->num_classes(), " but model.num_classes = ", student->num_classes());
  Generator g = Generator(opts.seed).fork(0x1417);
  student->init_weights(g);
  const std::string load_from = c.get_string("train.load_from", "");
  const std::string backbone_from = c.get_string("train.backbone_from", "");
  if (!backbone_from.empty()) {
    LoadReport r = student->backbone_module().load(backbone_from, false);
    if (!quiet)
      std::printf("student backbone weights from %s (%zu missing, %zu unexpected keys ignored)\n",
                  backbone_from.c_str(), r.missing.size(), r.unexpected.size());
  }
  if (!load_from.empty()) load_detector_weights(*student, load_from);

  kd::Distiller dist(std::move(teacher), std::move(student), dc);
  Generator gk = Generator(opts.seed).fork(0x4b44);
  dist.init_kd_weights(gk);
  if (dc.inherit) {
    dist.inherit_from_teacher();
    if (!quiet) std::printf("inherit: student neck and head initialised from the teacher\n");
  }
  dist.train(true);
  if (!opts.device.is_cpu()) {  // before the optimizer is built (it holds the parameters where they are)
    dist.teacher().to(opts.device);
    dist.student().to(opts.device);
    dist.kd_module().to(opts.device);
  }

  data::Loader loader(d.train, d.train_indices, d.train_loader);
  const int64_t per_epoch = loader.batches_per_epoch();
  const int64_t max_iters = opts.max_iters > 0 ? opts.max_iters : opts.epochs * per_epoch;
  auto opt = train::build_optimizer(c, dist.named_parameters(), d.train_loader.batch_size);
  LRSchedule sched = train::build_lr_schedule(c, *opt, per_epoch, max_iters);
  c.check_all_used();

  const std::string cfg_text = c.dump();
  {
    std::ofstream f(work_dir + "/config.cfg");
    f << cfg_text;
  }
  if (!quiet) {
    std::string taps;
    for (const auto& t : dist.config().taps) taps += (taps.empty() ? "" : ",") + t;
    if (taps.empty() && dc.method == kd::KdMethod::LogitKD && dc.logit_target == kd::LogitTarget::RoI)
      taps = "the R-CNN head's RoI logits";
    std::printf("distill: %s | method %s on %s | teacher %s (%lld params, frozen) | student %lld trainable + %lld KD "
                "params | %zu train images (%lld batches of %d per epoch) | %lld iterations | lr %.6g | work dir %s\n",
                cfg_path.c_str(), kd::kd_method_name(dc.method), taps.c_str(), dc.teacher_weights.c_str(),
                (long long)dist.teacher().num_parameters(), (long long)dist.student().num_parameters(true),
                (long long)dist.kd_module().num_parameters(true), d.train_indices.size(), (long long)per_epoch,
                d.train_loader.batch_size, (long long)max_iters, opt->groups()[0].initial_lr, work_dir.c_str());
  }

  train::Trainable tr;
  tr.state = [&] { return dist.state_dict(); };
  tr.load_state = [&](const TensorMap& sd) { dist.load_state_dict(sd); };
  tr.set_train = [&](bool on) { dist.train(on); };
  // MGD's masks are drawn per iteration: they follow the loop's iteration, so a resumed run (or one with
  // steps skipped for a NaN/Inf) draws what an uninterrupted one draws.
  tr.set_iteration = [&](int64_t it) { dist.set_step(it); };

  std::vector<data::Detection> last_results;
  data::CocoMetrics last_metrics;
  train::BatchUploader upload(opts.device);
  train::LossFn loss_fn = [&](const data::Batch& b) { return dist.loss(upload(b)); };
  train::EvalFn eval_fn = [&](int64_t) {
    last_metrics = train::evaluate_detector(dist.student(), d.val, d.val_loader, &last_results, quiet);
    std::map<std::string, double> m;
    auto st = last_metrics.stats();
    for (int i = 0; i < 12; ++i) m[data::CocoMetrics::keys()[i]] = st[i];
    return m;
  };
  train::TrainResult r = train::run_training(opts, cfg_text, loader, *opt, sched, tr, loss_fn, eval_fn, resume);
  // The student alone, as a detector checkpoint (kdet eval / infer / a later teacher).
  dist.student().save(work_dir + "/student.safetensors", {{"format", "kdet-student-1"}, {"config", cfg_text}});
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
    std::printf("distill: done at iteration %lld in %.1f s; last checkpoint %s; student weights %s/student.safetensors\n",
                (long long)r.pos.iter, r.seconds, r.last_checkpoint.c_str(), work_dir.c_str());
  return 0;
}

}  // namespace kdet::cli
