// CUDA kernels of roi_align and deform_roi_pool: a thread per output element
// (forward, and the input gradient with atomics), a thread per (RoI, bin) for
// the offset gradient (summing channels: deterministic).
#include "cuda_utils.cuh"

namespace sniper {
namespace cuda {
namespace {

template <typename T, typename A>
__device__ __forceinline__ RoiBins<A> bins_of(const T* rois, int64_t k, const RoiPoolSpec& s) {
  A roi[5];
  for (int i = 0; i < 5; ++i) roi[i] = to_acc(rois[5 * k + i]);
  return RoiBins<A>::make(roi, A(s.scale), s.ph, s.pw, s.sampling, s.aligned);
}

template <typename T, typename A>
__device__ __forceinline__ A shift(const T* off, int64_t k, int64_t axis, int64_t i, int64_t j, const RoiPoolSpec& s,
                                   A extent) {
  return off ? A(s.gamma) * extent * A(to_acc(off[((k * 2 + axis) * s.ph + i) * s.pw + j])) : A(0);
}

template <typename T>
__global__ void forward_kernel(const T* input, const T* rois, const T* off, int64_t n, int64_t c, int64_t h, int64_t w,
                               int64_t k, RoiPoolSpec s, T* out) {
  using A = typename Acc<T>::type;
  const int64_t total = k * c * s.ph * s.pw;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % s.pw, i = (e / s.pw) % s.ph, ch = (e / (s.pw * s.ph)) % c, r = e / (s.pw * s.ph * c);
    const RoiBins<A> b = bins_of<T, A>(rois, r, s);
    const int64_t nb = int64_t(to_acc(rois[5 * r]));
    if (nb < 0 || nb >= n) {  // the checks (roi_align_common.h) reject these; never read out of bounds
      out[e] = from_acc<T>(A(0));
      continue;
    }
    const T* plane = input + (nb * c + ch) * h * w;
    const A sx = shift(off, r, 0, i, j, s, b.roi_w), sy = shift(off, r, 1, i, j, s, b.roi_h);
    A acc = 0;
    for (int64_t iy = 0; iy < b.grid_h; ++iy)
      for (int64_t ix = 0; ix < b.grid_w; ++ix)
        acc += sample<A>(plane, roi_taps<A>(h, w, b.y(i, iy, sy), b.x(j, ix, sx)), LoadAcc());
    out[e] = from_acc<T>(acc / b.count());
  }
}

template <typename T, typename A>
__global__ void input_grad_kernel(const T* grad, const T* rois, const T* off, int64_t n, int64_t c, int64_t h,
                                  int64_t w, int64_t k, RoiPoolSpec s, A* acc) {
  const int64_t total = k * c * s.ph * s.pw;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % s.pw, i = (e / s.pw) % s.ph, ch = (e / (s.pw * s.ph)) % c, r = e / (s.pw * s.ph * c);
    const RoiBins<A> b = bins_of<T, A>(rois, r, s);
    const A gv = A(to_acc(grad[e])) / b.count();
    const int64_t nb = int64_t(to_acc(rois[5 * r]));
    if (gv == A(0) || nb < 0 || nb >= n) continue;
    A* plane = acc + (nb * c + ch) * h * w;
    const A sx = shift(off, r, 0, i, j, s, b.roi_w), sy = shift(off, r, 1, i, j, s, b.roi_h);
    for (int64_t iy = 0; iy < b.grid_h; ++iy) {
      for (int64_t ix = 0; ix < b.grid_w; ++ix) {
        const Taps<A> t = roi_taps<A>(h, w, b.y(i, iy, sy), b.x(j, ix, sx));
        for (int q = 0; q < 4; ++q) {
          if (t.w[q] != A(0)) atomicAdd(plane + t.idx[q], gv * t.w[q]);
        }
      }
    }
  }
}

template <typename T>
__global__ void offset_grad_kernel(const T* grad, const T* input, const T* rois, const T* off, int64_t n, int64_t c,
                                   int64_t h, int64_t w, int64_t k, RoiPoolSpec s, T* grad_offset) {
  using A = typename Acc<T>::type;
  const int64_t total = k * s.ph * s.pw;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % s.pw, i = (e / s.pw) % s.ph, r = e / (s.pw * s.ph);
    RoiBins<A> b = bins_of<T, A>(rois, r, s);
    const int64_t nb = int64_t(to_acc(rois[5 * r]));
    const A sx = shift(off, r, 0, i, j, s, b.roi_w), sy = shift(off, r, 1, i, j, s, b.roi_h);
    A gx = 0, gy = 0;
    if (nb < 0 || nb >= n) b = RoiBins<A>{};  // no samples: zero gradient
    for (int64_t iy = 0; iy < b.grid_h; ++iy) {
      for (int64_t ix = 0; ix < b.grid_w; ++ix) {
        const Taps<A> t = roi_taps<A>(h, w, b.y(i, iy, sy), b.x(j, ix, sx));
        for (int64_t ch = 0; ch < c; ++ch) {
          const A gv = to_acc(grad[((r * c + ch) * s.ph + i) * s.pw + j]);
          const T* plane = input + (nb * c + ch) * h * w;
          for (int q = 0; q < 4; ++q) {
            const A v = to_acc(plane[t.idx[q]]);
            gx += gv * t.dx[q] * v;
            gy += gv * t.dy[q] * v;
          }
        }
      }
    }
    const A scale = A(s.gamma) / b.count();
    grad_offset[((r * 2 + 0) * s.ph + i) * s.pw + j] = from_acc<T>(gx * scale * b.roi_w);
    grad_offset[((r * 2 + 1) * s.ph + i) * s.pw + j] = from_acc<T>(gy * scale * b.roi_h);
  }
}

}  // namespace

