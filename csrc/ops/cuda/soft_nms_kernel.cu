// CUDA kernels of sniper::soft_nms: exact sequential greedy Soft-NMS, the
// same selections and the same bits as the CPU kernel (same comparisons,
// same float operations; exp_ is bit-identical on both sides). Groups of up
// to NmsTuning::soft_nms_large_group boxes: a 256-thread block each, many
// groups per launch; larger groups: a 1024-thread block each that visits
// only the runs of boxes whose x-range can overlap the selected box. The
// host waits once, at the end, to learn how many boxes were kept.
// The fixed-capacity variant (soft_nms_fixed) runs the same kernels, which
// then write each group's selections straight into its row (selection order
// is output order, see SoftNmsOut) and stop at the capacity: no compaction,
// no host wait. Design and expected timings: docs/kernels.md, "Soft-NMS".
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
  __device__ __forceinline__ Candidate<A> operator()(const Candidate<A>& a, const Candidate<A>& b) const {
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

// Where the kernels put a group's selections.
// * soft_nms (rows null): keep_by_index and final_score, by input index; the
//   host code sorts and compacts them afterwards.
// * soft_nms_fixed: row id of rows / row_scores ([groups, cap]) in selection
//   order, at most cap, and count[id]; id = group[index] of the segment's
//   boxes, and a segment whose id lies outside [0, groups) is skipped.
// Selection order is output order (decayed score descending, ties to the
// lower index): scores only decay (weights lie in [0, 1], live scores are >=
// score_threshold >= 0), so a box selected after box a has, at a's
// selection, a score below a's or equal with a higher index, and its final
// score is no higher. So a group's first cap selections are the first cap
// boxes of its output, and the loop may stop there.
template <typename T, typename A>
struct SoftNmsOut {
  uint8_t* keep_by_index;
  A* final_score;
  const int64_t* group;
  int64_t groups, cap;
  int64_t* rows;
  T* row_scores;
  int64_t* count;

  // Selections a group may make.
  __device__ __forceinline__ int64_t limit() const { return rows != nullptr ? cap : INT64_MAX; }
  // The row of the group whose box `index` is, -1 to skip it (0 for soft_nms).
  __device__ __forceinline__ int64_t row_of(int64_t index) const {
    if (rows == nullptr) return 0;
    const int64_t id = group[index];
    return id >= 0 && id < groups ? id : -1;
  }
  // The group's selection `rank` (thread 0).
  __device__ __forceinline__ void record(int64_t row, int64_t rank, int64_t index, A score) const {
    if (rows == nullptr) {
      keep_by_index[index] = 1;
      final_score[index] = score;
    } else {
      rows[row * cap + rank] = index;
      row_scores[row * cap + rank] = from_acc<T>(score);
    }
  }
  // The group made `selected` selections (thread 0).
  __device__ __forceinline__ void finish(int64_t row, int64_t selected) const {
    if (rows != nullptr) count[row] = selected;
  }
};

// Decays the live box k against the selected box (s*) and returns its
// candidate (pos -1 when it is, or becomes, dead). The CPU kernel's step.
template <typename A>
__device__ __forceinline__ Candidate<A> decay(const BoxesSoA<A>& b, const int64_t* order, const SoftNmsArgs<A>& p,
                                              A sx1, A sy1, A sx2, A sy2, A sarea, int64_t selected, int64_t k,
                                              A* score, uint8_t* alive) {
  const Candidate<A> none{A(0), 0, -1};
  if (!alive[k]) return none;
  if (k == selected) {
    alive[k] = 0;
    return none;
  }
  const A iou = ::sniper::box_iou(sx1, sy1, sx2, sy2, sarea, b.x1[k], b.y1[k], b.x2[k], b.y2[k], b.area[k]);
  A sc = score[k];
  if (iou > A(0)) {
    sc *= soft_nms_weight(p.method, iou, p.sigma, p.iou_threshold);
    score[k] = sc;
  }
  if (!(sc >= p.score_threshold)) {
    alive[k] = 0;
    return none;
  }
  return Candidate<A>{sc, order[k], k};
}

// Small groups: one block of kThreads per group, skipping groups of more
// than `large` boxes.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    soft_nms_segments_kernel(BoxesSoA<A> b, const T* scores, const int64_t* order, const int64_t* starts,
                             const int* num_segments, int64_t n, int64_t large, SoftNmsArgs<A> p, A* score,
                             uint8_t* alive, SoftNmsOut<T, A> out) {
  using Reduce = cub::BlockReduce<Candidate<A>, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ Candidate<A> chosen;
  const int num = *num_segments;
  const int64_t limit = out.limit();
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    const int64_t row = out.row_of(order[s]);
    if (e - s > large || row < 0) continue;
    int64_t selected = 0;
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
      if (threadIdx.x == 0) out.record(row, selected, best.index, best.score);
      if (++selected == limit) break;
      const int64_t bp = best.pos;
      const A bx1 = b.x1[bp], by1 = b.y1[bp], bx2 = b.x2[bp], by2 = b.y2[bp], barea = b.area[bp];
      c = Candidate<A>{A(0), 0, -1};
      for (int64_t k = s + threadIdx.x; k < e; k += kThreads) {
        c = Better()(c, decay(b, order, p, bx1, by1, bx2, by2, barea, bp, k, score, alive));
      }
    }
    if (threadIdx.x == 0) out.finish(row, selected);
    __syncthreads();
  }
}

