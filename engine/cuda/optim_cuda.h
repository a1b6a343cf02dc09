// engine/cuda/optim_cuda.h — CUDA kernels of engine/optim.cpp's SGD and AdamW steps (plain C++).
// In place on contiguous device tensors of one dtype (f32/f64); the same per-element arithmetic as the
// CPU kernels (hyperparameters cast to the element type like torch's).
#pragma once
#include "engine/tensor.h"

namespace kdet::cuda {

// torch.optim.SGD for one parameter. buf: momentum buffer (nullptr when momentum == 0); first: the
// buffer is initialised with the update (first step).
void sgd_step(Tensor& p, const Tensor& g, Tensor* buf, double lr, double weight_decay, double momentum,
              double dampening, bool nesterov, bool first);
// torch.optim.AdamW for one parameter; vmax non-null with amsgrad.
void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, Tensor* vmax, double lr, double weight_decay,
                double beta1, double beta2, double eps, double step_size, double bc2_sqrt);

}  // namespace kdet::cuda
