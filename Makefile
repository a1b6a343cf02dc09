# kdet — build. `make` builds build/kdet; `make test` runs the whole suite; `make bench` the benchmarks.
# Set-up on a fresh machine is automatic: missing Debian packages are installed when run as root
# (`make deps`), otherwise the missing ones are listed.
#
#   make [CUDA=auto|0|1] [BUILD=build] [CXX=g++] [DEBUG=1] [SAN=address,undefined]
.DEFAULT_GOAL := all
SHELL := /bin/bash

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
CUDA_BACKEND_SRC := $(wildcard engine/cuda/*.cu engine/ops/*_cuda.cu)
ifeq ($(CUDA),auto)
  HAVE_NVCC := $(shell test -x $(NVCC) && echo 1)
  HAVE_CUDNN := $(shell (test -f $(CUDA_HOME)/include/cudnn.h || test -f /usr/local/include/cudnn.h || test -f /usr/include/cudnn.h) && echo 1)
  HAVE_CUBLAS := $(shell (ls $(CUDA_HOME)/lib64/libcublas.so* >/dev/null 2>&1) && echo 1)
  ifeq ($(HAVE_NVCC)$(HAVE_CUDNN)$(HAVE_CUBLAS),111)
    ifneq ($(CUDA_BACKEND_SRC),)
      CUDA_ON := 1
    endif
  endif
else ifeq ($(CUDA),1)
  CUDA_ON := 1
endif
CUDA_ON ?= 0
CXXFLAGS += -DKDET_CUDA=$(CUDA_ON)
ifeq ($(CUDA_ON),1)
  CXXFLAGS += -isystem $(CUDA_HOME)/include
  NVCCFLAGS ?= -O3 -std=c++20 -I. -isystem $(EIGEN_INCLUDE) -DKDET_CUDA=1 -MMD -MP --expt-relaxed-constexpr -arch=native
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

.PHONY: all deps check-deps test test-bin fixtures bench clean probe demo
all: probe $(BUILD)/kdet

probe:
	@echo "kdet build: CXX=$(CXX) BUILD=$(BUILD) CUDA=$(CUDA) -> CUDA backend $(if $(filter 1,$(CUDA_ON)),ON,OFF)"
ifeq ($(CUDA),auto)
	@echo "  $(if $(HAVE_NVCC),✓,✗) nvcc   $(if $(HAVE_CUDNN),✓,✗) cuDNN   $(if $(HAVE_CUBLAS),✓,✗) cuBLAS   $(if $(CUDA_BACKEND_SRC),✓,✗) backend sources"
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

$(BUILD)/kdet_tests: $(TEST_OBJ) $(BUILD)/libkdet.a
	@echo "  LINK $@"
	@$(CXX) $(TEST_OBJ) $(BUILD)/libkdet.a $(LDFLAGS) $(LDLIBS) -o $@

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
test: check-deps $(BUILD)/kdet $(BUILD)/kdet_tests fixtures
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
