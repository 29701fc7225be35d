// CUDA kernel of sniper::soft_nms: exact sequential greedy Soft-NMS.
//
// Boxes are sorted into per-group segments on the device; one launch runs a
// block per segment (grid-stride over segments, so thousands of groups share
// it). Each selection step is one pass over the group that decays, drops and
// finds the next maximum, reduced across the block. The host waits once, at
// the end, to learn how many boxes were kept.
#include "segments.cuh"

namespace sniper {
namespace cuda {
namespace {

template <typename A>
struct Candidate {
  A score;
  int64_t index;  // input index (the tie-breaker)
  int64_t pos;    // position in the segmented arrays, -1 for none
};

struct Better {
  template <typename A>
  __device__ __forceinline__ Candidate<A> operator()(const Candidate<A>& a,
                                                     const Candidate<A>& b) const {
    if (a.pos < 0) return b;
    if (b.pos < 0) return a;
    return score_before(a.score, a.index, b.score, b.index) ? a : b;
  }
};

template <typename A>
struct SoftNmsArgs {
  int64_t method;
  A sigma, iou_threshold, score_threshold;
};

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
soft_nms_segments_kernel(BoxesSoA<A> b, const T* scores, const int64_t* order,
                         const int64_t* starts, const int* num_segments,
                         int64_t n, SoftNmsArgs<A> p, A* score, uint8_t* alive,
                         A* final_score, uint8_t* keep_by_index) {
  using Reduce = cub::BlockReduce<Candidate<A>, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ Candidate<A> chosen;
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    Candidate<A> c{A(0), 0, -1};
    for (int64_t k = s + threadIdx.x; k < e; k += kThreads) {
      const A sc = to_acc(scores[order[k]]);
      const bool ok = sc >= p.score_threshold;
      score[k] = sc;
      alive[k] = ok;
      if (ok) c = Better()(c, Candidate<A>{sc, order[k], k});
    }
    while (true) {
      const Candidate<A> best_local = Reduce(tmp).Reduce(c, Better());
      __syncthreads();
      if (threadIdx.x == 0) chosen = best_local;
      __syncthreads();
      const Candidate<A> best = chosen;
      if (best.pos < 0) break;
      if (threadIdx.x == 0) {
        keep_by_index[best.index] = 1;
        final_score[best.index] = best.score;
      }
      const int64_t bp = best.pos;
      const A bx1 = b.x1[bp], by1 = b.y1[bp], bx2 = b.x2[bp], by2 = b.y2[bp],
              barea = b.area[bp];
      c = Candidate<A>{A(0), 0, -1};
      for (int64_t k = s + threadIdx.x; k < e; k += kThreads) {
        if (!alive[k]) continue;
        if (k == bp) {
          alive[k] = 0;
          continue;
        }
        const A iou = ::sniper::box_iou(bx1, by1, bx2, by2, barea, b.x1[k], b.y1[k],
                                        b.x2[k], b.y2[k], b.area[k]);
        A sc = score[k];
        if (iou > A(0)) {
          sc *= soft_nms_weight(p.method, iou, p.sigma, p.iou_threshold);
          score[k] = sc;
        }
        if (!(sc >= p.score_threshold)) {
          alive[k] = 0;
          continue;
        }
        c = Better()(c, Candidate<A>{sc, order[k], k});
      }
    }
    __syncthreads();
  }
}

template <typename T, typename A>
__global__ void store_scores_kernel(const A* src, const int* count, T* out, int64_t n) {
  const int64_t k_end = *count;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < k_end && k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = from_acc<T>(src[k]);
  }
}

template <typename T>
int64_t soft_nms_typed(const T* boxes, const T* scores, const int64_t* group,
                       int64_t n, SoftNmsArgs<typename Acc<T>::type> p,
                       int64_t* keep, T* kept_scores, DeviceAllocator& alloc,
                       cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const unsigned int blocks = blocks_for(n, kThreads);
  Segments seg;
  if (group != nullptr) {
    seg = segment_by_group(group, nullptr, n, alloc, stream);
  } else {  // one segment: 0..n-1
    seg = Segments{take<int64_t>(alloc, n), take<int64_t>(alloc, 1), take<int>(alloc, 1)};
    iota_kernel<<<blocks, kThreads, 0, stream>>>(seg.order, n);
    const int one = 1;
    SNIPER_CUDA_CHECK(cudaMemsetAsync(seg.starts, 0, sizeof(int64_t), stream));
    SNIPER_CUDA_CHECK(cudaMemcpyAsync(seg.num_segments, &one, sizeof(int),
                                      cudaMemcpyHostToDevice, stream));
  }
  BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);
  gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, seg.order, n, b);

  A* score = take<A>(alloc, n);
  uint8_t* alive = take<uint8_t>(alloc, n);
  A* final_score = take<A>(alloc, n);
  uint8_t* keep_by_index = take<uint8_t>(alloc, n);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(final_score, 0, sizeof(A) * n, stream));
  SNIPER_CUDA_CHECK(cudaMemsetAsync(keep_by_index, 0, n, stream));
  soft_nms_segments_kernel<T, A><<<blocks_for(n, 1, 16384), kThreads, 0, stream>>>(
      b, scores, seg.order, seg.starts, seg.num_segments, n, p, score, alive,
      final_score, keep_by_index);

  // Output order: decayed score descending, ties to the lower index (stable
  // sort of 0..n-1), then the kept ones selected in that order.
  int64_t* iota = take<int64_t>(alloc, n);
  iota_kernel<<<blocks, kThreads, 0, stream>>>(iota, n);
  A* sorted_scores = take<A>(alloc, n);
  int64_t* sorted_index = take<int64_t>(alloc, n);
  sort_pairs(final_score, sorted_scores, iota, sorted_index, n, /*descending=*/true, alloc, stream);
  uint8_t* flags = take<uint8_t>(alloc, n);
  gather_flags_kernel<<<blocks, kThreads, 0, stream>>>(keep_by_index, sorted_index, flags, n);
  int* count = take<int>(alloc, 1);
  int* count2 = take<int>(alloc, 1);
  A* kept_acc = take<A>(alloc, n);
  select_flagged(sorted_index, flags, keep, count, n, alloc, stream);
  select_flagged(sorted_scores, flags, kept_acc, count2, n, alloc, stream);
  store_scores_kernel<<<blocks, kThreads, 0, stream>>>(kept_acc, count, kept_scores, n);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return read_count(count, stream);
}

}  // namespace

int64_t soft_nms(const void* boxes, const void* scores, const int64_t* group,
                 int64_t n, int64_t method, double sigma, double iou_threshold,
                 double score_threshold, Dtype dtype, int64_t* keep,
                 void* kept_scores, DeviceAllocator& alloc, void* stream) {
  if (n == 0) return 0;
  check_count(n, "soft_nms");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    using A = typename Acc<scalar_t>::type;
    const SoftNmsArgs<A> p{method, static_cast<A>(sigma), static_cast<A>(iou_threshold),
                           static_cast<A>(score_threshold)};
    return soft_nms_typed(static_cast<const scalar_t*>(boxes),
                          static_cast<const scalar_t*>(scores), group, n, p, keep,
                          static_cast<scalar_t*>(kept_scores), alloc, as_stream(stream));
  });
}

}  // namespace cuda
}  // namespace sniper
