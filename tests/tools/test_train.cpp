// kdet train / eval / infer end to end through build/kdet (KDET_BIN, set by `make test`), on the micro
// synthetic config (64-px images, a RetinaNet-R18 with 8 base channels).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "detectors/build.h"
#include "engine/config.h"
#include "engine/device.h"
#include "engine/safetensors.h"

#include "tests/cli_util.h"

using namespace kdet;

namespace {

using test::kbin;
using test::kdet_run;
using test::slurp;
using test::TmpDir;

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.contiguous().raw_data(), b.contiguous().raw_data(), a.nbytes()) == 0;
}

const std::string kCfg = "configs/retinanet_r18_micro_synth.cfg";

std::string common(const std::string& d) {
  // 6 training images, batch 2 -> 3 batches per epoch; 4 iterations cross an epoch boundary.
  return " --quiet --set data.synth_dir=" + d + "/synth data.synth_train_images=6 train.max_iters=4 "
         "train.checkpoint_interval=4 train.eval_at_end=false";
}

}  // namespace

TEST_CASE("train: N iterations straight == N/2, interrupt, resume, N/2 (bit for bit, CPU)") {
  if (!kbin()) {
    MESSAGE("KDET_BIN not set: kdet train test skipped (make test sets it)");
    return;
  }
  REQUIRE(std::filesystem::exists(kCfg));
  TmpDir t("train_resume");
  const std::string d = t.path, a = d + "/a", b = d + "/b";
  std::string err;
  REQUIRE_MESSAGE(kdet_run("train " + kCfg + " --work-dir " + a + common(d), d, &err) == 0, err);
  REQUIRE_MESSAGE(kdet_run("train " + kCfg + " --work-dir " + b + common(d) + " --stop-at 2", d, &err) == 0, err);
  REQUIRE(std::filesystem::exists(b + "/iter_2.safetensors"));
  CHECK(!std::filesystem::exists(b + "/iter_4.safetensors"));
  CHECK(slurp(b + "/last_checkpoint") == "iter_2.safetensors\n");
  REQUIRE_MESSAGE(
      kdet_run("train " + kCfg + " --work-dir " + b + common(d) + " --resume " + b + "/iter_2.safetensors", d, &err) == 0,
      err);

  SafetensorsFile fa = load_safetensors(a + "/iter_4.safetensors");
  SafetensorsFile fb = load_safetensors(b + "/iter_4.safetensors");
  SafetensorsFile f5 = load_safetensors(b + "/iter_2.safetensors");
  CHECK(fa.metadata.at("iter") == "4");
  CHECK(fb.metadata.at("iter") == "4");
  CHECK(f5.metadata.at("epoch") == "0");
  CHECK(f5.metadata.at("batch_in_epoch") == "2");
  CHECK(fa.metadata.at("epoch") == "1");  // 3 batches per epoch: iteration 4 is batch 1 of epoch 1
  CHECK(fa.metadata.at("batch_in_epoch") == "1");
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  int n_opt = 0, differ = 0, changed = 0;
  for (auto& [k, ta] : fa.tensors) {
    auto it = fb.tensors.find(k);
    REQUIRE_MESSAGE(it != fb.tensors.end(), k);
    if (!bit_equal(ta, it->second)) {
      ++differ;
      MESSAGE("differs: " << k);
    }
    n_opt += k.rfind("optimizer.", 0) == 0;
    if (!bit_equal(ta, f5.tensors.at(k))) ++changed;
  }
  CHECK(differ == 0);
  CHECK(n_opt > 0);                             // momentum buffers are in the checkpoint
  CHECK(changed > static_cast<int>(fa.tensors.size() / 2));       // and training did change the weights after iteration 5
  // the JSONL log has one line per logged iteration (log_interval 2) and the losses by name
  std::string log = slurp(a + "/log.jsonl");
  int lines = 0;
  for (char c : log) lines += c == '\n';
  CHECK(lines == 2);
  CHECK(log.find("\"loss_cls\"") != std::string::npos);
  CHECK(log.find("\"loss_bbox\"") != std::string::npos);
  CHECK(log.find("\"it_s\"") != std::string::npos);
  // the resolved config is stored and parses back
  Config back = Config::parse(fa.metadata.at("config"), "ckpt");
  CHECK(back.get_int("train.max_iters") == 4);
}

