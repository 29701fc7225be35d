// CUDA kernel of sniper::greedy_chip_cover: one block per group (grid-stride
// over groups, so thousands share a launch). Each box adds itself to the
// counts of the candidates that contain it (a rectangle of the grid); the
// block then repeatedly takes the best candidate and subtracts the boxes it
// newly covers. Same rules and tie-breaks as the CPU kernel.
#include <sniper/chip_grid.h>

#include "segments.cuh"

namespace sniper {
namespace cuda {
namespace {

struct ChipBox {
  double x1, y1, x2, y2;
};

struct Pick {
  int count;
  uint64_t key;
  int64_t cand;  // -1: none
};

struct BetterPick {
  __device__ __forceinline__ Pick operator()(const Pick& a, const Pick& b) const {
    if (a.cand < 0) return b;
    if (b.cand < 0) return a;
    if (a.count != b.count) return a.count > b.count ? a : b;
    if (a.key != b.key) return a.key < b.key ? a : b;
    return a.cand < b.cand ? a : b;
  }
};

// Per segment: its group, its candidate count, and a validity flag.
__global__ void segment_info_kernel(const int64_t* order, const int64_t* starts, const int* num_segments,
                                    const int64_t* group, const double* canvas, int64_t groups, int64_t n,
                                    int64_t chip_size, int64_t stride, int64_t* seg_group, int64_t* cand_count,
                                    int* error) {
  const int num = *num_segments;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < n; g += int64_t(gridDim.x) * blockDim.x) {
    if (g >= num) {
      cand_count[g] = 0;
      continue;
    }
    const int64_t id = group[order[starts[g]]];
    seg_group[g] = id;
    if (id < 0 || id >= groups) {
      atomicExch(error, 1);
      cand_count[g] = 0;
      continue;
    }
    const double w = canvas[2 * id], h = canvas[2 * id + 1];
    if (!(w > 0 && h > 0 && isfinite(w) && isfinite(h))) {
      atomicExch(error, 2);
      cand_count[g] = 0;
      continue;
    }
    cand_count[g] = ChipAxis::make(w, chip_size, stride).count * ChipAxis::make(h, chip_size, stride).count;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cover_kernel(const T* boxes, const int64_t* order, const int64_t* starts, const int* num_segments,
                 const int64_t* seg_group, const int64_t* cand_offset, const double* canvas, int64_t n,
                 int64_t chip_size, int64_t stride, int64_t seed, int* counts, int4* rect, uint8_t* uncovered,
                 int64_t* local_chip, ChipBox* chips_local, int64_t* num_chips) {
  using Reduce = cub::BlockReduce<Pick, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ Pick chosen;
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    const int64_t id = seg_group[g];
    const ChipAxis ax = ChipAxis::make(canvas[2 * id], chip_size, stride);
    const ChipAxis ay = ChipAxis::make(canvas[2 * id + 1], chip_size, stride);
    const int64_t nx = ax.count, nc = ax.count * ay.count;
    int* cnt = counts + cand_offset[g];
    for (int64_t c = threadIdx.x; c < nc; c += kThreads) cnt[c] = 0;
    __syncthreads();
    for (int64_t k = s + threadIdx.x; k < e; k += kThreads) {
      const T* b = boxes + 4 * order[k];
      const double x1 = min_(max_(double(to_acc(b[0])), 0.0), ax.len);
      const double y1 = min_(max_(double(to_acc(b[1])), 0.0), ay.len);
      const double x2 = min_(max_(double(to_acc(b[2])), 0.0), ax.len);
      const double y2 = min_(max_(double(to_acc(b[3])), 0.0), ay.len);
      int64_t xl, xh, yl, yh;
      ax.containing(x1, x2, &xl, &xh);
      ay.containing(y1, y2, &yl, &yh);
      rect[k] = make_int4(int(xl), int(xh), int(yl), int(yh));
      local_chip[k] = -1;
      const bool ok = xl <= xh && yl <= yh;
      uncovered[k] = ok;
      if (!ok) continue;
      for (int64_t iy = yl; iy <= yh; ++iy)
        for (int64_t ix = xl; ix <= xh; ++ix) atomicAdd(&cnt[iy * nx + ix], 1);
    }
    __syncthreads();
    int64_t chip = 0;
    while (true) {
      Pick p{0, 0, -1};
      for (int64_t c = threadIdx.x; c < nc; c += kThreads) {
        const int v = cnt[c];
        if (v <= 0) continue;
        const uint64_t key = seed >= 0 ? chip_order_key(uint64_t(seed), id, c) : 0;
        p = BetterPick()(p, Pick{v, key, c});
      }
      const Pick best_local = Reduce(tmp).Reduce(p, BetterPick());
      __syncthreads();
      if (threadIdx.x == 0) chosen = best_local;
      __syncthreads();
      const Pick best = chosen;
      if (best.cand < 0) break;
      const int bx = int(best.cand % nx), by = int(best.cand / nx);
      if (threadIdx.x == 0) {
        chips_local[s + chip] = ChipBox{ax.start(bx), ay.start(by), ax.end(bx), ay.end(by)};
      }
      for (int64_t k = s + threadIdx.x; k < e; k += kThreads) {
        if (!uncovered[k]) continue;
        const int4 r = rect[k];
        if (bx < r.x || bx > r.y || by < r.z || by > r.w) continue;
        uncovered[k] = 0;
        local_chip[k] = chip;
        for (int iy = r.z; iy <= r.w; ++iy)
          for (int ix = r.x; ix <= r.y; ++ix) atomicSub(&cnt[iy * nx + ix], 1);
      }
      ++chip;
      __syncthreads();
    }
    if (threadIdx.x == 0) num_chips[g] = chip;
    __syncthreads();
  }
}

template <typename C>
__global__ void write_chips_kernel(const int64_t* order, const int64_t* starts, const int* num_segments,
                                   const int64_t* seg_group, const int64_t* num_chips, const int64_t* chip_offset,
                                   const int64_t* local_chip, const ChipBox* chips_local, int64_t n, C* chips,
                                   int64_t* chip_group, int64_t* box_chip) {
  const int num = *num_segments;
  for (int g = blockIdx.x; g < num; g += gridDim.x) {
    const int64_t s = starts[g], e = segment_end(starts, g, num, n);
    const int64_t first = chip_offset[g];
    for (int64_t j = threadIdx.x; j < num_chips[g]; j += blockDim.x) {
      const ChipBox c = chips_local[s + j];
      chips[4 * (first + j)] = C(c.x1);
      chips[4 * (first + j) + 1] = C(c.y1);
      chips[4 * (first + j) + 2] = C(c.x2);
      chips[4 * (first + j) + 3] = C(c.y2);
      chip_group[first + j] = seg_group[g];
    }
    for (int64_t k = s + threadIdx.x; k < e; k += blockDim.x) {
      box_chip[order[k]] = local_chip[k] < 0 ? -1 : first + local_chip[k];
    }
  }
}

void exclusive_sum(const int64_t* in, int64_t* out, int64_t n, DeviceAllocator& alloc, cudaStream_t stream) {
  size_t bytes = 0;
  SNIPER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, int(n), stream));
  void* tmp = alloc.allocate(bytes);
  SNIPER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp, bytes, in, out, int(n), stream));
}

