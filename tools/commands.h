// tools/commands.h — the subcommands of build/kdet. Each lives in tools/cmd_<name>.cpp and is listed
// in the table in tools/kdet.cpp (no registry: grep finds them).
#pragma once

namespace kdet::cli {

int cmd_info(int argc, char** argv);
int cmd_kd_check(int argc, char** argv);

// data (issue 3)
int cmd_synth(int argc, char** argv);
int cmd_coco_eval(int argc, char** argv);
int cmd_convert_kitti(int argc, char** argv);
int cmd_bench_coco_load(int argc, char** argv);

// detectors (issue 4)
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_infer(int argc, char** argv);

// distillation (issue 5)
int cmd_distill(int argc, char** argv);
int cmd_viz_kd(int argc, char** argv);
int cmd_bench_kd(int argc, char** argv);

// the KD study (issue 7)
int cmd_study(int argc, char** argv);

}  // namespace kdet::cli
