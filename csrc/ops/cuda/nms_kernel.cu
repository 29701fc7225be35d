// CUDA kernels of sniper::nms and sniper::batched_nms: exact greedy NMS on
// boxes sorted by score (ties to the lower index), per group segment. nms and
// groups above NmsTuning::nms_large_segment: a suppression bitmask (batched
// under NmsTuning::nms_mask_budget, column tiles for a group over it) walked
// by one block per segment; smaller groups: one block per segment running the
// greedy loop. The fixed-capacity variants (nms_fixed, batched_nms_fixed) plan
// everything from the host's sizes alone and never wait for the device:
// nms_fixed takes the bitmask path with its jobs written on the device and the
// walk listing the kept boxes; batched_nms_fixed runs the greedy loop on every
// group, writing the group's row as it keeps boxes and stopping at the
// capacity. Design and expected timings: docs/kernels.md, "NMS".
#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

#include "segments.cuh"

namespace sniper {
namespace cuda {
namespace {

constexpr int kWord = 64;
constexpr int kWalkThreads = 512;
constexpr int kCrossThreads = 256;
constexpr int64_t kCrossRange = 1024;  // kept boxes compared per cross block

// One bitmask problem: segment positions [start, start + n) of the sorted
// boxes, decided with the mask words at mask_off (n rows of `words`) and the
// suppressed bits at removed_off (`words` words).
struct MaskJob {
  int64_t start, n, words;
  int64_t mask_off, removed_off;
  int64_t col_off;  // first column block of the job in its launch's grid
};

// grid.x: the column blocks of all jobs of the launch; grid.y: row blocks
// (grid-stride). Only rows above the diagonal are written, and only those
// are read by the walk.
template <typename A>
__global__ void __launch_bounds__(kWord)
    nms_mask_kernel(BoxesSoA<A> b, const MaskJob* jobs, int num_jobs, A thr, uint64_t* mask) {
  int lo = 0, hi = num_jobs - 1;  // the last job with col_off <= blockIdx.x
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (jobs[mid].col_off <= int64_t(blockIdx.x)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const MaskJob job = jobs[lo];
  const int64_t col = int64_t(blockIdx.x) - job.col_off;
  if (int64_t(blockIdx.y) > col) return;  // the whole block: below the diagonal
  __shared__ A cx1[kWord], cy1[kWord], cx2[kWord], cy2[kWord], carea[kWord];
  const int64_t c0 = col * kWord;
  const int cols = static_cast<int>(::sniper::min_<int64_t>(kWord, job.n - c0));
  if (threadIdx.x < cols) {
    const int64_t j = job.start + c0 + threadIdx.x;
    cx1[threadIdx.x] = b.x1[j];
    cy1[threadIdx.x] = b.y1[j];
    cx2[threadIdx.x] = b.x2[j];
    cy2[threadIdx.x] = b.y2[j];
    carea[threadIdx.x] = b.area[j];
  }
  __syncthreads();
  uint64_t* m = mask + job.mask_off;
  for (int64_t row = blockIdx.y; row <= col; row += gridDim.y) {
    const int64_t i = row * kWord + threadIdx.x;
    if (i >= job.n) continue;
    const int64_t p = job.start + i;
    const A x1 = b.x1[p], y1 = b.y1[p], x2 = b.x2[p], y2 = b.y2[p], area = b.area[p];
    uint64_t bits = 0;
    for (int c = (row == col ? threadIdx.x + 1 : 0); c < cols; ++c) {
      if (::sniper::box_iou(x1, y1, x2, y2, area, cx1[c], cy1[c], cx2[c], cy2[c], carea[c]) > thr) {
        bits |= uint64_t(1) << c;
      }
    }
    m[i * job.words + col] = bits;
  }
}

// One block per job: decides the boxes in score order, 64 at a time,
// starting from the suppressed bits already in `removed` (zero, or set by
// the cross kernel). Sets keep_by_index[order[p]] for every kept position
// p (unless keep_by_index is null). With kept_list (one job per launch),
// also appends the kept positions to kept_list[*kept_count ..] and advances
// *kept_count.
__global__ void __launch_bounds__(kWalkThreads)
    nms_walk_kernel(const MaskJob* jobs, const uint64_t* mask, uint64_t* removed_all, const int64_t* order,
                    uint8_t* keep_by_index, int64_t* kept_list, int64_t* kept_count) {
  __shared__ uint64_t diag[kWord];
  __shared__ uint64_t kept_bits;
  const MaskJob job = jobs[blockIdx.x];
  const uint64_t* m = mask + job.mask_off;
  uint64_t* removed = removed_all + job.removed_off;
  const int64_t words = job.words;
  int64_t listed = kept_list != nullptr ? *kept_count : 0;
  for (int64_t cb = 0; cb < words; ++cb) {
    const int64_t base = cb * kWord;
    const int cnt = static_cast<int>(::sniper::min_<int64_t>(kWord, job.n - base));
    if (threadIdx.x < cnt) diag[threadIdx.x] = m[(base + threadIdx.x) * words + cb];
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
    if (threadIdx.x < cnt && ((bits >> threadIdx.x) & 1)) {
      const int64_t p = job.start + base + threadIdx.x;
      if (keep_by_index != nullptr) keep_by_index[order[p]] = 1;
      if (kept_list != nullptr) {
        const uint64_t below = (uint64_t(1) << threadIdx.x) - 1;
        kept_list[listed + __popcll(bits & below)] = p;
      }
    }
    listed += __popcll(bits);
    for (int64_t w = cb + 1 + threadIdx.x; w < words; w += blockDim.x) {
      uint64_t acc = 0;
      for (uint64_t rest = bits; rest; rest &= rest - 1) {
        acc |= m[(base + __ffsll(static_cast<long long>(rest)) - 1) * words + w];
      }
      removed[w] |= acc;
    }
    __syncthreads();
  }
  if (kept_list != nullptr && threadIdx.x == 0) *kept_count = listed;
}

// Tiled path: marks in `removed` (bit c of word c / 64) the boxes of the
// tile at positions [t0, t0 + tn) that one of the kept boxes listed before
// (kept_list[0 .. *kept_count), all ranked higher) suppresses. grid.x:
// 256-box columns of the tile; grid.y: ranges of kCrossRange kept boxes
// (grid-stride; blocks past *kept_count do nothing).
template <typename A>
__global__ void __launch_bounds__(kCrossThreads)
    nms_cross_kernel(BoxesSoA<A> b, int64_t t0, int64_t tn, const int64_t* kept_list, const int64_t* kept_count, A thr,
                     uint64_t* removed) {
  __shared__ A kx1[kCrossThreads], ky1[kCrossThreads], kx2[kCrossThreads], ky2[kCrossThreads], karea[kCrossThreads];
  const int64_t c = blockIdx.x * int64_t(kCrossThreads) + threadIdx.x;
  const bool valid = c < tn;
  A x1 = A(0), y1 = A(0), x2 = A(0), y2 = A(0), area = A(0);
  if (valid) {
    x1 = b.x1[t0 + c];
    y1 = b.y1[t0 + c];
    x2 = b.x2[t0 + c];
    y2 = b.y2[t0 + c];
    area = b.area[t0 + c];
  }
  const int64_t count = *kept_count;
  bool hit = false;
  for (int64_t r0 = blockIdx.y * kCrossRange; r0 < count; r0 += int64_t(gridDim.y) * kCrossRange) {
    const int64_t r1 = ::sniper::min_<int64_t>(count, r0 + kCrossRange);
    for (int64_t q0 = r0; q0 < r1; q0 += kCrossThreads) {
      const int cnt = static_cast<int>(::sniper::min_<int64_t>(kCrossThreads, r1 - q0));
      __syncthreads();  // the previous stage has been read
      if (threadIdx.x < cnt) {
        const int64_t p = kept_list[q0 + threadIdx.x];
        kx1[threadIdx.x] = b.x1[p];
        ky1[threadIdx.x] = b.y1[p];
        kx2[threadIdx.x] = b.x2[p];
        ky2[threadIdx.x] = b.y2[p];
        karea[threadIdx.x] = b.area[p];
      }
      __syncthreads();
      for (int q = 0; valid && !hit && q < cnt; ++q) {
        hit = ::sniper::box_iou(kx1[q], ky1[q], kx2[q], ky2[q], karea[q], x1, y1, x2, y2, area) > thr;
      }
    }
  }
  if (hit) {
    atomicOr(reinterpret_cast<unsigned long long*>(removed + c / kWord), static_cast<unsigned long long>(1)
                                                                             << (c % kWord));
  }
}

// The greedy loop of one block over the segment positions [s, e) (score
// order): thread 0 calls kept(i, rank) for the kept positions, in order,
// and the loop stops after max_keep of them (later positions cannot change
// the earlier decisions). Returns the number kept, in every thread.
template <typename A, typename F>
__device__ int64_t nms_greedy_segment(const BoxesSoA<A>& b, int64_t s, int64_t e, A thr, int64_t max_keep,
                                      uint8_t* suppressed, F&& kept) {
  int64_t count = 0;
  for (int64_t i = s; i < e; ++i) {
    __syncthreads();
    if (suppressed[i]) continue;
    if (threadIdx.x == 0) kept(i, count);
    if (++count == max_keep) break;
    for (int64_t j = i + 1 + threadIdx.x; j < e; j += blockDim.x) {
      if (!suppressed[j] && b.iou(i, j) > thr) suppressed[j] = 1;
    }
  }
  return count;
}

// One block per segment of at most `large` boxes (larger ones are left to
// the bitmask path).
template <typename A>
__global__ void nms_segments_kernel(BoxesSoA<A> b, const int64_t* order, const int64_t* starts, const int* num_segments,
                                    int64_t n, int64_t large, A thr, uint8_t* suppressed, uint8_t* keep_by_index) {
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    if (e - s > large) continue;
    nms_greedy_segment(b, s, e, thr, INT64_MAX, suppressed, [&](int64_t i, int64_t) { keep_by_index[order[i]] = 1; });
    __syncthreads();
  }
}

// batched_nms_fixed: one block per segment, of any size. The segment's group
// id (group[order[s]]) picks its row of keep ([groups, cap]); the segment of
// the ids outside [0, groups) is skipped. The row gets the kept indices in
// output order, at most cap of them, and count[id] their number.
template <typename A>
__global__ void nms_segments_fixed_kernel(BoxesSoA<A> b, const int64_t* order, const int64_t* starts,
                                          const int* num_segments, const int64_t* group, int64_t n, int64_t groups,
                                          int64_t cap, A thr, uint8_t* suppressed, int64_t* keep, int64_t* count) {
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    const int64_t id = group[order[s]];
    if (id < 0 || id >= groups) continue;
    int64_t* row = keep + id * cap;
    const int64_t kept =
        nms_greedy_segment(b, s, e, thr, cap, suppressed, [&](int64_t i, int64_t rank) { row[rank] = order[i]; });
    if (threadIdx.x == 0) count[id] = kept;
    __syncthreads();
  }
}

// The jobs of one segment [start, start + size) as nms_bitmask plans them
// from the host's sizes: one job, or with `tiled` one per `tile` boxes.
// Written here rather than copied from the host, so that nothing is read
// from host memory when the launch runs (capturable in a CUDA graph).
static __global__ void segment_jobs_kernel(MaskJob* jobs, int64_t start, int64_t size, int64_t tile, bool tiled,
                                           int64_t count) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t0 = tiled ? k * tile : 0;
    const int64_t tn = tiled ? ::sniper::min_<int64_t>(tile, size - t0) : size;
    jobs[k] = MaskJob{start + t0, tn, (tn + kWord - 1) / kWord, 0, 0, 0};
  }
}

