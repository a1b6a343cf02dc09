// tools/cuda_emu/include/cub/cub.cuh — CUDA EMULATION: the part of cub kdet uses.
#pragma once
#include "device/device_radix_sort.cuh"
