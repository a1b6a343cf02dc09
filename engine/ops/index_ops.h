// engine/ops/index_ops.h — indexing with i64 index tensors (torch semantics, out-of-place).
//
//   index_select(x, dim, idx[K])   out.shape = x.shape with dim -> K; out[.., k, ..] = x[.., idx[k], ..]
//   gather(x, dim, idx)            idx.ndim == x.ndim, idx.size(d) <= x.size(d) for d != dim;
//                                  out.shape = idx.shape; out[i][j][k] = x[i][idx[i][j][k]][k] (dim = 1)
//   scatter_add(base, dim, idx, src) out = base; out[i][idx[i][j][k]][k] += src[i][j][k] (dim = 1),
//                                  idx.shape <= src.shape elementwise (only idx's extent of src is read)
//   index_add(base, dim, idx[K], src) out = base; out[.., idx[k], ..] += src[.., k, ..]
//   masked_select_rows(x, mask[N]) rows of x [N, ...] where mask (bool) is true
// Indices may be negative (counted from the end) and are bounds-checked with the op named. The index may
// be on the input's device or on the host (checked there, then uploaded: cheaper for a GPU input).
// Accumulating ops add duplicates in index order (serial per output slab), so they are deterministic.
#pragma once
#include "engine/autograd.h"

namespace kdet {

namespace ops {
Tensor index_select(const Tensor& x, int dim, const Tensor& index);
Tensor gather(const Tensor& x, int dim, const Tensor& index);
Tensor scatter_add(const Tensor& base, int dim, const Tensor& index, const Tensor& src);
Tensor index_add(const Tensor& base, int dim, const Tensor& index, const Tensor& src);
// out = base; out[.., index[k], ..] = src[.., k, ..] (later duplicates win). Any dtype.
Tensor index_copy(const Tensor& base, int dim, const Tensor& index, const Tensor& src);
Tensor masked_select_rows(const Tensor& x, const Tensor& mask1d);
}  // namespace ops

Var index_select(const Var& x, int dim, const Tensor& index);
Var gather(const Var& x, int dim, const Tensor& index);
Var scatter_add(const Var& base, int dim, const Tensor& index, const Var& src);
Var index_add(const Var& base, int dim, const Tensor& index, const Var& src);
Var masked_select_rows(const Var& x, const Tensor& mask1d);

}  // namespace kdet