// nms_fixed: keep[q] = order[list[q]] for q < min(*listed, cap), and the
// count. keep is prefilled with -1.
static __global__ void fixed_list_kernel(const int64_t* order, const int64_t* list, const int64_t* listed, int64_t cap,
                                         int64_t* keep, int64_t* count) {
  const int64_t k = ::sniper::min_<int64_t>(*listed, cap);
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < k; q += int64_t(gridDim.x) * blockDim.x) {
    keep[q] = order[list[q]];
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *count = k;
}

// Boxes per tile for a mask budget: 64 w boxes need 512 w^2 bytes.
int64_t tile_words(int64_t budget) {
  int64_t w = static_cast<int64_t>(std::sqrt(static_cast<double>(budget) / 512.0));
  while ((w + 1) * (w + 1) * 512 <= budget) ++w;
  while (w > 1 && w * w * 512 > budget) --w;
  return w < 1 ? 1 : w;
}

// The kept positions of a one-segment bitmask run, in order: list[0 ..
// *count), on the device.
struct KeptList {
  int64_t* list;  // n entries
  int64_t* count;
};

// Runs the bitmask path on the segments (start, size) listed on the host.
// With `listed` (one segment, whose size the host knows without reading the
// device), the jobs are written on the device, the kept positions are listed
// in order into *listed, and nothing else passes between host and device.
template <typename A>
void nms_bitmask(const BoxesSoA<A>& b, const int64_t* order, const std::vector<std::pair<int64_t, int64_t>>& segments,
                 A thr, int64_t budget, uint8_t* keep_by_index, DeviceAllocator& alloc, cudaStream_t stream,
                 const KeptList* listed = nullptr) {
  if (segments.empty()) return;
  if (listed != nullptr && segments.size() != 1) throw std::logic_error("nms_bitmask: a kept list needs one segment");
  const int64_t tw = tile_words(budget), tile = tw * kWord;

  // Plan: launches of batched jobs, or one tiled segment (a job per tile).
  struct Launch {
    size_t first = 0, count = 0;
    bool tiled = false;
    int64_t seg_start = 0;
    int64_t col_blocks = 0, max_words = 0, mask_words = 0, removed_words = 0;
  };
  std::vector<MaskJob> jobs;
  std::vector<Launch> plan;
  int64_t mask_cap = 0, removed_cap = 0, list_cap = 0;
  Launch cur;
  auto flush = [&] {
    if (cur.count > 0) plan.push_back(cur);
    cur = Launch();
    cur.first = jobs.size();
  };
  for (const auto& [start, size] : segments) {
    const int64_t words = (size + kWord - 1) / kWord;
    const int64_t mask_words = size * words;
    if (mask_words * 8 > budget) {
      flush();
      Launch t;
      t.first = jobs.size();
      t.tiled = true;
      t.seg_start = start;
      for (int64_t t0 = 0; t0 < size; t0 += tile) {
        const int64_t tn = ::sniper::min_<int64_t>(tile, size - t0);
        jobs.push_back(MaskJob{start + t0, tn, (tn + kWord - 1) / kWord, 0, 0, 0});
        ++t.count;
      }
      plan.push_back(t);
      mask_cap = ::sniper::max_<int64_t>(mask_cap, tile * tw);
      removed_cap = ::sniper::max_<int64_t>(removed_cap, tw);
      list_cap = ::sniper::max_<int64_t>(list_cap, size);
      cur.first = jobs.size();
      continue;
    }
    if (cur.count > 0 && (cur.mask_words + mask_words) * 8 > budget) flush();
    jobs.push_back(MaskJob{start, size, words, cur.mask_words, cur.removed_words, cur.col_blocks});
    ++cur.count;
    cur.mask_words += mask_words;
    cur.removed_words += words;
    cur.col_blocks += words;
    cur.max_words = ::sniper::max_<int64_t>(cur.max_words, words);
    mask_cap = ::sniper::max_<int64_t>(mask_cap, cur.mask_words);
    removed_cap = ::sniper::max_<int64_t>(removed_cap, cur.removed_words);
  }
  flush();

  const int64_t num_jobs = static_cast<int64_t>(jobs.size());
  MaskJob* d_jobs = take<MaskJob>(alloc, num_jobs);
  if (listed != nullptr) {
    segment_jobs_kernel<<<blocks_for(num_jobs, kThreads), kThreads, 0, stream>>>(
        d_jobs, segments[0].first, segments[0].second, tile, plan[0].tiled, num_jobs);
  } else {
    SNIPER_CUDA_CHECK(cudaMemcpyAsync(d_jobs, jobs.data(), sizeof(MaskJob) * num_jobs, cudaMemcpyHostToDevice, stream));
  }
  uint64_t* mask = take<uint64_t>(alloc, mask_cap);
  uint64_t* removed = take<uint64_t>(alloc, removed_cap);
  int64_t* kept_list = listed != nullptr ? listed->list : list_cap > 0 ? take<int64_t>(alloc, list_cap) : nullptr;
  int64_t* kept_count = listed != nullptr ? listed->count : list_cap > 0 ? take<int64_t>(alloc, 1) : nullptr;
  if (listed != nullptr) SNIPER_CUDA_CHECK(cudaMemsetAsync(kept_count, 0, sizeof(int64_t), stream));
  auto rows = [](int64_t words) { return static_cast<unsigned int>(::sniper::min_<int64_t>(words, 65535)); };

  for (const Launch& l : plan) {
    if (!l.tiled) {
      SNIPER_CUDA_CHECK(cudaMemsetAsync(removed, 0, sizeof(uint64_t) * l.removed_words, stream));
      const dim3 grid(static_cast<unsigned int>(l.col_blocks), rows(l.max_words));
      nms_mask_kernel<<<grid, kWord, 0, stream>>>(b, d_jobs + l.first, static_cast<int>(l.count), thr, mask);
      // (with `listed`: one job, whose kept positions are listed)
      nms_walk_kernel<<<static_cast<unsigned int>(l.count), kWalkThreads, 0, stream>>>(
          d_jobs + l.first, mask, removed, order, keep_by_index, listed != nullptr ? kept_list : nullptr,
          listed != nullptr ? kept_count : nullptr);
      continue;
    }
    SNIPER_CUDA_CHECK(cudaMemsetAsync(kept_count, 0, sizeof(int64_t), stream));
    for (size_t k = l.first; k < l.first + l.count; ++k) {
      const MaskJob& job = jobs[k];
      SNIPER_CUDA_CHECK(cudaMemsetAsync(removed, 0, sizeof(uint64_t) * job.words, stream));
      if (job.start > l.seg_start) {
        const int64_t ranges = (job.start - l.seg_start + kCrossRange - 1) / kCrossRange;
        const dim3 grid(blocks_for(job.n, kCrossThreads, int64_t(1) << 31),
                        static_cast<unsigned int>(::sniper::min_<int64_t>(ranges, 65535)));
        nms_cross_kernel<<<grid, kCrossThreads, 0, stream>>>(b, job.start, job.n, kept_list, kept_count, thr, removed);
      }
      const dim3 grid(static_cast<unsigned int>(job.words), rows(job.words));
      nms_mask_kernel<<<grid, kWord, 0, stream>>>(b, d_jobs + k, 1, thr, mask);
      nms_walk_kernel<<<1, kWalkThreads, 0, stream>>>(d_jobs + k, mask, removed, order, keep_by_index, kept_list,
                                                      kept_count);
    }
  }
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

// Box indices by score: descending, ties to the lower index (the sort is
// stable). No host read.
template <typename T, typename A>
int64_t* score_order(const T* scores, int64_t n, DeviceAllocator& alloc, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(n, kThreads);
  A* keys = take<A>(alloc, n);
  A* sorted_keys = take<A>(alloc, n);
  int64_t* iota = take<int64_t>(alloc, n);
  int64_t* by_score = take<int64_t>(alloc, n);
  score_keys_kernel<<<blocks, kThreads, 0, stream>>>(scores, keys, n);
  iota_kernel<<<blocks, kThreads, 0, stream>>>(iota, n);
  sort_pairs(keys, sorted_keys, iota, by_score, n, /*descending=*/true, alloc, stream);
  return by_score;
}

template <typename T>
int64_t nms_typed(const T* boxes, const T* scores, const int64_t* group, int64_t n, double iou_threshold, int64_t* keep,
                  DeviceAllocator& alloc, cudaStream_t stream, const NmsTuning& tuning) {
  using A = typename Acc<T>::type;
  const A thr = static_cast<A>(iou_threshold);
  const unsigned int blocks = blocks_for(n, kThreads);

  int64_t* by_score = score_order<T, A>(scores, n, alloc, stream);

  // Segments by group, score order inside each.
  const Segments seg = group != nullptr ? segment_by_group(group, by_score, n, alloc, stream)
                                        : single_segment(by_score, n, alloc, stream);
  BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);
  gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, seg.order, n, b);
  uint8_t* keep_by_index = take<uint8_t>(alloc, n);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(keep_by_index, 0, n, stream));

  // The segments for the bitmask path, on the host: one group always; with
  // groups, those of more than nms_large_segment boxes.
  std::vector<std::pair<int64_t, int64_t>> large;
  if (group == nullptr) {
    large.emplace_back(0, n);
  } else {
    if (n > tuning.nms_large_segment) {
      const LargeSegments ls = select_large_segments(seg, n, tuning.nms_large_segment, alloc, stream);
      const int count = read_count(ls.count, stream);
      if (count > 0) {
        std::vector<int64_t> starts(count), sizes(count);
        SNIPER_CUDA_CHECK(
            cudaMemcpyAsync(starts.data(), ls.starts, sizeof(int64_t) * count, cudaMemcpyDeviceToHost, stream));
        SNIPER_CUDA_CHECK(
            cudaMemcpyAsync(sizes.data(), ls.sizes, sizeof(int64_t) * count, cudaMemcpyDeviceToHost, stream));
        SNIPER_CUDA_CHECK(cudaStreamSynchronize(stream));
        for (int k = 0; k < count; ++k) large.emplace_back(starts[k], sizes[k]);
      }
    }
    uint8_t* suppressed = take<uint8_t>(alloc, n);
    SNIPER_CUDA_CHECK(cudaMemsetAsync(suppressed, 0, n, stream));
    nms_segments_kernel<<<blocks_for(n, 1, 16384), kThreads, 0, stream>>>(
        b, seg.order, seg.starts, seg.num_segments, n, tuning.nms_large_segment, thr, suppressed, keep_by_index);
  }
  nms_bitmask(b, seg.order, large, thr, tuning.nms_mask_budget, keep_by_index, alloc, stream);

  uint8_t* flags = take<uint8_t>(alloc, n);  // keep flag of by_score[k]
  gather_flags_kernel<<<blocks, kThreads, 0, stream>>>(keep_by_index, by_score, flags, n);
  int* count = take<int>(alloc, 1);
  select_flagged(by_score, flags, keep, count, n, alloc, stream);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return read_count(count, stream);
}

