// build/kdet — the one binary. `kdet help` lists the subcommands.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "engine/check.h"
#include "tools/commands.h"

namespace {

struct Command {
  const char* name;
  int (*fn)(int, char**);
  const char* help;
};

const Command kCommands[] = {
    {"info", kdet::cli::cmd_info, "build configuration, devices, allocator and thread settings"},
    {"kd-check", kdet::cli::cmd_kd_check, "check the KD losses against kdgold-1 golden files (float64)"},
    {"synth", kdet::cli::cmd_synth, "write a synthetic detection data set (PNGs + COCO JSON)"},
    {"coco-eval", kdet::cli::cmd_coco_eval, "COCO bbox mAP of a results file (pycocotools semantics)"},
    {"convert-kitti", kdet::cli::cmd_convert_kitti, "KITTI object labels -> COCO instances JSON"},
    {"train", kdet::cli::cmd_train, "train a detector from a config (checkpoints, resume, JSONL log, COCO eval)"},
    {"eval", kdet::cli::cmd_eval, "COCO metrics + results JSON of a checkpoint on the config's val set"},
    {"infer", kdet::cli::cmd_infer, "detect objects in images; PNGs with boxes/classes/scores + JSON"},
    {"distill", kdet::cli::cmd_distill, "distil a frozen teacher into a student (FGD, MGD, AMD, DMKD, SSIM, FBKD, AID, FitNet, logit KD)"},
    {"viz-kd", kdet::cli::cmd_viz_kd, "PNGs per FPN level of what each KD method sees on an image (masks, attention)"},
    {"bench-kd", kdet::cli::cmd_bench_kd, "KD loss fwd+bwd time on R50-sized FPN features vs a student step"},
    {"study", kdet::cli::cmd_study, "a KD experiment matrix (teacher x student x methods x seeds) -> results table, charts"},
    {"bench-coco-load", kdet::cli::cmd_bench_coco_load, "time loading a COCO JSON the size of train2017"},
};

void usage(FILE* f) {
  std::fprintf(f, "kdet — knowledge distillation for object detectors\n\nusage: kdet <command> [args]\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(f, "  %-14s %s\n", c.name, c.help);
  std::fprintf(f, "\n`kdet <command> --help` for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::string(argv[1]) == c.name) {
      try {
        return c.fn(argc - 1, argv + 1);
      } catch (const kdet::Error& e) {
        std::fprintf(stderr, "kdet %s: error: %s\n", c.name, e.what());
        return 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kdet %s: internal error: %s\n", c.name, e.what());
        return 3;
      }
    }
  }
  std::fprintf(stderr, "kdet: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