void roi_pool_forward(const void* input, const void* rois, const void* offset, int64_t n, int64_t c, int64_t h,
                      int64_t w, int64_t k, const RoiPoolSpec& spec, void* out, Dtype dtype, void* stream) {
  const int64_t total = k * c * spec.ph * spec.pw;
  if (total == 0) return;
  if (h == 0 || w == 0) {  // no samples reach an empty map: zeros, and never a read of it
    SNIPER_CUDA_DISPATCH(
        dtype, [&] { SNIPER_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(scalar_t) * total, as_stream(stream))); });
    return;
  }
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    forward_kernel<scalar_t><<<blocks_for(total, kThreads, 1 << 20), kThreads, 0, as_stream(stream)>>>(
        static_cast<const scalar_t*>(input), static_cast<const scalar_t*>(rois), static_cast<const scalar_t*>(offset),
        n, c, h, w, k, spec, static_cast<scalar_t*>(out));
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

void roi_pool_backward(const void* grad, const void* input, const void* rois, const void* offset, int64_t n, int64_t c,
                       int64_t h, int64_t w, int64_t k, const RoiPoolSpec& spec, void* grad_input, void* grad_offset,
                       Dtype dtype, DeviceAllocator& alloc, void* stream_ptr) {
  const int64_t total = k * c * spec.ph * spec.pw, size = n * c * h * w;
  if (total == 0 || h == 0 || w == 0) return;  // the caller zero-fills both gradients
  const cudaStream_t stream = as_stream(stream_ptr);
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    using T = scalar_t;
    using A = typename Acc<T>::type;
    A* acc = take<A>(alloc, size);
    SNIPER_CUDA_CHECK(cudaMemsetAsync(acc, 0, sizeof(A) * size, stream));
    input_grad_kernel<T, A><<<blocks_for(total, kThreads, 1 << 20), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(rois), static_cast<const T*>(offset), n, c, h, w, k, spec,
        acc);
    store_kernel<T, A>
        <<<blocks_for(size, kThreads, 1 << 20), kThreads, 0, stream>>>(acc, static_cast<T*>(grad_input), size);
    if (offset != nullptr) {
      offset_grad_kernel<T><<<blocks_for(k * spec.ph * spec.pw, kThreads, 1 << 20), kThreads, 0, stream>>>(
          static_cast<const T*>(grad), static_cast<const T*>(input), static_cast<const T*>(rois),
          static_cast<const T*>(offset), n, c, h, w, k, spec, static_cast<T*>(grad_offset));
    }
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace sniper