// Total of an exclusive scan: out[n-1] + in[n-1], read on the host.
int64_t scan_total(const int64_t* in, const int64_t* out, int64_t n, cudaStream_t stream, const int* error = nullptr,
                   int* host_error = nullptr) {
  int64_t last[2] = {0, 0};
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(&last[0], in + n - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(&last[1], out + n - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  if (error) SNIPER_CUDA_CHECK(cudaMemcpyAsync(host_error, error, sizeof(int), cudaMemcpyDeviceToHost, stream));
  SNIPER_CUDA_CHECK(cudaStreamSynchronize(stream));
  return last[0] + last[1];
}

template <typename T>
int64_t cover_typed(const T* boxes, const int64_t* group, const double* canvas, int64_t n, int64_t groups,
                    int64_t chip_size, int64_t stride, int64_t seed, void* chips, Dtype chip_dtype, int64_t* chip_group,
                    int64_t* box_chip, DeviceAllocator& alloc, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(n, kThreads);
  Segments seg = segment_by_group(group, nullptr, n, alloc, stream);
  int64_t* seg_group = take<int64_t>(alloc, n);
  int64_t* cand_count = take<int64_t>(alloc, n);
  int64_t* cand_offset = take<int64_t>(alloc, n);
  int* error = take<int>(alloc, 1);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(error, 0, sizeof(int), stream));
  segment_info_kernel<<<blocks, kThreads, 0, stream>>>(seg.order, seg.starts, seg.num_segments, group, canvas, groups,
                                                       n, chip_size, stride, seg_group, cand_count, error);
  exclusive_sum(cand_count, cand_offset, n, alloc, stream);
  int host_error = 0;
  const int64_t candidates = scan_total(cand_count, cand_offset, n, stream, error, &host_error);
  if (host_error == 1) throw std::runtime_error("greedy_chip_cover: `box_group` values must lie in [0, G)");
  if (host_error == 2) throw std::runtime_error("greedy_chip_cover: `canvas_wh` must be finite and positive");

  int* counts = take<int>(alloc, candidates);
  int4* rect = take<int4>(alloc, n);
  uint8_t* uncovered = take<uint8_t>(alloc, n);
  int64_t* local_chip = take<int64_t>(alloc, n);
  ChipBox* chips_local = take<ChipBox>(alloc, n);
  int64_t* num_chips = take<int64_t>(alloc, n);
  int64_t* chip_offset = take<int64_t>(alloc, n);
  SNIPER_CUDA_CHECK(cudaMemsetAsync(num_chips, 0, sizeof(int64_t) * n, stream));
  const unsigned int seg_blocks = blocks_for(n, 1, 16384);
  cover_kernel<T><<<seg_blocks, kThreads, 0, stream>>>(boxes, seg.order, seg.starts, seg.num_segments, seg_group,
                                                       cand_offset, canvas, n, chip_size, stride, seed, counts, rect,
                                                       uncovered, local_chip, chips_local, num_chips);
  exclusive_sum(num_chips, chip_offset, n, alloc, stream);
  if (chip_dtype == Dtype::kFloat64) {
    write_chips_kernel<double><<<seg_blocks, kThreads, 0, stream>>>(seg.order, seg.starts, seg.num_segments, seg_group,
                                                                    num_chips, chip_offset, local_chip, chips_local, n,
                                                                    static_cast<double*>(chips), chip_group, box_chip);
  } else {
    write_chips_kernel<float><<<seg_blocks, kThreads, 0, stream>>>(seg.order, seg.starts, seg.num_segments, seg_group,
                                                                   num_chips, chip_offset, local_chip, chips_local, n,
                                                                   static_cast<float*>(chips), chip_group, box_chip);
  }
  SNIPER_CUDA_CHECK(cudaGetLastError());
  return scan_total(num_chips, chip_offset, n, stream);
}

}  // namespace

int64_t greedy_chip_cover(const void* boxes, const int64_t* group, const double* canvas, int64_t n, int64_t groups,
                          int64_t chip_size, int64_t stride, int64_t seed, Dtype dtype, void* chips, Dtype chip_dtype,
                          int64_t* chip_group, int64_t* box_chip, DeviceAllocator& alloc, void* stream) {
  if (n == 0) return 0;
  check_count(n, "greedy_chip_cover");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    return cover_typed(static_cast<const scalar_t*>(boxes), group, canvas, n, groups, chip_size, stride, seed, chips,
                       chip_dtype, chip_group, box_chip, alloc, as_stream(stream));
  });
}

}  // namespace cuda
}  // namespace sniper
