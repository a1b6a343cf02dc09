# kdet — build. `make` builds build/kdet; `make test` runs the whole suite; `make bench` the benchmarks.
# Set-up on a fresh machine is automatic: missing Debian packages are installed when run as root
# (`make deps`), otherwise the missing ones are listed.
#
#   make [CUDA=auto|0|1] [BUILD=build] [CXX=g++] [DEBUG=1] [SAN=address,undefined]
.DEFAULT_GOAL := all
SHELL := /bin/bash
# Parallel by default (one job per core) unless the command line gives -j: a plain `make demo` or
# `make test` on a fresh machine uses every core.
NPROC := $(shell nproc 2>/dev/null || echo 2)
# (Top level only: a sub-make inherits the jobserver and would warn "-jN forced in makefile".)
ifeq ($(MAKELEVEL)$(filter -j%,$(MAKEFLAGS))$(findstring j,$(firstword $(MAKEFLAGS))),0)
MAKEFLAGS += -j$(NPROC)
endif

BUILD ?= build
CXX ?= g++
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= /usr/local/cuda
EIGEN_INCLUDE ?= /usr/include/eigen3
PYTHON ?= /usr/bin/python3
CUDA ?= auto

# -mtune=generic: GCC 12's znver3 tuning slows Eigen's GEBP kernel by ~30% (specs/cpu_peers.md §2).
OPT ?= -O3 -march=native -mtune=generic
ifeq ($(DEBUG),1)
OPT := -O0 -g
endif
CXXFLAGS ?=
CXXFLAGS += -std=c++20 $(OPT) -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP -I. -isystem $(EIGEN_INCLUDE)
LDFLAGS += -fopenmp -pthread
ifneq ($(SAN),)
CXXFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -g
LDFLAGS += -fsanitize=$(SAN)
endif