constexpr int kLargeThreads = 1024;

// Large groups: one block of kLargeThreads per group of more than `large`
// boxes (grid-stride over the list of them). The group's boxes sit in x1
// order (stable) in the segmented arrays; thread t owns the run of E =
// ceil(len / kLargeThreads) consecutive boxes [t E, t E + E) and alone
// reads and writes their scores and liveness, keeping its best live box
// (its candidate) in registers. A run can meet the selected box s only if
// its running max of x2 (over the group, up to the run's last box) is >
// x1(s) and its first x1 is < x2(s); otherwise every box of it has IoU 0
// with s (the CPU kernel's window, with runs for boxes). A step: block
// reduce of the candidates, thread 0 publishes the choice, the runs that
// can meet it are decayed and their candidates recomputed.
template <typename T, typename A>
__global__ void __launch_bounds__(kLargeThreads)
    soft_nms_large_kernel(BoxesSoA<A> b, const T* scores, const int64_t* order, const int64_t* large_starts,
                          const int64_t* large_sizes, const int* large_count, SoftNmsArgs<A> p, A* score,
                          uint8_t* alive, SoftNmsOut<T, A> out) {
  using Reduce = cub::BlockReduce<Candidate<A>, kLargeThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ A run_x2[kLargeThreads];  // max x2 of each run, then running max over runs
  // The choice of a step and its box, double-buffered by step parity: thread
  // 0 writes the next step's entry while others may still read this one.
  __shared__ Candidate<A> chosen[2];
  __shared__ A sel[2][5];
  const int t = threadIdx.x;
  const int num = *large_count;
  const int64_t limit = out.limit();
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = large_starts[g], len = large_sizes[g], e = s + len;
    const int64_t row = out.row_of(order[s]);
    if (row < 0) continue;
    const int64_t per = (len + kLargeThreads - 1) / kLargeThreads;  // E
    const int64_t r0 = ::sniper::min_<int64_t>(e, s + t * per);
    const int64_t r1 = ::sniper::min_<int64_t>(e, r0 + per);

    // Initial scores, liveness, candidate, and the run's x-extent.
    Candidate<A> mine{A(0), 0, -1};
    A max_x2 = A(-INFINITY);
    for (int64_t k = r0; k < r1; ++k) {
      const A sc = to_acc(scores[order[k]]);
      const bool ok = sc >= p.score_threshold;
      score[k] = sc;
      alive[k] = ok;
      if (ok) mine = Better()(mine, Candidate<A>{sc, order[k], k});
      max_x2 = ::sniper::max_(max_x2, b.x2[k]);
    }
    const A run_x1 = r0 < r1 ? b.x1[r0] : A(INFINITY);  // an empty run meets nothing
    run_x2[t] = max_x2;
    __syncthreads();
    if (t == 0) {
      for (int i = 1; i < kLargeThreads; ++i) run_x2[i] = ::sniper::max_(run_x2[i - 1], run_x2[i]);
    }
    __syncthreads();
    const A run_max_x2 = run_x2[t];

    int64_t selected = 0;
    for (int step = 0;; step ^= 1) {
      const Candidate<A> best = Reduce(tmp).Reduce(mine, Better());
      if (t == 0) {
        chosen[step] = best;
        if (best.pos >= 0) {
          out.record(row, selected, best.index, best.score);
          sel[step][0] = b.x1[best.pos];
          sel[step][1] = b.y1[best.pos];
          sel[step][2] = b.x2[best.pos];
          sel[step][3] = b.y2[best.pos];
          sel[step][4] = b.area[best.pos];
        }
      }
      __syncthreads();
      const int64_t bp = chosen[step].pos;
      if (bp < 0) break;
      if (++selected == limit) break;
      const A sx1 = sel[step][0], sx2 = sel[step][2];
      const bool own = bp >= r0 && bp < r1;
      if (own || (run_max_x2 > sx1 && run_x1 < sx2)) {
        const A sy1 = sel[step][1], sy2 = sel[step][3], sarea = sel[step][4];
        mine = Candidate<A>{A(0), 0, -1};
        for (int64_t k = r0; k < r1; ++k) {
          mine = Better()(mine, decay(b, order, p, sx1, sy1, sx2, sy2, sarea, bp, k, score, alive));
        }
      }
    }
    if (t == 0) out.finish(row, selected);
    __syncthreads();  // run_x2 and chosen are rewritten for the next group
  }
}

