// CUDA kernels of sniper::deform_im2col / deform_col2im: a thread per column
// element (im2col), per (sample, group, tap, position) for the offset and
// mask gradients (summing the group's channels: deterministic), and for the
// input gradient either a thread per column element with atomics or, when
// deterministic, a thread per (sample, channel) plane.
#include "cuda_utils.cuh"

namespace sniper {
namespace cuda {
namespace {

template <typename A, typename T>
__device__ __forceinline__ void point(const DeformGeometry& g, const T* off, const T* mask, int64_t grp, int64_t k,
                                      int64_t l, A* y, A* x, A* m) {
  const int64_t L = g.positions(), K = g.taps();
  const int64_t oy = l / g.out_w, ox = l % g.out_w, ki = k / g.kernel_w, kj = k % g.kernel_w;
  *y = A(oy * g.stride_h - g.pad_h + ki * g.dil_h) + to_acc(off[(2 * (grp * K + k)) * L + l]);
  *x = A(ox * g.stride_w - g.pad_w + kj * g.dil_w) + to_acc(off[(2 * (grp * K + k) + 1) * L + l]);
  *m = mask ? A(to_acc(mask[(grp * K + k) * L + l])) : A(1);
}

template <typename T>
__global__ void im2col_kernel(const T* input, const T* offset, const T* mask, DeformGeometry g, int64_t n, T* cols) {
  using A = typename Acc<T>::type;
  const int64_t K = g.taps(), L = g.positions(), C = g.channels, total = n * C * K * L;
  const int64_t cpg = C / g.offset_groups;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = e % L, k = (e / L) % K, c = (e / (L * K)) % C, s = e / (L * K * C);
    A y, x, m;
    point(g, offset + s * 2 * g.offset_groups * K * L, mask ? mask + s * g.offset_groups * K * L : nullptr, c / cpg, k,
          l, &y, &x, &m);
    const Taps<A> t = deform_taps<A>(g.height, g.width, y, x);
    cols[e] = from_acc<T>(m * deform_sample<A>(input + (s * C + c) * g.height * g.width, t, LoadAcc()));
  }
}

template <typename T, typename A>
__global__ void col2im_atomic_kernel(const T* gcols, const T* offset, const T* mask, DeformGeometry g, int64_t n,
                                     A* grad_input) {
  const int64_t K = g.taps(), L = g.positions(), C = g.channels, total = n * C * K * L;
  const int64_t cpg = C / g.offset_groups, HW = g.height * g.width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const A gv = to_acc(gcols[e]);
    if (gv == A(0)) continue;
    const int64_t l = e % L, k = (e / L) % K, c = (e / (L * K)) % C, s = e / (L * K * C);
    A y, x, m;
    point(g, offset + s * 2 * g.offset_groups * K * L, mask ? mask + s * g.offset_groups * K * L : nullptr, c / cpg, k,
          l, &y, &x, &m);
    const Taps<A> t = deform_taps<A>(g.height, g.width, y, x);
    A* plane = grad_input + (s * C + c) * HW;
    for (int i = 0; i < 4; ++i) {
      if (t.w[i] != A(0)) atomicAdd(plane + t.idx[i], gv * (m * t.w[i]));  // as the CPU kernel
    }
  }
}

// Deterministic: a thread owns a (sample, channel) plane and walks its columns in order.
template <typename T, typename A>
__global__ void col2im_plane_kernel(const T* gcols, const T* offset, const T* mask, DeformGeometry g, int64_t n,
                                    A* grad_input) {
  const int64_t K = g.taps(), L = g.positions(), C = g.channels, cpg = C / g.offset_groups;
  const int64_t HW = g.height * g.width;
  for (int64_t nc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; nc < n * C; nc += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = nc / C, c = nc % C;
    A* plane = grad_input + nc * HW;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t l = 0; l < L; ++l) {
        const A gv = to_acc(gcols[(nc * K + k) * L + l]);
        if (gv == A(0)) continue;
        A y, x, m;
        point(g, offset + s * 2 * g.offset_groups * K * L, mask ? mask + s * g.offset_groups * K * L : nullptr, c / cpg,
              k, l, &y, &x, &m);
        const Taps<A> t = deform_taps<A>(g.height, g.width, y, x);
        for (int i = 0; i < 4; ++i) {
          if (t.w[i] != A(0)) plane[t.idx[i]] += gv * (m * t.w[i]);  // taps outside the image: untouched
        }
      }
    }
  }
}