TEST_CASE("train/eval/infer: metrics + results JSON, drawn PNG, clear errors on bad input") {
  if (!kbin()) {
    MESSAGE("KDET_BIN not set: kdet eval test skipped (make test sets it)");
    return;
  }
  TmpDir t("train_eval");
  const std::string d = t.path, a = d + "/a";
  std::string err;
  REQUIRE_MESSAGE(kdet_run("train " + kCfg + " --work-dir " + a + " --quiet --set data.synth_dir=" + d +
                               "/synth data.synth_train_images=6 train.max_iters=2 train.eval_at_end=true",
                           d, &err) == 0,
                  err);
  // training ended with an evaluation: metrics.json + results.json in the work dir
  CHECK(slurp(a + "/metrics.json").find("\"AP50\"") != std::string::npos);
  CHECK(std::filesystem::exists(a + "/results.json"));
  const std::string ck = a + "/iter_2.safetensors";
  REQUIRE_MESSAGE(kdet_run("eval " + kCfg + " " + ck + " --quiet --out " + d + "/ev --set data.synth_dir=" + d + "/synth",
                           d, &err) == 0,
                  err);
  CHECK(slurp(d + "/ev/metrics.json") == slurp(a + "/metrics.json"));  // same weights, same numbers
  CHECK(slurp(d + "/ev/results.json") == slurp(a + "/results.json"));
  // --device: the CPU explicitly gives the same; a bad value and a device this binary / machine lacks are errors
  REQUIRE_MESSAGE(kdet_run("eval " + kCfg + " " + ck + " --quiet --device cpu --out " + d + "/ev2 --set data.synth_dir=" +
                               d + "/synth",
                           d, &err) == 0,
                  err);
  CHECK(slurp(d + "/ev2/results.json") == slurp(a + "/results.json"));
  CHECK(kdet_run("eval " + kCfg + " " + ck + " --quiet --device gpu --out " + d + "/ev3", d, &err) == 1);
  CHECK(err.find("--device must be cpu, cuda or cuda:N, got 'gpu'") != std::string::npos);
  if (!cuda_built() || cuda_device_count() == 0) {
    CHECK(kdet_run("infer " + kCfg + " " + ck + " x.png --out " + d + "/inf3 --device cuda", d, &err) == 1);
    CHECK(err.find(cuda_built() ? "0 CUDA device(s)" : "built without the CUDA backend") != std::string::npos);
  }

  // infer on a validation image (low threshold so something is drawn even by an untrained model)
  std::string img;
  for (auto& e : std::filesystem::recursive_directory_iterator(d + "/synth"))
    if (e.path().extension() == ".png" && e.path().string().find("/val_") != std::string::npos) {
      img = e.path().string();
      break;
    }
  REQUIRE(!img.empty());
  REQUIRE_MESSAGE(kdet_run("infer " + kCfg + " " + ck + " " + img + " --out " + d + "/inf --score-thr 0.0 --set model.test_score_thr=0", d, &err) == 0,
                  err);
  const std::string png = d + "/inf/" + std::filesystem::path(img).stem().string() + ".png";
  REQUIRE(std::filesystem::exists(png));
  CHECK(slurp(png) != slurp(img));  // boxes were drawn
  std::string js = slurp(d + "/inf/detections.json");
  CHECK(js.find("\"detections\"") != std::string::npos);
  CHECK(js.find("\"class\"") != std::string::npos);

  // a detector checkpoint as backbone initialisation ("backbone." keys), and a missing one
  REQUIRE_MESSAGE(kdet_run("train " + kCfg + " --work-dir " + d + "/bb --quiet --set data.synth_dir=" + d +
                               "/synth train.max_iters=1 train.eval_at_end=false train.backbone_from=" + ck,
                           d, &err) == 0,
                  err);
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/bb2 --quiet --set data.synth_dir=" + d +
                     "/synth train.max_iters=1 train.backbone_from=" + d + "/none.safetensors",
                 d, &err) == 1);
  CHECK(err.find("none.safetensors") != std::string::npos);

  // --- bad input ----------------------------------------------------------------------------------
  // unknown config key (typo): an error naming it, with its file and line
  std::ofstream(d + "/typo.cfg") << "base = " << std::filesystem::absolute(kCfg).string()
                                 << "\n[model]\nstacked_conv = 2\n";
  CHECK(kdet_run("train " + d + "/typo.cfg --work-dir " + d + "/w1 --set data.synth_dir=" + d + "/synth", d, &err) == 1);
  CHECK(err.find("model.stacked_conv") != std::string::npos);
  CHECK(err.find("typo.cfg:3") != std::string::npos);
  // --set of a key that does not exist
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w2 --set train.lrr=0.1", d, &err) == 1);
  CHECK(err.find("train.lrr") != std::string::npos);
  // a batch larger than the training set: runs, with a warning (the LR is scaled for the configured batch)
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w3 --quiet --set data.synth_dir=" + d +
                     "/synth3 data.synth_train_images=3 data.batch_size=4 train.max_iters=1 train.eval_at_end=false",
                 d, &err) == 0);
  CHECK(err.find("warning: data.batch_size = 4 but only 3 training images") != std::string::npos);
  // train.device: a bad value, and a CUDA device this binary or machine does not have
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w2 --set train.device=gpu", d, &err) == 1);
  CHECK(err.find("train.device must be cpu, cuda or cuda:N, got 'gpu'") != std::string::npos);
  if (!cuda_built() || cuda_device_count() == 0) {
    CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w2 --set train.device=cuda", d, &err) == 1);
    CHECK(err.find(cuda_built() ? "0 CUDA device(s)" : "built without the CUDA backend") != std::string::npos);
  } else {
    CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w2 --set train.device=cuda:99", d, &err) == 1);
    CHECK(err.find("CUDA device(s) visible") != std::string::npos);
  }
  // missing data path
  std::ofstream(d + "/coco.cfg") << "base = " << std::filesystem::absolute(kCfg).string()
                                 << "\n[data]\ntype = coco\ntrain_ann = " << d << "/nope.json\nval_ann = " << d
                                 << "/nope_val.json\ntrain_img_root =\nval_img_root =\n";
  std::string coco_err;
  CHECK(kdet_run("train " + d + "/coco.cfg --work-dir " + d + "/w3", d, &coco_err) == 1);
  CHECK(coco_err.find("nope.json': no such file") != std::string::npos);
  // bad checkpoint: one key missing, one mis-shaped -> both listed
  SafetensorsFile f = load_safetensors(ck);
  f.tensors.erase("bbox_head.retina_cls.bias");
  f.tensors["neck.fpn_convs.0.conv.weight"] = Tensor::zeros({3, 3});
  save_safetensors(d + "/bad.safetensors", f.tensors, f.metadata);
  CHECK(kdet_run("eval " + kCfg + " " + d + "/bad.safetensors --out " + d + "/ev2 --set data.synth_dir=" + d + "/synth", d,
                 &err) == 1);
  CHECK(err.find("bbox_head.retina_cls.bias") != std::string::npos);
  CHECK(err.find("neck.fpn_convs.0.conv.weight") != std::string::npos);
  CHECK(err.find("missing") != std::string::npos);
  // resume from a weights-only file: not a training checkpoint
  save_safetensors(d + "/weights_only.safetensors", f.tensors);
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w4 --resume " + d + "/weights_only.safetensors --set data.synth_dir=" +
                     d + "/synth",
                 d, &err) == 1);
  CHECK(err.find("not a kdet training checkpoint") != std::string::npos);
  // a diverging run stops with an error naming the loss term (or parameter) and the iteration
  CHECK(kdet_run("train " + kCfg + " --work-dir " + d + "/w5 --quiet --set data.synth_dir=" + d +
                     "/synth data.synth_train_images=6 train.lr=1e30 train.grad_clip=0 train.warmup=none train.max_iters=6",
                 d, &err) == 1);
  // (a non-finite loss term, or a non-finite gradient of a finite loss: both name what and where)
  CHECK((err.find("train: loss 'loss_") != std::string::npos || err.find("train: gradient of '") != std::string::npos));
  CHECK(err.find("at iteration") != std::string::npos);
}

