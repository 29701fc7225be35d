// CUDA kernels of sniper::nms and sniper::batched_nms.
//
// One group (nms): boxes sorted by score, a bitmask of which higher-scoring
// box suppresses which (64 boxes a word), then a single block walks the mask
// 64 boxes at a time. Many groups (batched_nms): boxes sorted into per-group
// segments by score; one block per segment runs the greedy loop, so thousands
// of groups share one launch and no mask of N^2 bits is ever built.
#include "segments.cuh"

namespace sniper {
namespace cuda {
namespace {

constexpr int kWord = 64;

template <typename A>
__global__ void nms_mask_kernel(BoxesSoA<A> b, int64_t n, int64_t words, A thr,
                                uint64_t* mask) {
  const int64_t col = blockIdx.x;
  __shared__ A cx1[kWord], cy1[kWord], cx2[kWord], cy2[kWord], carea[kWord];
  const int64_t c0 = col * kWord;
  const int cols = static_cast<int>(::sniper::min_<int64_t>(kWord, n - c0));
  if (threadIdx.x < cols) {
    const int64_t j = c0 + threadIdx.x;
    cx1[threadIdx.x] = b.x1[j];
    cy1[threadIdx.x] = b.y1[j];
    cx2[threadIdx.x] = b.x2[j];
    cy2[threadIdx.x] = b.y2[j];
    carea[threadIdx.x] = b.area[j];
  }
  __syncthreads();
  // Rows of blocks at or above the diagonal only: row block <= col.
  for (int64_t row = blockIdx.y; row <= col; row += gridDim.y) {
    const int64_t i = row * kWord + threadIdx.x;
    if (i >= n) continue;
    const A x1 = b.x1[i], y1 = b.y1[i], x2 = b.x2[i], y2 = b.y2[i], area = b.area[i];
    uint64_t bits = 0;
    for (int c = (row == col ? threadIdx.x + 1 : 0); c < cols; ++c) {
      if (::sniper::box_iou(x1, y1, x2, y2, area, cx1[c], cy1[c], cx2[c], cy2[c], carea[c]) > thr) {
        bits |= uint64_t(1) << c;
      }
    }
    mask[i * words + col] = bits;
  }
}

// Single block: decides box after box in score order, 64 at a time.
__global__ void nms_walk_kernel(const uint64_t* mask, int64_t n, int64_t words,
                                uint64_t* removed, uint8_t* keep) {
  __shared__ uint64_t diag[kWord];
  __shared__ uint64_t kept_bits;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  __syncthreads();
  for (int64_t cb = 0; cb < words; ++cb) {
    const int64_t base = cb * kWord;
    const int cnt = static_cast<int>(::sniper::min_<int64_t>(kWord, n - base));
    if (threadIdx.x < cnt) diag[threadIdx.x] = mask[(base + threadIdx.x) * words + cb];
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t word = removed[cb], bits = 0;
      for (int t = 0; t < cnt; ++t) {
        if (!((word >> t) & 1)) {
          bits |= uint64_t(1) << t;
          word |= diag[t];
        }
      }
      kept_bits = bits;
    }
    __syncthreads();
    const uint64_t bits = kept_bits;
    if (threadIdx.x < cnt) keep[base + threadIdx.x] = (bits >> threadIdx.x) & 1;
    for (int64_t w = cb + 1 + threadIdx.x; w < words; w += blockDim.x) {
      uint64_t acc = 0;
      for (uint64_t rest = bits; rest; rest &= rest - 1) {
        acc |= mask[(base + __ffsll(static_cast<long long>(rest)) - 1) * words + w];
      }
      removed[w] |= acc;
    }
    __syncthreads();
  }
}

// One block per segment (boxes of one group, by descending score).
template <typename A>
__global__ void nms_segments_kernel(BoxesSoA<A> b, const int64_t* order,
                                    const int64_t* starts, const int* num_segments,
                                    int64_t n, A thr, uint8_t* suppressed,
                                    uint8_t* keep_by_index) {
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    for (int64_t i = s; i < e; ++i) {
      __syncthreads();
      if (suppressed[i]) continue;
      if (threadIdx.x == 0) keep_by_index[order[i]] = 1;
      for (int64_t j = i + 1 + threadIdx.x; j < e; j += blockDim.x) {
        if (!suppressed[j] && b.iou(i, j) > thr) suppressed[j] = 1;
      }
    }
    __syncthreads();
  }
}

template <typename T>
int64_t nms_typed(const T* boxes, const T* scores, const int64_t* group,
                  int64_t n, double iou_threshold, int64_t* keep,
                  DeviceAllocator& alloc, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const A thr = static_cast<A>(iou_threshold);
  const unsigned int blocks = blocks_for(n, kThreads);

  // Score order: descending, ties to the lower index (the sort is stable).
  A* keys = take<A>(alloc, n);
  A* sorted_keys = take<A>(alloc, n);
  int64_t* iota = take<int64_t>(alloc, n);
  int64_t* by_score = take<int64_t>(alloc, n);
  score_keys_kernel<<<blocks, kThreads, 0, stream>>>(scores, keys, n);
  iota_kernel<<<blocks, kThreads, 0, stream>>>(iota, n);
  sort_pairs(keys, sorted_keys, iota, by_score, n, /*descending=*/true, alloc, stream);

  uint8_t* flags = take<uint8_t>(alloc, n);  // keep flag of by_score[k]
  if (group == nullptr) {
    BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);
    gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, by_score, n, b);
    const int64_t words = (n + kWord - 1) / kWord;
    uint64_t* mask = take<uint64_t>(alloc, n * words);
    uint64_t* removed = take<uint64_t>(alloc, words);
    const dim3 grid(static_cast<unsigned int>(words),
                    static_cast<unsigned int>(::sniper::min_<int64_t>(words, 65535)));
    nms_mask_kernel<<<grid, kWord, 0, stream>>>(b, n, words, thr, mask);
    nms_walk_kernel<<<1, 1024, 0, stream>>>(mask, n, words, removed, flags);
  } else {
    Segments seg = segment_by_group(group, by_score, n, alloc, stream);
    BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);
    gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, seg.order, n, b);
    uint8_t* suppressed = take<uint8_t>(alloc, n);
    uint8_t* keep_by_index = take<uint8_t>(alloc, n);
    SNIPER_CUDA_CHECK(cudaMemsetAsync(suppressed, 0, n, stream));
    SNIPER_CUDA_CHECK(cudaMemsetAsync(keep_by_index, 0, n, stream));
    nms_segments_kernel<<<blocks_for(n, 1, 16384), kThreads, 0, stream>>>(
        b, seg.order, seg.starts, seg.num_segments, n, thr, suppressed, keep_by_index);
    gather_flags_kernel<<<blocks, kThreads, 0, stream>>>(keep_by_index, by_score, flags, n);
  }
  int* count = take<int>(alloc, 1);
  select_flagged(by_score, flags, keep, count, n, alloc, stream);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return read_count(count, stream);
}

}  // namespace

int64_t nms(const void* boxes, const void* scores, const int64_t* group,
            int64_t n, double iou_threshold, Dtype dtype, int64_t* keep,
            DeviceAllocator& alloc, void* stream) {
  if (n == 0) return 0;
  check_count(n, "nms");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    return nms_typed(static_cast<const scalar_t*>(boxes),
                     static_cast<const scalar_t*>(scores), group, n,
                     iou_threshold, keep, alloc, as_stream(stream));
  });
}

}  // namespace cuda
}  // namespace sniper