template <typename T>
__global__ void offset_mask_grad_kernel(const T* gcols, const T* input, const T* offset, const T* mask,
                                        DeformGeometry g, int64_t n, T* grad_offset, T* grad_mask) {
  using A = typename Acc<T>::type;
  const int64_t K = g.taps(), L = g.positions(), C = g.channels, og = g.offset_groups, cpg = C / og;
  const int64_t HW = g.height * g.width, total = n * og * K * L;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = e % L, k = (e / L) % K, grp = (e / (L * K)) % og, s = e / (L * K * og);
    A y, x, m;
    point(g, offset + s * 2 * og * K * L, mask ? mask + s * og * K * L : nullptr, grp, k, l, &y, &x, &m);
    const Taps<A> t = deform_taps<A>(g.height, g.width, y, x);
    A gy = 0, gx = 0, gm = 0;
    for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
      const A gv = to_acc(gcols[((s * C + c) * K + k) * L + l]);
      if (gv == A(0)) continue;  // as the CPU kernel: a zero gradient contributes nothing
      A v, vy, vx;
      deform_sample_grad<A>(input + (s * C + c) * HW, t, LoadAcc(), &v, &vy, &vx);
      gy += gv * vy;
      gx += gv * vx;
      gm += gv * v;
    }
    grad_offset[(s * 2 * og * K + 2 * (grp * K + k)) * L + l] = from_acc<T>(m * gy);
    grad_offset[(s * 2 * og * K + 2 * (grp * K + k) + 1) * L + l] = from_acc<T>(m * gx);
    if (grad_mask) grad_mask[(s * og * K + grp * K + k) * L + l] = from_acc<T>(gm);
  }
}

}  // namespace

void deform_im2col(const void* input, const void* offset, const void* mask, const DeformGeometry& g, int64_t n,
                   void* columns, Dtype dtype, void* stream) {
  const int64_t total = n * g.channels * g.taps() * g.positions();
  if (total == 0) return;
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    im2col_kernel<scalar_t><<<blocks_for(total, kThreads, 1 << 20), kThreads, 0, as_stream(stream)>>>(
        static_cast<const scalar_t*>(input), static_cast<const scalar_t*>(offset), static_cast<const scalar_t*>(mask),
        g, n, static_cast<scalar_t*>(columns));
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

void deform_col2im(const void* grad_columns, const void* input, const void* offset, const void* mask,
                   const DeformGeometry& g, int64_t n, bool deterministic, void* grad_input, void* grad_offset,
                   void* grad_mask, Dtype dtype, DeviceAllocator& alloc, void* stream_ptr) {
  const int64_t total = n * g.channels * g.taps() * g.positions();
  if (total == 0) return;  // the registration returns zero-filled gradients then
  const cudaStream_t stream = as_stream(stream_ptr);
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    using T = scalar_t;
    using A = typename Acc<T>::type;
    const T* gc = static_cast<const T*>(grad_columns);
    const T* off = static_cast<const T*>(offset);
    const T* msk = static_cast<const T*>(mask);
    const int64_t planes = n * g.channels, size = planes * g.height * g.width;
    A* acc = take<A>(alloc, size);
    SNIPER_CUDA_CHECK(cudaMemsetAsync(acc, 0, sizeof(A) * size, stream));
    if (deterministic) {
      col2im_plane_kernel<T, A><<<blocks_for(planes, 128), 128, 0, stream>>>(gc, off, msk, g, n, acc);
    } else {
      col2im_atomic_kernel<T, A>
          <<<blocks_for(total, kThreads, 1 << 20), kThreads, 0, stream>>>(gc, off, msk, g, n, acc);
    }
    store_kernel<T, A>
        <<<blocks_for(size, kThreads, 1 << 20), kThreads, 0, stream>>>(acc, static_cast<T*>(grad_input), size);
    const int64_t rows = n * g.offset_groups * g.taps() * g.positions();
    offset_mask_grad_kernel<T><<<blocks_for(rows, kThreads, 1 << 20), kThreads, 0, stream>>>(
        gc, static_cast<const T*>(input), off, msk, g, n, static_cast<T*>(grad_offset), static_cast<T*>(grad_mask));
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace sniper