// x1 of each box in the accumulation type; + 0 makes -0.0 sort with +0.0.
template <typename T, typename A>
__global__ void x1_keys_kernel(const T* boxes, A* keys, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = to_acc(boxes[4 * i]) + A(0);
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

// The selections of every group, into `out`: boxes segmented by `group`
// (null: one group; with key_bits < 64 its ids lie in [0, 2^key_bits)),
// groups of up to tuning.soft_nms_large_group boxes on the small-group
// kernel, larger ones on the large-group kernel. Planned from n alone.
template <typename T>
void soft_nms_run(const T* boxes, const T* scores, const int64_t* group, int64_t n, int key_bits,
                  SoftNmsArgs<typename Acc<T>::type> p, const SoftNmsOut<T, typename Acc<T>::type>& out,
                  DeviceAllocator& alloc, cudaStream_t stream, const NmsTuning& tuning) {
  using A = typename Acc<T>::type;
  const unsigned int blocks = blocks_for(n, kThreads);
  const int64_t large = tuning.soft_nms_large_group;
  const bool any_large = n > large;

  // With a possible large group, boxes in x1 order first (stable), so that
  // every group's segment is in x1 order too.
  int64_t* x1_order = nullptr;
  if (any_large) {
    A* keys = take<A>(alloc, n);
    A* sorted_keys = take<A>(alloc, n);
    int64_t* iota = take<int64_t>(alloc, n);
    x1_order = take<int64_t>(alloc, n);
    x1_keys_kernel<<<blocks, kThreads, 0, stream>>>(boxes, keys, n);
    iota_kernel<<<blocks, kThreads, 0, stream>>>(iota, n);
    sort_pairs(keys, sorted_keys, iota, x1_order, n, /*descending=*/false, alloc, stream);
  }
  const Segments seg = group != nullptr ? segment_by_group(group, x1_order, n, alloc, stream, key_bits)
                                        : single_segment(x1_order, n, alloc, stream);
  BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);
  gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, seg.order, n, b);

  A* score = take<A>(alloc, n);
  uint8_t* alive = take<uint8_t>(alloc, n);
  soft_nms_segments_kernel<T, A><<<blocks_for(n, 1, 16384), kThreads, 0, stream>>>(
      b, scores, seg.order, seg.starts, seg.num_segments, n, large, p, score, alive, out);
  if (any_large) {
    const LargeSegments ls = select_large_segments(seg, n, large, alloc, stream);
    const unsigned int large_blocks = static_cast<unsigned int>(::sniper::min_<int64_t>(n / (large + 1), 4096));
    soft_nms_large_kernel<T, A><<<large_blocks, kLargeThreads, 0, stream>>>(b, scores, seg.order, ls.starts, ls.sizes,
                                                                            ls.count, p, score, alive, out);
  }
}

