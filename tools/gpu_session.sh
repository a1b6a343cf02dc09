#!/bin/bash
# tools/gpu_session.sh — everything a GPU session runs for issues 6 and 10, in one command, so that a
# lent GPU machine's few minutes go to measuring, not to setting up.
#
#   tools/gpu_session.sh pack          (here, on the development machine) copy the header-only Debian
#                                      dependencies (Eigen, doctest, stb, nlohmann-json; ~13 MB) into
#                                      .gpu_deps/ (git-ignored): the GPU machine cannot install packages
#   tools/gpu_session.sh run [OUT]     (on the GPU machine, from the repository root, as root) install
#                                      the packed headers where the Makefile looks for them, take cuDNN
#                                      from the Python wheel when the CUDA toolkit has none, build with
#                                      CUDA=1, run every [cuda] test (KDET_CUDA_SYNC=1) and the GPU
#                                      benchmarks; logs go to OUT (default $OUT, else /tmp/kdet_gpu)
#   STAGES="build tests bench" tools/gpu_session.sh run   runs only the named stages
#
# With the device tool: run `tools/gpu_session.sh pack` here, then
#   run(command="tools/gpu_session.sh run", carry=[".gpu_deps"])
# and copy the figures from $OUT/bench_cuda.log into bench/RESULTS.md (GPU model from $OUT/gpu.txt).
set -u
cd "$(dirname "$0")/.."
HDRS="eigen3 doctest stb nlohmann"

pack() {
  mkdir -p .gpu_deps/include
  for h in $HDRS; do
    [ -e "/usr/include/$h" ] || { echo "gpu_session pack: /usr/include/$h missing (make deps first)"; exit 1; }
    rm -rf ".gpu_deps/include/$h" && cp -r "/usr/include/$h" .gpu_deps/include/
  done
  du -sh .gpu_deps
  echo "gpu_session pack: done; pass carry=[\".gpu_deps\"] to the device run"
}

run() {
  local out="${1:-${OUT:-/tmp/kdet_gpu}}"
  local stages="${STAGES:-build tests bench}"
  local build=build-gpu py
  mkdir -p "$out"
  py=$(command -v python3)
  # 1. the header-only dependencies (Debian's paths, which the Makefile checks)
  for h in $HDRS; do
    if [ ! -e "/usr/include/$h" ]; then
      [ -e ".gpu_deps/include/$h" ] || { echo "gpu_session: /usr/include/$h missing and not packed (tools/gpu_session.sh pack; carry .gpu_deps)" | tee "$out/setup.log"; exit 1; }
      cp -r ".gpu_deps/include/$h" /usr/include/
    fi
  done
  # 2. cuDNN: the toolkit's, else the nvidia-cudnn wheel's (headers + libraries into the toolkit's dirs)
  local cuda_home=${CUDA_HOME:-/usr/local/cuda}
  if [ ! -f "$cuda_home/include/cudnn.h" ]; then
    local w
    w=$("$py" -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__) if nvidia.cudnn.__file__ else list(nvidia.cudnn.__path__)[0])' 2>/dev/null)
    if [ -n "$w" ] && [ -f "$w/include/cudnn.h" ]; then
      cp "$w"/include/*.h "$cuda_home/include/" && cp -P "$w"/lib/lib*.so* "$cuda_home/lib64/" && ldconfig
      echo "cuDNN taken from $w" >> "$out/setup.log"
    else
      echo "gpu_session: no cuDNN under $cuda_home and no nvidia-cudnn wheel for $py" | tee -a "$out/setup.log"
      exit 1
    fi
  fi
  { nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nvcc --version | tail -2;
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1;
    g++ --version | head -1; nproc; } > "$out/gpu.txt" 2>&1
  local j; j=$(nproc)
  if [[ " $stages " == *" build "* ]]; then
    # One make call: the CPU objects and the .cu files, the test and the bench binaries.
    ( time make BUILD=$build CUDA=1 PYTHON="$py" -j"$j" $build/kdet $build/kdet_tests $build/kdet_bench ) > "$out/build.log" 2>&1 \
      || { tail -40 "$out/build.log"; echo "gpu_session: build failed (log: $out/build.log)"; exit 1; }
    tail -3 "$out/build.log"
  fi
  if [[ " $stages " == *" tests "* ]]; then
    # Every [cuda] case, synchronising after each kernel so an asynchronous error names its op. The
    # end-to-end train/distill cases read configs/ relative to the repository root (this directory).
    KDET_CUDA_SYNC=1 OMP_NUM_THREADS=$j timeout 900 $build/kdet_tests -tc='[cuda]*' > "$out/cuda_tests.log" 2>&1
    echo "[cuda] tests: exit $?"; tail -4 "$out/cuda_tests.log"
  fi
  if [[ " $stages " == *" bench "* ]]; then
    # RetinaNet-R50 training step, batch 2, 800x1333, vs PyTorch + cuDNN on the same GPU (issue 6), and
    # the GPU sections of the DCN bench (issue 10).
    OMP_NUM_THREADS=$j timeout 600 $build/kdet_bench --cuda --python "$py" > "$out/bench_cuda.log" 2>&1
    echo "kdet_bench --cuda: exit $?"; tail -25 "$out/bench_cuda.log"
    # both sides with their default (non-deterministic) cuDNN algorithm choice: PyTorch eager as shipped
    OMP_NUM_THREADS=$j timeout 600 $build/kdet_bench --cuda --cuda-nondeterministic --python "$py" \
      > "$out/bench_cuda_nondet.log" 2>&1
    echo "kdet_bench --cuda --cuda-nondeterministic: exit $?"; tail -6 "$out/bench_cuda_nondet.log"
    OMP_NUM_THREADS=$j timeout 300 $build/kdet_bench --cuda --only dcn --python "$py" > "$out/bench_dcn_cuda.log" 2>&1
    echo "kdet_bench --cuda --only dcn: exit $?"; tail -12 "$out/bench_dcn_cuda.log"
    # issue 5's KD-loss overhead table on the GPU (RetinaNet-R50 student step, 512x512, batch 2)
    OMP_NUM_THREADS=$j timeout 300 $build/kdet bench-kd --device cuda --reps 5 > "$out/bench_kd_cuda.log" 2>&1
    echo "kdet bench-kd --device cuda: exit $?"; tail -10 "$out/bench_kd_cuda.log"
  fi
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
