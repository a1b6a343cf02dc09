// engine/functional.h — the public differentiable API in one include: everything layers/, detectors/
// and distill/ build models from. Each header documents its ops (math, shapes, the PyTorch function
// it matches, gradient conventions).
#pragma once
#include "engine/autograd.h"
#include "engine/ops/compare.h"      // gt/ge/lt/eq..., nonzero, argmax, topk, argsort (no gradient)
#include "engine/ops/conv2d.h"       // conv2d (stride, padding, dilation, groups)
#include "engine/ops/deform_conv.h"  // deform_conv2d (deformable conv v1 / modulated v2, mmcv layout)
#include "engine/ops/elementwise.h"  // + - * / with broadcasting
#include "engine/ops/index_ops.h"    // index_select, gather, scatter_add
#include "engine/ops/interpolate.h"  // nearest / bilinear resize
#include "engine/ops/losses.h"       // fused focal, smooth L1, L1, GIoU/IoU, CE, BCE (element-wise)
#include "engine/ops/matmul.h"       // matmul, linear
#include "engine/ops/norm.h"         // batch / group / layer norm
#include "engine/ops/pool2d.h"       // max / avg pool
#include "engine/ops/reduce.h"       // sum / mean / max over axes
#include "engine/ops/shape_ops.h"    // reshape, permute, concat, slice, ...
#include "engine/ops/softmax.h"      // softmax, log_softmax
#include "engine/ops/unary.h"        // abs exp log sqrt pow clamp sigmoid relu tanh where
#include "engine/random.h"
#include "engine/tensor.h"
