// Device-side building blocks shared by the NMS-family CUDA kernels: sorting
// boxes into contiguous per-group segments, gathering them into
// structure-of-arrays form, and compacting the kept boxes into output order.
// Everything runs on the stream without host synchronisation.
#pragma once

#include <cub/cub.cuh>

#include <sniper/box_math.h>
#include <sniper/nms_rules.h>

#include "cuda_utils.cuh"

namespace sniper {
namespace cuda {

template <typename A>
struct BoxesSoA {
  A *x1, *y1, *x2, *y2, *area;

  static BoxesSoA make(DeviceAllocator& alloc, int64_t n) {
    return {take<A>(alloc, n), take<A>(alloc, n), take<A>(alloc, n), take<A>(alloc, n), take<A>(alloc, n)};
  }
  __device__ __forceinline__ A iou(int64_t i, int64_t j) const {
    return ::sniper::box_iou(x1[i], y1[i], x2[i], y2[i], area[i], x1[j], y1[j], x2[j], y2[j], area[j]);
  }
};

static __global__ void iota_kernel(int64_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = i;
  }
}

// keys[i] = score[i] in the accumulation type; + 0 turns -0.0 into +0.0 so
// that the radix sort sees them as equal, as the CPU comparison does.
template <typename T, typename A>
__global__ void score_keys_kernel(const T* scores, A* keys, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = to_acc(scores[i]) + A(0);
  }
}

template <typename T, typename A>
__global__ void gather_boxes_kernel(const T* boxes, const int64_t* order, int64_t n, BoxesSoA<A> out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const T* b = boxes + 4 * (order ? order[k] : k);
    const A x1 = to_acc(b[0]), y1 = to_acc(b[1]), x2 = to_acc(b[2]), y2 = to_acc(b[3]);
    out.x1[k] = x1;
    out.y1[k] = y1;
    out.x2[k] = x2;
    out.y2[k] = y2;
    out.area[k] = box_area(x1, y1, x2, y2);
  }
}

static __global__ void gather_i64_kernel(const int64_t* src, const int64_t* order, int64_t* out, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = src[order[k]];
  }
}

// head[k] = 1 where a new group starts in the sorted keys.
static __global__ void segment_heads_kernel(const int64_t* sorted_keys, uint8_t* head, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    head[k] = (k == 0 || sorted_keys[k] != sorted_keys[k - 1]) ? 1 : 0;
  }
}

static __global__ void gather_flags_kernel(const uint8_t* flags, const int64_t* order, uint8_t* out, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = flags[order[k]];
  }
}

// Stable radix sort of (key, value) pairs; descending or ascending. With
// end_bit < the key's width only the bits [0, end_bit) are sorted on (keys
// known to lie in [0, 2^end_bit)).
template <typename K>
void sort_pairs(const K* keys_in, K* keys_out, const int64_t* vals_in, int64_t* vals_out, int64_t n, bool descending,
                DeviceAllocator& alloc, cudaStream_t stream, int end_bit = int(sizeof(K) * 8)) {
  size_t bytes = 0;
  const int num = static_cast<int>(n);
  if (descending) {
    SNIPER_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, keys_in, keys_out, vals_in, vals_out,
                                                                num, 0, end_bit, stream));
    void* tmp = alloc.allocate(bytes);
    SNIPER_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(tmp, bytes, keys_in, keys_out, vals_in, vals_out, num,
                                                                0, end_bit, stream));
  } else {
    SNIPER_CUDA_CHECK(
        cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, vals_in, vals_out, num, 0, end_bit, stream));
    void* tmp = alloc.allocate(bytes);
    SNIPER_CUDA_CHECK(
        cub::DeviceRadixSort::SortPairs(tmp, bytes, keys_in, keys_out, vals_in, vals_out, num, 0, end_bit, stream));
  }
}

// out[0 .. *count) = the items whose flag is set, in order (stable).
template <typename V>
void select_flagged(const V* items, const uint8_t* flags, V* out, int* count, int64_t n, DeviceAllocator& alloc,
                    cudaStream_t stream) {
  size_t bytes = 0;
  const int num = static_cast<int>(n);
  SNIPER_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, bytes, items, flags, out, count, num, stream));
  void* tmp = alloc.allocate(bytes);
  SNIPER_CUDA_CHECK(cub::DeviceSelect::Flagged(tmp, bytes, items, flags, out, count, num, stream));
}

