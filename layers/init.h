// layers/init.h — seeded weight initialisers (torch.nn.init / mmcv.cnn semantics, explicit Generator).
//
// All functions fill an existing tensor in place (any float dtype, CPU or device: values are drawn on
// the CPU in f64 from the Generator, in row-major order, then copied in). The same seed therefore
// gives bit-identical weights everywhere. Fans follow torch.nn.init._calculate_fan_in_and_fan_out:
//   fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field
// (receptive field = product of shape[2:]; for a grouped conv weight [O, I/g, kh, kw] that is
// exactly PyTorch's convention).
#pragma once
#include <utility>

#include "engine/random.h"
#include "engine/tensor.h"

namespace kdet {

enum class FanMode { FanIn, FanOut };
enum class Nonlinearity { Linear, Sigmoid, Tanh, ReLU, LeakyReLU };

std::pair<int64_t, int64_t> fan_in_out(const Shape& s);  // throws for rank < 2
// torch.nn.init.calculate_gain (param = negative slope for LeakyReLU).
double calculate_gain(Nonlinearity nl, double param = 0.01);

void constant_(Tensor& t, double v);
void uniform_(Tensor& t, Generator& g, double lo, double hi);
void normal_(Tensor& t, Generator& g, double mean, double std);
// std = gain / sqrt(fan), gain = calculate_gain(nl, a).
void kaiming_normal_(Tensor& t, Generator& g, double a = 0, FanMode mode = FanMode::FanIn,
                     Nonlinearity nl = Nonlinearity::LeakyReLU);
// bound = gain * sqrt(3 / fan).
void kaiming_uniform_(Tensor& t, Generator& g, double a = 0, FanMode mode = FanMode::FanIn,
                      Nonlinearity nl = Nonlinearity::LeakyReLU);
// bound = gain * sqrt(6 / (fan_in + fan_out)); std = gain * sqrt(2 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, Generator& g, double gain = 1.0);
void xavier_normal_(Tensor& t, Generator& g, double gain = 1.0);

// mmcv.cnn.bias_init_with_prob: -log((1 - p) / p) (RetinaNet cls bias for p = 0.01: -4.59512).
double bias_init_with_prob(double prior_prob);

// PyTorch's default for nn.Conv2d / nn.Linear (reset_parameters): weight kaiming_uniform(a = sqrt 5)
// = U(+-1/sqrt(fan_in)); bias U(+-1/sqrt(fan_in)). `bias` may be undefined.
void torch_default_init_(Tensor& weight, Tensor* bias, Generator& g);

}  // namespace kdet
