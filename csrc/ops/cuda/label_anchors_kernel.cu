// CUDA kernel of sniper::label_anchors: a thread per (chip, anchor), the
// chip's GT streamed through shared memory in tiles. Pass 1 finds each
// anchor's best valid GT and IoU, the invalid-GT flag, and each GT's best
// IoU (atomicMax on the bits of a non-negative float); pass 2 marks every
// GT's best anchors and writes the labels. Same rules as the CPU kernel.
#include <sniper/anchor_rules.h>
#include <sniper/box_math.h>

#include "segments.cuh"

namespace sniper {
namespace cuda {
namespace {

constexpr int kTile = 128;

template <typename A>
struct Bits;
template <>
struct Bits<float> {
  using type = unsigned int;
};
template <>
struct Bits<double> {
  using type = unsigned long long;
};

__device__ __forceinline__ unsigned int to_bits(float v) { return __float_as_uint(v); }
__device__ __forceinline__ unsigned long long to_bits(double v) {
  return static_cast<unsigned long long>(__double_as_longlong(v));
}
__device__ __forceinline__ float from_bits(unsigned int v) { return __uint_as_float(v); }
__device__ __forceinline__ double from_bits(unsigned long long v) {
  return __longlong_as_double(static_cast<long long>(v));
}

template <typename T, typename A>
struct Args {
  const T* anchors;
  const T* gt;
  const int8_t* state;
  const double* canvas;
  int64_t a, g;
  A pos_iou, neg_iou, invalid_iou, border;
  int64_t chip0;  // first chip of this launch (grid.y is at most 65535)
};

template <typename T, typename A>
__device__ __forceinline__ void load_anchor(const Args<T, A>& p, int64_t k, A* x) {
  for (int i = 0; i < 4; ++i) x[i] = to_acc(p.anchors[4 * k + i]);
}

// Loads GT [j0, j0 + kTile) of chip c into shared memory.
template <typename T, typename A>
__device__ __forceinline__ int load_tile(const Args<T, A>& p, int64_t c, int64_t j0, A (*box)[5], int8_t* st) {
  const int count = int(min_<int64_t>(kTile, p.g - j0));
  for (int t = threadIdx.x; t < count; t += blockDim.x) {
    const T* b = p.gt + (c * p.g + j0 + t) * 4;
    for (int i = 0; i < 4; ++i) box[t][i] = to_acc(b[i]);
    box[t][4] = box_area(box[t][0], box[t][1], box[t][2], box[t][3]);
    st[t] = p.state[c * p.g + j0 + t];
  }
  __syncthreads();
  return count;
}

template <typename T, typename A>
__global__ void anchor_pass1_kernel(Args<T, A> p, A* max_iou, int32_t* arg, uint8_t* flags,
                                    typename Bits<A>::type* gt_max) {
  __shared__ A box[kTile][5];
  __shared__ int8_t st[kTile];
  const int64_t c = p.chip0 + blockIdx.y;
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool live = k < p.a;
  A x[4] = {0, 0, 0, 0};
  if (live) load_anchor(p, k, x);
  const A area = box_area(x[0], x[1], x[2], x[3]);
  const bool considered =
      live && anchor_considered(x[0], x[1], x[2], x[3], A(p.canvas[2 * c]), A(p.canvas[2 * c + 1]), p.border);
  A best = A(0);
  int32_t best_j = -1;
  bool near_invalid = false, has_valid = false;
  for (int64_t j0 = 0; j0 < p.g; j0 += kTile) {
    const int count = load_tile(p, c, j0, box, st);
    for (int t = 0; t < count && live; ++t) {
      const GtRole role = gt_role(st[t]);
      if (role == GtRole::kAbsent) continue;
      const A v =
          ::sniper::box_iou(x[0], x[1], x[2], x[3], area, box[t][0], box[t][1], box[t][2], box[t][3], box[t][4]);
      if (role == GtRole::kValid) {
        has_valid = true;
        if (!considered) continue;
        if (v > best) {
          best = v;
          best_j = int32_t(j0 + t);
        }
        if (v > A(0)) atomicMax(&gt_max[c * p.g + j0 + t], to_bits(v));
      } else if (v > p.invalid_iou) {
        near_invalid = true;
      }
    }
    __syncthreads();
  }
  if (live) {
    max_iou[c * p.a + k] = best;
    arg[c * p.a + k] = best_j;
    flags[c * p.a + k] = uint8_t(considered) | uint8_t(near_invalid) << 1 | uint8_t(has_valid) << 2;
  }
}

template <typename T, typename A>
__global__ void anchor_pass2_kernel(Args<T, A> p, const A* max_iou, const int32_t* arg, const uint8_t* flags,
                                    const typename Bits<A>::type* gt_max, int8_t* labels, int64_t* matched) {
  __shared__ A box[kTile][5];
  __shared__ int8_t st[kTile];
  const int64_t c = p.chip0 + blockIdx.y;
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool live = k < p.a;
  const uint8_t f = live ? flags[c * p.a + k] : 0;
  const bool considered = f & 1, near_invalid = f & 2, has_valid = f & 4;
  A x[4] = {0, 0, 0, 0};
  if (live) load_anchor(p, k, x);
  const A area = box_area(x[0], x[1], x[2], x[3]);
  bool best = false;
  for (int64_t j0 = 0; j0 < p.g; j0 += kTile) {
    const int count = load_tile(p, c, j0, box, st);
    for (int t = 0; t < count && considered && !best; ++t) {
      if (gt_role(st[t]) != GtRole::kValid) continue;
      const A top = from_bits(gt_max[c * p.g + j0 + t]);
      if (!(top > A(0))) continue;
      const A v =
          ::sniper::box_iou(x[0], x[1], x[2], x[3], area, box[t][0], box[t][1], box[t][2], box[t][3], box[t][4]);
      best = v == top;
    }
    __syncthreads();
  }
  if (live) {
    const int8_t label =
        anchor_label<A>(considered, has_valid, max_iou[c * p.a + k], best, near_invalid, p.pos_iou, p.neg_iou);
    labels[c * p.a + k] = label;
    matched[c * p.a + k] = label == 1 ? arg[c * p.a + k] : -1;
  }
}

}  // namespace

void label_anchors(const void* anchors, const void* gt, const int8_t* state, const double* canvas, int64_t chips,
                   int64_t a, int64_t g, double pos_iou, double neg_iou, double invalid_iou, double border, Dtype dtype,
                   int8_t* labels, int64_t* matched, DeviceAllocator& alloc, void* stream_ptr) {
  if (chips == 0 || a == 0) return;
  const cudaStream_t stream = as_stream(stream_ptr);
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    using T = scalar_t;
    using A = typename Acc<T>::type;
    using B = typename Bits<A>::type;
    Args<T, A> p{static_cast<const T*>(anchors),
                 static_cast<const T*>(gt),
                 state,
                 canvas,
                 a,
                 g,
                 A(pos_iou),
                 A(neg_iou),
                 A(invalid_iou),
                 A(border),
                 0};
    A* max_iou = take<A>(alloc, chips * a);
    int32_t* arg = take<int32_t>(alloc, chips * a);
    uint8_t* flags = take<uint8_t>(alloc, chips * a);
    B* gt_max = take<B>(alloc, chips * g);
    SNIPER_CUDA_CHECK(cudaMemsetAsync(gt_max, 0, sizeof(B) * (chips * g > 0 ? chips * g : 1), stream));
    // Any number of chips (as on the CPU): launches of at most 65535 chips (grid.y).
    constexpr int64_t kMaxChips = 65535;
    for (int64_t c0 = 0; c0 < chips; c0 += kMaxChips) {
      p.chip0 = c0;
      const dim3 grid(static_cast<unsigned int>((a + kThreads - 1) / kThreads),
                      static_cast<unsigned int>(min_<int64_t>(kMaxChips, chips - c0)));
      anchor_pass1_kernel<T, A><<<grid, kThreads, 0, stream>>>(p, max_iou, arg, flags, gt_max);
      anchor_pass2_kernel<T, A><<<grid, kThreads, 0, stream>>>(p, max_iou, arg, flags, gt_max, labels, matched);
    }
  });
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace sniper