// Box indices sorted into groups of equal id (ascending id, stable with
// respect to `order_in`, which may be null for 0..n-1), and the start of
// each group's segment. *num_segments stays on the device. With key_bits <
// 64 the ids must lie in [0, 2^key_bits) (see map_groups).
struct Segments {
  int64_t* order;
  int64_t* starts;
  int* num_segments;
};

static Segments segment_by_group(const int64_t* group, const int64_t* order_in, int64_t n, DeviceAllocator& alloc,
                                 cudaStream_t stream, int key_bits = 64) {
  const unsigned int blocks = blocks_for(n, kThreads);
  int64_t* iota = take<int64_t>(alloc, n);
  iota_kernel<<<blocks, kThreads, 0, stream>>>(iota, n);
  if (order_in == nullptr) order_in = iota;
  int64_t* keys = take<int64_t>(alloc, n);
  gather_i64_kernel<<<blocks, kThreads, 0, stream>>>(group, order_in, keys, n);
  Segments s{take<int64_t>(alloc, n), take<int64_t>(alloc, n), take<int>(alloc, 1)};
  int64_t* sorted_keys = take<int64_t>(alloc, n);
  sort_pairs(keys, sorted_keys, order_in, s.order, n, /*descending=*/false, alloc, stream, key_bits);
  uint8_t* head = take<uint8_t>(alloc, n);
  segment_heads_kernel<<<blocks, kThreads, 0, stream>>>(sorted_keys, head, n);
  select_flagged(iota, head, s.starts, s.num_segments, n, alloc, stream);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return s;
}

// The fixed-capacity ops' group ids: id where it lies in [0, groups), else
// `groups`, so that every box that takes no part falls into one last segment
// and the ids fit in map_key_bits(groups) bits (a radix sort of fewer passes).
static __global__ void map_groups_kernel(const int64_t* group, int64_t n, int64_t groups, int64_t* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = group[i];
    out[i] = g >= 0 && g < groups ? g : groups;
  }
}

// Bits of the ids map_groups_kernel writes (values 0 .. groups).
inline int map_key_bits(int64_t groups) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) <= groups) ++bits;
  return bits;
}

static int read_count(const int* d_count, cudaStream_t stream) {
  int count = 0;
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(&count, d_count, sizeof(int), cudaMemcpyDeviceToHost, stream));
  SNIPER_CUDA_CHECK(cudaStreamSynchronize(stream));
  return count;
}

__device__ __forceinline__ int64_t segment_end(const int64_t* starts, int g, int num, int64_t n) {
  return g + 1 < num ? starts[g + 1] : n;
}

// The segments of more than `large` boxes, in segment order.
struct LargeSegments {
  int64_t* starts;  // [0 .. *count)
  int64_t* sizes;
  int* count;  // on the device
};

static __global__ void large_segment_flags_kernel(const int64_t* starts, const int* num_segments, int64_t n,
                                                  int64_t large, int64_t* sizes, uint8_t* flags) {
  const int num = *num_segments;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < n; g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t size = g < num ? segment_end(starts, static_cast<int>(g), num, n) - starts[g] : 0;
    sizes[g] = size;
    flags[g] = size > large ? 1 : 0;
  }
}

// Stays on the device (no host synchronisation).
static LargeSegments select_large_segments(const Segments& seg, int64_t n, int64_t large, DeviceAllocator& alloc,
                                           cudaStream_t stream) {
  int64_t* sizes = take<int64_t>(alloc, n);
  uint8_t* flags = take<uint8_t>(alloc, n);
  large_segment_flags_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(seg.starts, seg.num_segments, n, large,
                                                                               sizes, flags);
  LargeSegments out{take<int64_t>(alloc, n), take<int64_t>(alloc, n), take<int>(alloc, 1)};
  int* count2 = take<int>(alloc, 1);
  select_flagged(seg.starts, flags, out.starts, out.count, n, alloc, stream);
  select_flagged(sizes, flags, out.sizes, count2, n, alloc, stream);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return out;
}

// One segment 0..n-1 in the given order (null: 0..n-1).
static Segments single_segment(int64_t* order, int64_t n, DeviceAllocator& alloc, cudaStream_t stream) {
  Segments s{order, take<int64_t>(alloc, 1), take<int>(alloc, 1)};
  if (s.order == nullptr) {
    s.order = take<int64_t>(alloc, n);
    iota_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(s.order, n);
  }
  const int one = 1;
  SNIPER_CUDA_CHECK(cudaMemsetAsync(s.starts, 0, sizeof(int64_t), stream));
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(s.num_segments, &one, sizeof(int), cudaMemcpyHostToDevice, stream));
  return s;
}

}  // namespace cuda
}  // namespace sniper