// The fixed-capacity variants: every launch and allocation planned from n,
// groups and cap; no host reads, no host copies.
template <typename T>
void nms_fixed_typed(const T* boxes, const T* scores, const int64_t* group, int64_t n, int64_t groups,
                     double iou_threshold, int64_t cap, int64_t* keep, int64_t* count, DeviceAllocator& alloc,
                     cudaStream_t stream, const NmsTuning& tuning) {
  using A = typename Acc<T>::type;
  const A thr = static_cast<A>(iou_threshold);
  const unsigned int blocks = blocks_for(n, kThreads);

  int64_t* by_score = score_order<T, A>(scores, n, alloc, stream);
  BoxesSoA<A> b = BoxesSoA<A>::make(alloc, n);

  if (group == nullptr) {
    // One group of n boxes: the bitmask path, whose plan depends on n and
    // the mask budget only; the walk lists the kept positions in order.
    gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, by_score, n, b);
    const KeptList listed{take<int64_t>(alloc, n), take<int64_t>(alloc, 1)};
    nms_bitmask(b, by_score, {{int64_t(0), n}}, thr, tuning.nms_mask_budget, nullptr, alloc, stream, &listed);
    fixed_list_kernel<<<blocks_for(::sniper::min_<int64_t>(n, cap), kThreads), kThreads, 0, stream>>>(
        by_score, listed.list, listed.count, cap, keep, count);
    SNIPER_CUDA_CHECK(cudaGetLastError());
    return;
  }

  // Groups: ids outside [0, groups) mapped to `groups` (one segment, which
  // the kernel skips), segments in score order, one block each.
  int64_t* mapped = take<int64_t>(alloc, n);
  map_groups_kernel<<<blocks, kThreads, 0, stream>>>(group, n, groups, mapped);
  const Segments seg = segment_by_group(mapped, by_score, n, alloc, stream, map_key_bits(groups));
  gather_boxes_kernel<<<blocks, kThreads, 0, stream>>>(boxes, seg.order, n, b);
  uint8_t* suppressed = take<uint8_t>(alloc, n);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(suppressed, 0, n, stream));
  const int64_t segments = groups < n ? groups + 1 : n;  // at most
  nms_segments_fixed_kernel<<<blocks_for(segments, 1, 16384), kThreads, 0, stream>>>(
      b, seg.order, seg.starts, seg.num_segments, group, n, groups, cap, thr, suppressed, keep, count);
  SNIPER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void nms_fixed(const void* boxes, const void* scores, const int64_t* group, int64_t n, int64_t groups,
               double iou_threshold, int64_t capacity, Dtype dtype, int64_t* keep, int64_t* count,
               DeviceAllocator& alloc, void* stream, const NmsTuning& tuning) {
  if (n == 0 || groups <= 0 || capacity <= 0) return;
  check_count(n, group != nullptr ? "batched_nms_fixed" : "nms_fixed");
  SNIPER_CUDA_DISPATCH(dtype, [&] {
    nms_fixed_typed(static_cast<const scalar_t*>(boxes), static_cast<const scalar_t*>(scores), group, n, groups,
                    iou_threshold, capacity, keep, count, alloc, as_stream(stream), tuning);
  });
}

int64_t nms(const void* boxes, const void* scores, const int64_t* group, int64_t n, double iou_threshold, Dtype dtype,
            int64_t* keep, DeviceAllocator& alloc, void* stream, const NmsTuning& tuning) {
  if (n == 0) return 0;
  check_count(n, "nms");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    return nms_typed(static_cast<const scalar_t*>(boxes), static_cast<const scalar_t*>(scores), group, n, iou_threshold,
                     keep, alloc, as_stream(stream), tuning);
  });
}

}  // namespace cuda
}  // namespace sniper