# ---- CUDA probe ------------------------------------------------------------------------------------
# CUDA=auto builds the CUDA backend when nvcc, cuDNN and cuBLAS are found under CUDA_HOME *and* a GPU is
# visible (nvidia-smi -L). On a machine with the toolkit but no GPU the default build stays CPU-only and
# `make test` compiles the CUDA build on the side (cuda-build-check) so that CI catches build breaks.
# CUDA=1 forces the backend in (the binary still runs on the CPU when no GPU is present).
CUDA_BACKEND_SRC := $(wildcard engine/cuda/*.cu engine/ops/*_cuda.cu detectors/*_cuda.cu distill/*_cuda.cu)
HAVE_NVCC := $(shell test -x $(NVCC) && echo 1)
HAVE_CUDNN := $(shell (test -f $(CUDA_HOME)/include/cudnn.h || test -f /usr/local/include/cudnn.h || test -f /usr/include/cudnn.h) && echo 1)
HAVE_CUBLAS := $(shell (ls $(CUDA_HOME)/lib64/libcublas.so* >/dev/null 2>&1) && echo 1)
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CUDA_TOOLKIT := $(if $(and $(HAVE_NVCC),$(HAVE_CUDNN),$(HAVE_CUBLAS),$(CUDA_BACKEND_SRC)),1,0)
ifeq ($(CUDA),auto)
  ifeq ($(CUDA_TOOLKIT)$(HAVE_GPU),11)
    CUDA_ON := 1
  endif
else ifeq ($(CUDA),1)
  CUDA_ON := 1
endif
CUDA_ON ?= 0
CXXFLAGS += -DKDET_CUDA=$(CUDA_ON)
# Device code: the local GPU's architecture when there is one; otherwise PTX for compute_80 only (no
# ptxas run, so the build check is cheap; the driver JIT-compiles it for any GPU from sm_80 up).
NVCC_ARCH ?= $(if $(HAVE_GPU),-arch=native,-gencode arch=compute_80,code=compute_80)
ifeq ($(CUDA_ON),1)
  CXXFLAGS += -isystem $(CUDA_HOME)/include
  NVCCFLAGS ?= -O3 -std=c++20 -I. -isystem $(EIGEN_INCLUDE) -DKDET_CUDA=1 -MMD -MP --expt-relaxed-constexpr $(NVCC_ARCH)
  LDLIBS += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib -lcudnn -lcublas -lcudart
endif

# ---- sources (globbed; CMakeLists.txt uses the same globs) ---------------------------------------
LIB_SRC := $(wildcard engine/*.cpp engine/ops/*.cpp layers/*.cpp detectors/*.cpp distill/*.cpp data/*.cpp)
TOOL_SRC := $(wildcard tools/*.cpp)
TEST_SRC := $(wildcard tests/*.cpp tests/*/*.cpp tests/*/*/*.cpp)
BENCH_SRC := $(wildcard bench/*.cpp)
LIB_OBJ := $(LIB_SRC:%.cpp=$(BUILD)/obj/%.o)
ifeq ($(CUDA_ON),1)
LIB_OBJ += $(CUDA_BACKEND_SRC:%.cu=$(BUILD)/obj/%.cu.o)
endif
TOOL_OBJ := $(TOOL_SRC:%.cpp=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
BENCH_OBJ := $(BENCH_SRC:%.cpp=$(BUILD)/obj/%.o)

DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps check-deps test test-bin fixtures bench clean probe demo cuda-build-check
all: probe $(BUILD)/kdet

probe:
	@echo "kdet build: CXX=$(CXX) BUILD=$(BUILD) CUDA=$(CUDA) -> CUDA backend $(if $(filter 1,$(CUDA_ON)),ON,OFF)"
ifeq ($(CUDA),auto)
	@echo "  $(if $(HAVE_NVCC),✓,✗) nvcc   $(if $(HAVE_CUDNN),✓,✗) cuDNN   $(if $(HAVE_CUBLAS),✓,✗) cuBLAS   $(if $(CUDA_BACKEND_SRC),✓,✗) backend sources   $(if $(HAVE_GPU),✓,✗) GPU"
endif

# ---- Debian packages -----------------------------------------------------------------------------
DEB_PKGS := libeigen3-dev doctest-dev libstb-dev nlohmann-json3-dev
REQ_HEADERS := $(EIGEN_INCLUDE)/Eigen/Core /usr/include/doctest/doctest.h /usr/include/stb/stb_image.h /usr/include/nlohmann/json.hpp
deps:
	@./tools/install_deps.sh build $(DEB_PKGS)

$(DEPS_STAMP): $(REQ_HEADERS)
	@mkdir -p $(BUILD) && touch $@
$(REQ_HEADERS):
	@./tools/install_deps.sh build $(DEB_PKGS)

# ---- build rules ---------------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CXX  $<"
	@$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  NVCC $<"
	@$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libkdet.a: $(LIB_OBJ)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/kdet: $(TOOL_OBJ) $(BUILD)/libkdet.a
	@echo "  LINK $@"
	@$(CXX) $(TOOL_OBJ) $(BUILD)/libkdet.a $(LDFLAGS) $(LDLIBS) -o $@

# The tests also link the CLI's code (training loop, study runner...) minus its main().
TOOL_LIB_OBJ := $(filter-out $(BUILD)/obj/tools/kdet.o,$(TOOL_OBJ))
$(BUILD)/kdet_tests: $(TEST_OBJ) $(TOOL_LIB_OBJ) $(BUILD)/libkdet.a
	@echo "  LINK $@"
	@$(CXX) $(TEST_OBJ) $(TOOL_LIB_OBJ) $(BUILD)/libkdet.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/kdet_bench: $(BENCH_OBJ) $(BUILD)/libkdet.a
	@echo "  LINK $@"
	@$(CXX) $(BENCH_OBJ) $(BUILD)/libkdet.a $(LDFLAGS) $(LDLIBS) -o $@

# ---- dependency direction: engine <- layers <- detectors <- distill; data <- engine ---------------
check-deps:
	@./tools/check_deps.sh

# ---- PyTorch parity fixtures (tests/ref/*.py -> $(BUILD)/fixtures/*.safetensors) -------------------
# Generated when /usr/bin/python3 has torch; as root, installs it first (like `make deps`).
fixtures:
	@./tools/install_deps.sh python $(PYTHON)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  $(PYTHON) tests/ref/make_fixtures.py --out $(BUILD)/fixtures || exit 1; \
	else \
	  echo "*** WARNING: $(PYTHON) has no torch: PyTorch parity fixtures NOT generated; parity tests will be SKIPPED"; \
	fi

TEST_ARGS ?=
# The CUDA emulation (cuda-emu-test, below: the [cuda] tests on emulated GPU threads, no GPU or toolkit needed)
# runs too; CUDA_EMU_TEST=0 leaves it out. It needs $(PYTHON) for its launch rewriting.
# Its fibers are x86-64 code: elsewhere it is skipped, loudly.
CUDA_EMU_TEST ?= 1
CUDA_EMU_ARCH_OK := $(filter x86_64,$(shell uname -m))
CUDA_EMU_IN_TEST := $(if $(filter 1,$(CUDA_EMU_TEST)),$(if $(and $(wildcard $(PYTHON)),$(CUDA_EMU_ARCH_OK)),cuda-emu-test,cuda-emu-skip))
test: check-deps $(BUILD)/kdet $(BUILD)/kdet_tests fixtures cuda-build-check $(CUDA_EMU_IN_TEST)
	@if ls $(BUILD)/fixtures/*.safetensors >/dev/null 2>&1; then export KDET_REQUIRE_FIXTURES=1; fi; \
	 KDET_FIXTURES=$(BUILD)/fixtures KDET_BIN=$(BUILD)/kdet OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} \
	 $(BUILD)/kdet_tests $(TEST_ARGS)

test-bin: $(BUILD)/kdet_tests

bench: $(BUILD)/kdet_bench $(BUILD)/kdet
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BUILD)/kdet_bench $(BENCH_ARGS)
	@echo; echo "== COCO annotation loading (instances_train2017-sized file; target < 10 s, < 3 GB RSS) =="
	@$(BUILD)/kdet bench-coco-load

clean:
	rm -rf $(BUILD)

# ---- CUDA build check (make test): compiles and links the CUDA build where the toolkit is present -------
# On a machine with nvcc, cuDNN and cuBLAS but no GPU the default build is CPU-only, so `make test` builds
# the CUDA variant of the test binary on the side (its [cuda] tests are then skipped: no device). Only
# sources that mention KDET_CUDA differ between the two builds (headers never test it; checked below), so
# those are recompiled with CUDA=1 into $(BUILD)/cuda-check together with the backend's .cu files, and
# kdet_tests_cuda is linked from them plus the CPU build's other objects: a compile or link error in any CUDA
# path fails `make test`, at a fraction of the cost of a second full build.
CUDA_CHECK_BUILD := $(BUILD)/cuda-check
cuda-build-check: $(BUILD)/kdet_tests
ifeq ($(CUDA_ON),1)
	@echo "CUDA build check: this build ($(BUILD)) already contains the CUDA backend"
else ifeq ($(CUDA_TOOLKIT),1)
	@if grep -lE '^\s*#\s*(if|ifdef|elif).*KDET_CUDA' $$(find engine layers detectors distill data tools tests -name '*.h') 2>/dev/null; then \
	  echo "CUDA build check: the headers above test KDET_CUDA; only dispatch .cpp files may (engine/backend.h)"; exit 1; fi
	@echo "== CUDA build check: compiling the CUDA backend and linking $(CUDA_CHECK_BUILD)/kdet_tests_cuda (no GPU here: not run)"
	@t0=$$(date +%s); $(MAKE) --no-print-directory $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(NPROC)) \
	   BUILD=$(CUDA_CHECK_BUILD) CUDA=1 CPU_OBJ_DIR=$(BUILD) \
	   $(CUDA_CHECK_BUILD)/kdet_tests_cuda || exit 1; echo "== CUDA build check: built in $$(( $$(date +%s) - t0 )) s"
	@echo "== CUDA build check: its [cuda] tests (each says why it is skipped when there is no GPU)"
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(CUDA_CHECK_BUILD)/kdet_tests_cuda -tc='[cuda]*'
else
	@echo "*** CUDA build check SKIPPED: the CUDA toolkit is incomplete under $(CUDA_HOME) ($(if $(HAVE_NVCC),✓,✗) nvcc  $(if $(HAVE_CUDNN),✓,✗) cuDNN  $(if $(HAVE_CUBLAS),✓,✗) cuBLAS): the CUDA backend was NOT compiled"
endif

ifdef CPU_OBJ_DIR  # the sub-make of cuda-build-check
CUDA_DISPATCH_SRC := $(shell grep -l KDET_CUDA $(LIB_SRC) $(TEST_SRC) $(TOOL_SRC) 2>/dev/null)
CUDA_CHECK_OBJ := $(foreach s,$(LIB_SRC) $(TEST_SRC) $(filter-out tools/kdet.cpp,$(TOOL_SRC)),$(if $(filter $(s),$(CUDA_DISPATCH_SRC)),$(BUILD)/obj/$(s:.cpp=.o),$(CPU_OBJ_DIR)/obj/$(s:.cpp=.o))) \
                  $(CUDA_BACKEND_SRC:%.cu=$(BUILD)/obj/%.cu.o)
$(BUILD)/kdet_tests_cuda: $(CUDA_CHECK_OBJ)
	@echo "  LINK $@ (CUDA build check)"
	@$(CXX) $^ $(LDFLAGS) $(LDLIBS) -o $@
endif

# ---- the KD demo (issue 7): teacher, baseline student and every KD method on the synthetic set -----
# Resumable: finished runs in runs/demo are reused (tools/study.h).
demo: probe $(BUILD)/kdet
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BUILD)/kdet study configs/demo.cfg --out runs/demo

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BENCH_OBJ:.o=.d)

# ---- hardening (issue 8): `make fuzz` (clang libFuzzer) and `make sanitize` (suite under ASan+UBSan) --
# make fuzz [FUZZ_TIME=600] [FUZZ_TARGETS="coco kitti image safetensors config"]   (needs clang++)
# make sanitize [SAN_BUILD=build-san] [SAN_FIXTURES=build/fixtures] [TEST_ARGS=-tc="data*"]
# Each target runs FUZZ_TIME seconds on a working corpus in $(FUZZ_BUILD)/corpus/<t>, seeded from the
# regression inputs in tests/fuzz/corpus/<t>; a crash/leak/timeout stops it and leaves the input in
# $(FUZZ_BUILD)/artifacts/<t>/ (copy it to tests/fuzz/corpus/<t>/ once fixed). See tests/fuzz/README.md.
FUZZ_BUILD ?= build-fuzz
FUZZ_CXX ?= clang++
FUZZ_TIME ?= 600
FUZZ_TARGETS ?= coco kitti image safetensors config
FUZZ_LIB_SRC := data/coco.cpp data/kitti.cpp data/image.cpp data/stb_impl.cpp engine/safetensors.cpp \
                engine/config.cpp engine/tensor.cpp engine/allocator.cpp engine/backend.cpp
FUZZ_CXXFLAGS := -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                 -fno-sanitize-recover=undefined -I. -isystem $(EIGEN_INCLUDE) -DKDET_CUDA=0 -MMD -MP
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.cpp=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-bin sanitize
$(FUZZ_BUILD)/obj/%.o: %.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CLANG $<"
	@$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.cc | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CLANG $<"
	@$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	@echo "  LINK $@"
	@$(FUZZ_CXX) -fsanitize=fuzzer,address,undefined $^ -o $@

.SECONDARY: $(FUZZ_LIB_OBJ) $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o)
fuzz-bin: $(FUZZ_BINS)

fuzz: fuzz-bin
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t; \
	  echo "== fuzz_$$t: $(FUZZ_TIME) s"; \
	  $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t/ $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t \
	    2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|.*Test unit written)"; \
	  [ $${PIPESTATUS[0]} = 0 ] || { echo "fuzz_$$t: FAILED (see $(FUZZ_BUILD)/artifacts/$$t/)"; exit 1; }; \
	done

# The whole suite with -fsanitize=address,undefined in its own build dir (SAN_BUILD).
# -O1: sanitizer builds compile and run faster than at -O3 and keep usable stack traces.
SAN_BUILD ?= build-san
SAN_OPT ?= -O1 -march=native -mtune=generic
# SAN_FIXTURES: parity fixtures already generated (e.g. by `make test` into build/fixtures); empty:
# generate them into $(SAN_BUILD)/fixtures.
SAN_FIXTURES ?=
SAN_ENV = KDET_FIXTURES=$(or $(SAN_FIXTURES),$(SAN_BUILD)/fixtures) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
          OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive}
sanitize:
	@$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) SAN=address,undefined OPT="$(SAN_OPT)" $(SAN_BUILD)/kdet test-bin
	@$(if $(SAN_FIXTURES),true,$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) fixtures)
	@$(SAN_ENV) KDET_BIN=$(SAN_BUILD)/kdet \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
	 $(SAN_BUILD)/kdet_tests $(TEST_ARGS)

# CI subset: the engine, ops and data libraries with their tests and the fuzz regression corpus,
# linked without layers/detectors/distill/tools (about half the sources; no KDET_BIN-driven CLI tests).
SAN_CI_LIB := $(wildcard engine/*.cpp engine/ops/*.cpp data/*.cpp)
SAN_CI_TEST := tests/main.cpp tests/fixtures.cpp $(wildcard tests/engine/*.cpp tests/data/*.cpp tests/fuzz/*.cpp)
.PHONY: sanitize-ci
sanitize-ci:
	@$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) SAN=address,undefined OPT="$(SAN_OPT)" $(SAN_BUILD)/kdet_tests_ci
	@$(if $(SAN_FIXTURES),true,$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) fixtures)
	@$(SAN_ENV) \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
	 $(SAN_BUILD)/kdet_tests_ci $(TEST_ARGS)

$(BUILD)/kdet_tests_ci: $(SAN_CI_TEST:%.cpp=$(BUILD)/obj/%.o) $(SAN_CI_LIB:%.cpp=$(BUILD)/obj/%.o)
	@echo "  LINK $@"
	@$(CXX) $^ $(LDFLAGS) $(LDLIBS) -o $@

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BINS:$(FUZZ_BUILD)/fuzz_%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.d)

# ---- CUDA EMULATION on the CPU (make cuda-emu-test; not part of `make test`) -----------------------------
# Runs the [cuda] tests without a GPU: the backend's .cu/.cuh files, with each kernel launch rewritten into a
# plain call (tools/cuda_emu/rewrite.py, into $(BUILD)/cuda-emu/src; the real sources are untouched), are
# compiled by g++ against the shim headers of tools/cuda_emu/include (CUDA runtime, cuBLAS, cuDNN, cub) and
# run on the CPU: blocks in order, the threads of a block as fibers that switch at __syncthreads. The
# dispatch .cpp files are recompiled with KDET_CUDA=1 like in cuda-build-check; every other object comes from
# $(BUILD). This validates the kernels' index math, barrier structure and host logic and the library calls
# as modelled; it says nothing about GPU timing, real cuDNN/cuBLAS numerics or races (see the shim headers).
# KDET_CUDA_EMU_ORDER=reverse runs blocks and threads in reverse order (an order-dependent result is a race
# on a GPU); KDET_CUDA_EMU_STATS=1 lists the launches per kernel at exit. CUDA_EMU_ARGS: the doctest filter.
CUDA_EMU_BUILD := $(BUILD)/cuda-emu
CUDA_EMU_ARGS ?= -tc='[cuda]*'
.PHONY: cuda-emu-test
.PHONY: cuda-emu-skip
cuda-emu-skip:
	@echo "*** WARNING: the CUDA emulation is SKIPPED ($(if $(CUDA_EMU_ARCH_OK),$(PYTHON) not found: tools/cuda_emu/rewrite.py needs it,its fibers need an x86-64 machine))"
cuda-emu-test: $(BUILD)/kdet_tests
	@echo "== CUDA EMULATION on the CPU: building $(CUDA_EMU_BUILD)/kdet_tests_cudaemu (not a GPU run)"
	@t0=$$(date +%s); $(MAKE) --no-print-directory $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(NPROC)) \
	   BUILD=$(CUDA_EMU_BUILD) CUDA=0 CUDA_EMU=1 CUDA_EMU_CPU_OBJ=$(BUILD) $(CUDA_EMU_BUILD)/kdet_tests_cudaemu \
	   $(CUDA_EMU_BUILD)/cuda_emu_selftest || exit 1; \
	 echo "== CUDA EMULATION: built in $$(( $$(date +%s) - t0 )) s"
	@$(CUDA_EMU_BUILD)/cuda_emu_selftest
	@echo "== CUDA EMULATION on the CPU: the [cuda] tests run their kernels on emulated threads (logic only: no GPU timing, numerics or races)"
	@t0=$$(date +%s); OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} \
	 $(CUDA_EMU_BUILD)/kdet_tests_cudaemu $(CUDA_EMU_ARGS) || exit 1; echo "== CUDA EMULATION: ran in $$(( $$(date +%s) - t0 )) s"

ifeq ($(CUDA_EMU),1)  # the sub-make of cuda-emu-test (BUILD = $(CUDA_EMU_BUILD))
CXXFLAGS := -Itools/cuda_emu/include $(filter-out -DKDET_CUDA=%,$(CXXFLAGS)) -DKDET_CUDA=1
CUDA_EMU_HDR := $(wildcard engine/cuda/*.cuh)
CUDA_EMU_DISPATCH := $(shell grep -l KDET_CUDA $(LIB_SRC) $(TEST_SRC) $(TOOL_SRC) 2>/dev/null)
CUDA_EMU_RT := $(addprefix $(BUILD)/obj/tools/cuda_emu/,emu_runtime.o emu_memory.o emu_libs.o)
CUDA_EMU_OBJ := $(foreach s,$(LIB_SRC) $(TEST_SRC) $(filter-out tools/kdet.cpp,$(TOOL_SRC)),$(if $(filter $(s),$(CUDA_EMU_DISPATCH)),$(BUILD)/obj/$(s:.cpp=.o),$(CUDA_EMU_CPU_OBJ)/obj/$(s:.cpp=.o))) \
                $(CUDA_BACKEND_SRC:%.cu=$(BUILD)/obj/%.cuemu.o) $(CUDA_EMU_RT)
$(BUILD)/src/%.cu.cpp: %.cu tools/cuda_emu/rewrite.py
	@mkdir -p $(dir $@)
	@$(PYTHON) tools/cuda_emu/rewrite.py $< $@
$(BUILD)/src/%.cuh: %.cuh tools/cuda_emu/rewrite.py
	@mkdir -p $(dir $@)
	@$(PYTHON) tools/cuda_emu/rewrite.py $< $@
$(BUILD)/obj/%.cuemu.o: $(BUILD)/src/%.cu.cpp | $(CUDA_EMU_HDR:%=$(BUILD)/src/%) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CXX  $*.cu (CUDA emulation)"
	@$(CXX) -I$(BUILD)/src $(CXXFLAGS) -Wno-unknown-pragmas -c $< -o $@
$(BUILD)/kdet_tests_cudaemu: $(CUDA_EMU_OBJ)
	@echo "  LINK $@ (CUDA emulation)"
	@$(CXX) $^ $(LDFLAGS) -o $@
$(BUILD)/cuda_emu_selftest: $(BUILD)/obj/tools/cuda_emu/selftest.cuemu.o $(CUDA_EMU_RT)
	@$(CXX) $^ $(LDFLAGS) -o $@
.SECONDARY: $(CUDA_BACKEND_SRC:%=$(BUILD)/src/%.cpp) $(CUDA_EMU_HDR:%=$(BUILD)/src/%) $(BUILD)/src/tools/cuda_emu/selftest.cu.cpp
-include $(patsubst %.o,%.d,$(filter $(BUILD)/%,$(CUDA_EMU_OBJ) $(BUILD)/obj/tools/cuda_emu/selftest.cuemu.o))
endif