TEST_CASE("convert_mmdet.py: torch-saved mmdet checkpoint -> safetensors round trip keeps keys and bits") {
  if (!kbin()) {
    MESSAGE("KDET_BIN not set: convert test skipped (make test sets it)");
    return;
  }
  if (std::system("/usr/bin/python3 -c 'import torch, safetensors' > /dev/null 2>&1") != 0) {
    MESSAGE("python3 without torch/safetensors: convert_mmdet.py round trip skipped");
    return;
  }
  REQUIRE(std::filesystem::exists("tools/convert_mmdet.py"));
  TmpDir t("convert");
  const std::string d = t.path;
  // weights of the micro model (random init, BN buffers incl. i64 num_batches_tracked)
  Config c = Config::load(kCfg);
  auto m = build_detector(c);
  Generator g(3);
  m->init_weights(g);
  m->save(d + "/w.safetensors");
  // an mmdet-style .pth: {'meta': {...}, 'state_dict': OrderedDict, 'optimizer': {...}}, with a
  // DataParallel 'module.' prefix on the keys
  std::ofstream(d + "/mk.py") << "import torch, collections\n"
                                 "from safetensors.torch import load_file\n"
                                 "sd = load_file('" << d << "/w.safetensors')\n"
                                 "od = collections.OrderedDict(('module.' + k, v) for k, v in sd.items())\n"
                                 "torch.save({'meta': {'mmdet_version': '2.25.0', 'epoch': 12}, 'state_dict': od,\n"
                                 "            'optimizer': {'state': {}, 'param_groups': []}}, '" << d << "/m.pth')\n";
  REQUIRE(std::system(("/usr/bin/python3 " + d + "/mk.py").c_str()) == 0);
  REQUIRE(std::system(("/usr/bin/python3 tools/convert_mmdet.py --quiet " + d + "/m.pth " + d + "/c.safetensors").c_str()) == 0);
  SafetensorsFile orig = load_safetensors(d + "/w.safetensors"), conv = load_safetensors(d + "/c.safetensors");
  REQUIRE(orig.tensors.size() == conv.tensors.size());
  for (auto& [k, v] : orig.tensors) {
    REQUIRE_MESSAGE(conv.tensors.count(k), k);
    CHECK_MESSAGE(bit_equal(v, conv.tensors.at(k)), k);
  }
  CHECK(conv.metadata.at("mmdet_meta").find("2.25.0") != std::string::npos);
  // and it loads strictly into the model built from the config
  auto m2 = build_detector(c);
  load_detector_weights(*m2, d + "/c.safetensors");
  CHECK(bit_equal(m2->state_dict().at("bbox_head.retina_reg.weight"), m->state_dict().at("bbox_head.retina_reg.weight")));
}
