// CUDA kernel of sniper::box_iou: one thread per output element.
#include <sniper/box_math.h>

#include "cuda_utils.cuh"

namespace sniper {
namespace cuda {
namespace {

template <typename T>
__global__ void box_iou_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n,
                               int64_t m) {
  using A = typename Acc<T>::type;
  const int64_t total = n * m;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / m, j = k - i * m;
    const A ax1 = to_acc(a[4 * i]), ay1 = to_acc(a[4 * i + 1]), ax2 = to_acc(a[4 * i + 2]), ay2 = to_acc(a[4 * i + 3]);
    const A bx1 = to_acc(b[4 * j]), by1 = to_acc(b[4 * j + 1]), bx2 = to_acc(b[4 * j + 2]), by2 = to_acc(b[4 * j + 3]);
    out[k] = from_acc<T>(::sniper::box_iou(ax1, ay1, ax2, ay2, box_area(ax1, ay1, ax2, ay2), bx1, by1, bx2, by2,
                                           box_area(bx1, by1, bx2, by2)));
  }
}

}  // namespace

void box_iou(const void* a, const void* b, void* out, int64_t n, int64_t m, Dtype dtype, void* stream) {
  if (n == 0 || m == 0) return;
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    box_iou_kernel<scalar_t><<<blocks_for(n * m, kThreads, 1 << 20), kThreads, 0, as_stream(stream)>>>(
        static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(b), static_cast<scalar_t*>(out), n, m);
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace sniper