template <typename T>
int64_t soft_nms_typed(const T* boxes, const T* scores, const int64_t* group, int64_t n,
                       SoftNmsArgs<typename Acc<T>::type> p, int64_t* keep, T* kept_scores, DeviceAllocator& alloc,
                       cudaStream_t stream, const NmsTuning& tuning) {
  using A = typename Acc<T>::type;
  const unsigned int blocks = blocks_for(n, kThreads);
  A* final_score = take<A>(alloc, n);
  uint8_t* keep_by_index = take<uint8_t>(alloc, n);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(final_score, 0, sizeof(A) * n, stream));
  SNIPER_CUDA_CHECK(cudaMemsetAsync(keep_by_index, 0, n, stream));
  const SoftNmsOut<T, A> out{keep_by_index, final_score, nullptr, 0, 0, nullptr, nullptr, nullptr};
  soft_nms_run(boxes, scores, group, n, 64, p, out, alloc, stream, tuning);

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

// The fixed-capacity variant: group ids outside [0, groups) mapped to
// `groups` (one segment, which the kernels skip), rows written by the
// kernels. No host reads, no host copies.
template <typename T>
void soft_nms_fixed_typed(const T* boxes, const T* scores, const int64_t* group, int64_t n, int64_t groups,
                          SoftNmsArgs<typename Acc<T>::type> p, int64_t cap, int64_t* keep, T* kept_scores,
                          int64_t* count, DeviceAllocator& alloc, cudaStream_t stream, const NmsTuning& tuning) {
  using A = typename Acc<T>::type;
  int64_t* mapped = take<int64_t>(alloc, n);
  map_groups_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(group, n, groups, mapped);
  const SoftNmsOut<T, A> out{nullptr, nullptr, group, groups, cap, keep, kept_scores, count};
  soft_nms_run(boxes, scores, mapped, n, map_key_bits(groups), p, out, alloc, stream, tuning);
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

int64_t soft_nms(const void* boxes, const void* scores, const int64_t* group, int64_t n, const SoftNmsSpec& spec,
                 Dtype dtype, int64_t* keep, void* kept_scores, DeviceAllocator& alloc, void* stream,
                 const NmsTuning& tuning) {
  if (n == 0) return 0;
  check_count(n, "soft_nms");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    using A = typename Acc<scalar_t>::type;
    const SoftNmsArgs<A> p{spec.method, static_cast<A>(spec.sigma), static_cast<A>(spec.iou_threshold),
                           static_cast<A>(spec.score_threshold)};
    return soft_nms_typed(static_cast<const scalar_t*>(boxes), static_cast<const scalar_t*>(scores), group, n, p, keep,
                          static_cast<scalar_t*>(kept_scores), alloc, as_stream(stream), tuning);
  });
}

void soft_nms_fixed(const void* boxes, const void* scores, const int64_t* group, int64_t n, int64_t groups,
                    const SoftNmsSpec& spec, int64_t capacity, Dtype dtype, int64_t* keep, void* kept_scores,
                    int64_t* count, DeviceAllocator& alloc, void* stream, const NmsTuning& tuning) {
  if (n == 0 || groups <= 0 || capacity <= 0) return;
  check_count(n, "soft_nms_fixed");
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    using A = typename Acc<scalar_t>::type;
    const SoftNmsArgs<A> p{spec.method, static_cast<A>(spec.sigma), static_cast<A>(spec.iou_threshold),
                           static_cast<A>(spec.score_threshold)};
    soft_nms_fixed_typed(static_cast<const scalar_t*>(boxes), static_cast<const scalar_t*>(scores), group, n, groups, p,
                         capacity, keep, static_cast<scalar_t*>(kept_scores), count, alloc, as_stream(stream), tuning);
  });
}

}  // namespace cuda
}  // namespace sniper
