// engine/cuda/copy.cu — the backend hooks of engine/backend.h (copies and fills) and pinned uploads.
#include <cstring>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/launch.cuh"

namespace kdet::cuda {

namespace {

// dst[i] = static_cast<D>(src[i]) over a common shape, both strided (src may broadcast: stride 0).
template <class D, class S>
__global__ void copy_kernel(int64_t n, OffsetCalc<2> calc, D* dst, const S* src) {
  KDET_GRID_STRIDE(i, n) {
    int64_t off[2];
    calc.get(i, off);
    dst[off[0]] = static_cast<D>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_kernel(int64_t n, OffsetCalc<1> calc, T* dst, T v) {
  KDET_GRID_STRIDE(i, n) {
    int64_t off[1];
    calc.get(i, off);
    dst[off[0]] = v;
  }
}

}  // namespace

void copy_strided(Tensor& dst, const Tensor& src) {
  const char* op = "copy_";
  KDET_CHECK(dst.device() == src.device(), op, " (cuda): from ", src.desc(), " to ", dst.desc());
  KDET_CHECK(dst.shape() == src.shape(), op, " (cuda): shape ", src.desc(), " vs ", dst.desc());
  Context& ctx = activate(dst, op);
  const int64_t n = dst.numel();
  if (n == 0) return;
  const OffsetCalc<2> calc = make_offset_calc<2>(dst.shape(), {&dst.strides(), &src.strides()}, op);
  dispatch_all(dst.dtype(), op, [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_all(src.dtype(), op, [&](auto stag) {
      using S = decltype(stag);
      copy_kernel<D, S><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, calc, static_cast<D*>(dst.raw_data()),
                                                                     static_cast<const S*>(src.raw_data()));
    });
  });
  check_launch(ctx, op);
}

void fill(Tensor& dst, double v) {
  const char* op = "fill_";
  Context& ctx = activate(dst, op);
  const int64_t n = dst.numel();
  if (n == 0) return;
  const OffsetCalc<1> calc = make_offset_calc<1>(dst.shape(), {&dst.strides()}, op);
  dispatch_all(dst.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<grid_for(n), kThreads, 0, ctx.stream()>>>(n, calc, static_cast<T*>(dst.raw_data()),
                                                                static_cast<T>(v));
  });
  check_launch(ctx, op);
}

void copy_between_devices(Tensor& dst, const Tensor& src) {
  const char* op = "Tensor::to";
  KDET_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), op, " (cuda): ", src.desc(), " -> ",
             dst.desc());
  KDET_CHECK(dst.is_contiguous() && src.is_contiguous(), op, " (cuda): both sides must be contiguous");
  const size_t nbytes = src.nbytes();
  const Device sd = src.device(), dd = dst.device();
  if (sd.is_cuda() && dd.is_cuda()) {
    Context& sctx = activate(sd, op);
    Context& dctx = context(dd.index, op);
    // Order after the kernels that produced src and before anything queued later on dst's device.
    KDET_CUDA_CHECK(cudaStreamSynchronize(sctx.stream()), op);
    KDET_CUDA_CHECK(cudaStreamSynchronize(dctx.stream()), op);
    if (nbytes > 0)
      KDET_CUDA_CHECK(cudaMemcpyPeerAsync(dst.raw_data(), dd.index, src.raw_data(), sd.index, nbytes, dctx.stream()),
                      op);
    KDET_CUDA_CHECK(cudaStreamSynchronize(dctx.stream()), op);
    return;
  }
  if (sd.is_cuda()) {  // device -> host: wait for the producers, then copy
    Context& ctx = activate(sd, op);
    if (nbytes > 0)
      KDET_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), nbytes, cudaMemcpyDeviceToHost, ctx.stream()),
                      op);
    KDET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), op);
    return;
  }
  KDET_CHECK(dd.is_cuda(), op, " (cuda): neither side is a CUDA tensor");
  Context& ctx = activate(dd, op);  // host -> device; synchronised so the host buffer may change at once
  if (nbytes > 0)
    KDET_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), nbytes, cudaMemcpyHostToDevice, ctx.stream()),
                    op);
  KDET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), op);
}

// ---- pinned host buffers -------------------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t nbytes) {
  KDET_CHECK(gpu_available(), "PinnedBuffer: ", device_status());
  if (nbytes > 0) KDET_CUDA_CHECK(cudaHostAlloc(&ptr_, nbytes, cudaHostAllocDefault), "PinnedBuffer");
  nbytes_ = nbytes;
  cudaEvent_t ev = nullptr;
  KDET_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "PinnedBuffer");
  event_ = ev;
}

PinnedBuffer::~PinnedBuffer() {
  if (event_) {
    (void)cudaEventSynchronize(static_cast<cudaEvent_t>(event_));  // no upload may still read the buffer
    (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  }
  if (ptr_) (void)cudaFreeHost(ptr_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_), nbytes_(o.nbytes_), event_(o.event_) {
  o.ptr_ = nullptr;
  o.nbytes_ = 0;
  o.event_ = nullptr;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    PinnedBuffer tmp(std::move(*this));  // releases our old buffer when it goes out of scope
    ptr_ = o.ptr_;
    nbytes_ = o.nbytes_;
    event_ = o.event_;
    o.ptr_ = nullptr;
    o.nbytes_ = 0;
    o.event_ = nullptr;
  }
  return *this;
}

void PinnedBuffer::wait() const {
  if (event_) KDET_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "PinnedBuffer::wait");
}

Tensor upload_async(const Tensor& host, Device dev, PinnedBuffer& staging) {
  const char* op = "upload_async";
  KDET_CHECK(host.defined() && host.device().is_cpu(), op, ": source must be a CPU tensor, got ",
             host.defined() ? host.desc() : "undefined");
  Context& ctx = activate(dev, op);
  const Tensor src = host.contiguous();
  const size_t nbytes = src.nbytes();
  if (!staging.event_ || staging.size() < nbytes) {
    staging.wait();
    staging = PinnedBuffer(nbytes);
  } else {
    staging.wait();  // the previous upload from this buffer must be done before we overwrite it
  }
  Tensor out = Tensor::empty(src.shape(), src.dtype(), dev);
  if (nbytes == 0) return out;
  std::memcpy(staging.data(), src.raw_data(), nbytes);
  KDET_CUDA_CHECK(cudaMemcpyAsync(out.raw_data(), staging.data(), nbytes, cudaMemcpyHostToDevice, ctx.stream()), op);
  KDET_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(staging.event_), ctx.stream()), op);
  return out;
}

}  // namespace kdet::cuda
