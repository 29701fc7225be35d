// CUDA kernel of sniper::focus_chips (AutoFocus's FocusChips): one block per map (grid-stride over
// maps, so thousands share a launch), every step a block-wide pass between barriers:
//   1. dilation: a thread per row (prefix counts of the on cells, then the x window), then a thread
//      per column (the same along y) -- O(h w) whatever the dilation;
//   2. 8-connected labelling: a union-find over cells (atomicMin links the larger root to the
//      smaller, so a component's root is its first cell whatever the thread order); each root takes
//      a box slot, the component's border cells widen it with atomicMin/Max;
//   3. boxes grown to the minimum size, then until no two touch (checked pairwise while there are
//      few): painted into the mask (a 2-D difference array, summed by rows then columns) and
//      labelled again;
//   4. each chip marks its top-left cell; after a scan of the chip counts a second kernel writes
//      the chips of every map in row-major order of those cells, i.e. sorted by (y1, x1): chips do
//      not overlap, so (y1, x1) is unique and the order is the CPU kernel's.
// The fixpoint of step 3 does not depend on the order of the merges, so the chips are the CPU
// kernel's bit for bit (docs/kernels.md).
#include <cub/cub.cuh>

#include <sniper/focus_rules.h>

#include "cuda_utils.cuh"

namespace sniper {
namespace cuda {
namespace {

// Up to this many boxes, a pairwise check (n^2 / 2 tests over the block) decides whether another
// painting round is needed; above it the round runs and the count tells.
constexpr int kFocusPairCheck = 1024;

// A load of a parent that other threads may relink meanwhile (an atomic, so that the union-find is
// race-free also for ThreadSanitizer in the cuda_sim harness).
__device__ __forceinline__ int load_parent(int* parent, int x) { return atomicOr(&parent[x], 0); }

// The root of x's tree, halving the path on the way: parents only ever move to lower ancestors
// (atomicMin), so every pointer stays an ancestor whatever other threads do.
__device__ __forceinline__ int find_root(int* parent, int x) {
  while (true) {
    const int p = load_parent(parent, x);
    if (p == x) return x;
    const int grand = load_parent(parent, p);
    if (grand != p) atomicMin(&parent[x], grand);
    x = grand;
  }
}

// Links the roots of a and b, the larger to the smaller; parent[i] <= i always, so no cycles, and a
// component's root ends up its least cell index whatever the thread order.
__device__ __forceinline__ void unite(int* parent, int a, int b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    const int hi = a > b ? a : b, lo = a > b ? b : a;
    const int old = atomicMin(&parent[hi], lo);
    if (old == hi) return;  // hi was still a root: linked
    a = old;                // hi was linked meanwhile (or just now, to lo): go on from its new parent
    b = lo;
  }
}

template <typename T>
__device__ __forceinline__ int on_cell(const T* src, int x, double threshold) {
  return focus_on(double(to_acc(src[x])), threshold) ? 1 : 0;
}

// mask = the map's on cells dilated by a d x d square; work is scratch.
template <typename T>
__device__ void dilate(const T* prob, int64_t stride, int h, int w, double threshold, int64_t d, uint8_t* mask,
                       int* work) {
  for (int y = threadIdx.x; y < h; y += blockDim.x) {
    const T* src = prob + int64_t(y) * stride;
    int* count = work + int64_t(y) * w;
    int run = 0;
    for (int x = 0; x < w; ++x) {
      run += on_cell(src, x, threshold);
      count[x] = run;  // on cells in [0, x]
    }
    uint8_t* dst = mask + int64_t(y) * w;
    for (int x = 0; x < w; ++x) {
      int64_t first, last;
      focus_dilation_window(d, x, w, &first, &last);
      dst[x] = count[last] - (first > 0 ? count[first - 1] : 0) > 0;
    }
  }
  __syncthreads();
  for (int x = threadIdx.x; x < w; x += blockDim.x) {
    int run = 0;
    for (int y = 0; y < h; ++y) {
      run += mask[int64_t(y) * w + x];
      work[int64_t(y) * w + x] = run;
    }
    for (int y = 0; y < h; ++y) {
      int64_t first, last;
      focus_dilation_window(d, y, h, &first, &last);
      mask[int64_t(y) * w + x] = work[last * w + x] - (first > 0 ? work[(first - 1) * w + x] : 0) > 0;
    }
  }
  __syncthreads();
}

// The bounding boxes of the 8-connected components of mask, in box[0, n); returns n (in every thread).
__device__ int label(const uint8_t* mask, int* parent, FocusBox* box, int h, int w, int* n_shared) {
  const int cells = h * w;  // < 2^31 (checked by the entry point)
  for (int i = threadIdx.x; i < cells; i += blockDim.x) parent[i] = mask[i] ? i : -1;
  if (threadIdx.x == 0) *n_shared = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < cells; i += blockDim.x) {
    if (!mask[i]) continue;
    const int y = i / w, x = i - y * w;
    if (x > 0 && mask[i - 1]) unite(parent, i, i - 1);
    if (y > 0) {
      const int up = i - w;
      if (x > 0 && mask[up - 1]) unite(parent, i, up - 1);
      if (mask[up]) unite(parent, i, up);
      if (x + 1 < w && mask[up + 1]) unite(parent, i, up + 1);
    }
  }
  __syncthreads();
  // Roots are their components' first cells in row-major order (so a root's row is the box's y1);
  // each takes a box slot, whose id replaces its parent pointer (as -2 - id).
  for (int i = threadIdx.x; i < cells; i += blockDim.x) {
    if (mask[i] && parent[i] == i) {
      const int id = atomicAdd(n_shared, 1);
      box[id] = FocusBox{0x7fffffff, i / w, -1, -1};
      parent[i] = -2 - id;
    }
  }
  __syncthreads();
  // Nothing is written to parent any more: each cell walks up to its root and widens the root's box
  // if it is on the component's border.
  for (int i = threadIdx.x; i < cells; i += blockDim.x) {
    if (!mask[i]) continue;
    int q = parent[i];
    while (q >= 0) q = parent[q];
    FocusBox* b = &box[-2 - q];
    const int y = i / w, x = i - y * w;
    if (x == 0 || !mask[i - 1]) atomicMin(&b->x1, x);
    if (x == w - 1 || !mask[i + 1]) atomicMax(&b->x2, x + 1);
    if (y == h - 1 || !mask[i + w]) atomicMax(&b->y2, y + 1);
  }
  __syncthreads();
  const int n = *n_shared;
  __syncthreads();
  return n;
}

// mask = the cells of box[0, n) (a 2-D difference array in acc, summed by rows, then by columns).
__device__ void paint(const FocusBox* box, int n, int h, int w, int* acc, uint8_t* mask) {
  const int cells = h * w;
  for (int i = threadIdx.x; i < cells; i += blockDim.x) acc[i] = 0;
  __syncthreads();
  for (int k = threadIdx.x; k < n; k += blockDim.x) {
    const FocusBox b = box[k];
    atomicAdd(&acc[b.y1 * w + b.x1], 1);
    if (b.x2 < w) atomicAdd(&acc[b.y1 * w + b.x2], -1);
    if (b.y2 < h) {
      atomicAdd(&acc[b.y2 * w + b.x1], -1);
      if (b.x2 < w) atomicAdd(&acc[b.y2 * w + b.x2], 1);
    }
  }
  __syncthreads();
  for (int y = threadIdx.x; y < h; y += blockDim.x) {
    int* row = acc + int64_t(y) * w;
    int run = 0;
    for (int x = 0; x < w; ++x) {
      run += row[x];
      row[x] = run;
    }
  }
  __syncthreads();
  for (int x = threadIdx.x; x < w; x += blockDim.x) {
    int run = 0;
    for (int y = 0; y < h; ++y) {
      run += acc[int64_t(y) * w + x];
      mask[int64_t(y) * w + x] = run > 0;
    }
  }
  __syncthreads();
}

__device__ void grow_all(FocusBox* box, int n, int64_t min_size, int h, int w) {
  for (int k = threadIdx.x; k < n; k += blockDim.x) box[k] = focus_grow(box[k], min_size, w, h);
  __syncthreads();
}

// Per map: chips in box[0, count[b]), each marked at its top-left cell (mask 1, work = its slot).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    focus_kernel(const T* prob, const int64_t* sizes, int64_t maps, int64_t height, int64_t width, double threshold,
                 int64_t dilation, int64_t min_size, const int64_t* cell_off, const int64_t* box_off, uint8_t* mask_all,
                 int* work_all, FocusBox* box_all, int64_t* count) {
  __shared__ int n_shared;
  for (int64_t b = blockIdx.x; b < maps; b += gridDim.x) {
    const int h = int(sizes[2 * b]), w = int(sizes[2 * b + 1]);
    if (h == 0 || w == 0) {
      if (threadIdx.x == 0) count[b] = 0;
      continue;
    }
    uint8_t* mask = mask_all + cell_off[b];
    int* work = work_all + cell_off[b];
    FocusBox* box = box_all + box_off[b];
    dilate(prob + b * height * width, width, h, w, threshold, dilation, mask, work);
    int n = label(mask, work, box, h, w, &n_shared);
    grow_all(box, n, min_size, h, w);
    while (n > 1) {
      if (n <= kFocusPairCheck) {
        bool touching = false;
        for (int i = threadIdx.x; i < n && !touching; i += blockDim.x) {
          for (int j = i + 1; j < n; ++j) {
            if (focus_touch(box[i], box[j])) {
              touching = true;
              break;
            }
          }
        }
        if (!__syncthreads_or(touching)) break;
      }
      paint(box, n, h, w, work, mask);
      const int m = label(mask, work, box, h, w, &n_shared);
      grow_all(box, m, min_size, h, w);  // a no-op: unions of grown boxes are large enough
      if (m == n) break;                 // each component was one box: nothing changed
      n = m;
    }
    const int cells = h * w;
    for (int i = threadIdx.x; i < cells; i += blockDim.x) mask[i] = 0;
    __syncthreads();
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
      const int corner = box[k].y1 * w + box[k].x1;
      mask[corner] = 1;
      work[corner] = k;
    }
    if (threadIdx.x == 0) count[b] = n;
    __syncthreads();
  }
}

// Writes each map's chips from out_off[b] on, in row-major order of their top-left cells: a thread
// per row counts its marks, a scan over the rows of a chunk of kThreads rows gives each its start.
__global__ void __launch_bounds__(kThreads)
    focus_write_kernel(const int64_t* sizes, int64_t maps, const int64_t* cell_off, const int64_t* box_off,
                       const uint8_t* mask_all, const int* work_all, const FocusBox* box_all, const int64_t* count,
                       const int64_t* out_off, int64_t* out) {
  __shared__ int64_t row_start[kThreads];
  __shared__ int64_t chunk_total;
  for (int64_t b = blockIdx.x; b < maps; b += gridDim.x) {
    if (count[b] == 0) continue;
    const int h = int(sizes[2 * b]), w = int(sizes[2 * b + 1]);
    const uint8_t* mask = mask_all + cell_off[b];
    const int* work = work_all + cell_off[b];
    const FocusBox* box = box_all + box_off[b];
    int64_t base = out_off[b];
    for (int y0 = 0; y0 < h; y0 += kThreads) {
      const int y = y0 + int(threadIdx.x);
      int64_t marks = 0;
      if (y < h) {
        for (int x = 0; x < w; ++x) marks += mask[int64_t(y) * w + x];
      }
      row_start[threadIdx.x] = marks;
      __syncthreads();
      if (threadIdx.x == 0) {
        int64_t run = 0;
        for (int t = 0; t < kThreads; ++t) {
          const int64_t v = row_start[t];
          row_start[t] = run;
          run += v;
        }
        chunk_total = run;
      }
      __syncthreads();
      if (y < h) {
        int64_t pos = base + row_start[threadIdx.x];
        for (int x = 0; x < w; ++x) {
          if (!mask[int64_t(y) * w + x]) continue;
          const FocusBox c = box[work[int64_t(y) * w + x]];
          int64_t* r = out + 5 * pos++;
          r[0] = b;
          r[1] = c.x1;
          r[2] = c.y1;
          r[3] = c.x2;
          r[4] = c.y2;
        }
      }
      base += chunk_total;
      __syncthreads();
    }
  }
}

__global__ void map_sizes_kernel(const int64_t* sizes, int64_t maps, int64_t* cells, int64_t* boxes) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < maps; b += int64_t(gridDim.x) * blockDim.x) {
    cells[b] = sizes[2 * b] * sizes[2 * b + 1];
    boxes[b] = focus_max_chips(sizes[2 * b], sizes[2 * b + 1]);
  }
}

void exclusive_sum(const int64_t* in, int64_t* out, int64_t n, DeviceAllocator& alloc, cudaStream_t stream) {
  size_t bytes = 0;
  SNIPER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, int(n), stream));
  void* tmp = alloc.allocate(bytes);
  SNIPER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp, bytes, in, out, int(n), stream));
}

template <typename T>
int64_t focus_typed(const T* prob, const int64_t* sizes, int64_t maps, int64_t height, int64_t width, double threshold,
                    int64_t dilation, int64_t min_size, int64_t total_cells, int64_t out_rows, int64_t* out,
                    DeviceAllocator& alloc, cudaStream_t stream) {
  int64_t* cells = take<int64_t>(alloc, maps);
  int64_t* boxes = take<int64_t>(alloc, maps);
  int64_t* cell_off = take<int64_t>(alloc, maps);
  int64_t* box_off = take<int64_t>(alloc, maps);
  int64_t* count = take<int64_t>(alloc, maps);
  int64_t* out_off = take<int64_t>(alloc, maps);
  map_sizes_kernel<<<blocks_for(maps, kThreads), kThreads, 0, stream>>>(sizes, maps, cells, boxes);
  exclusive_sum(cells, cell_off, maps, alloc, stream);
  exclusive_sum(boxes, box_off, maps, alloc, stream);
  uint8_t* mask = take<uint8_t>(alloc, total_cells);
  int* work = take<int>(alloc, total_cells);
  FocusBox* box = take<FocusBox>(alloc, out_rows);  // the chips bound is also the components bound
  const unsigned int blocks = blocks_for(maps, 1, 16384);
  focus_kernel<T><<<blocks, kThreads, 0, stream>>>(prob, sizes, maps, height, width, threshold, dilation, min_size,
                                                   cell_off, box_off, mask, work, box, count);
  exclusive_sum(count, out_off, maps, alloc, stream);
  focus_write_kernel<<<blocks, kThreads, 0, stream>>>(sizes, maps, cell_off, box_off, mask, work, box, count, out_off,
                                                      out);
  SNIPER_CUDA_CHECK(cudaGetLastError());
  int64_t last[2] = {0, 0};
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(&last[0], count + maps - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  SNIPER_CUDA_CHECK(cudaMemcpyAsync(&last[1], out_off + maps - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  SNIPER_CUDA_CHECK(cudaStreamSynchronize(stream));
  return last[0] + last[1];
}

}  // namespace

int64_t focus_chips(const void* prob, const int64_t* sizes, int64_t maps, int64_t height, int64_t width,
                    double threshold, int64_t dilation, int64_t min_size, int64_t total_cells, int64_t out_rows,
                    Dtype dtype, int64_t* out, DeviceAllocator& alloc, void* stream) {
  if (maps == 0 || total_cells == 0 || out_rows == 0) return 0;
  check_count(maps, "focus_chips");
  return SNIPER_CUDA_DISPATCH(dtype, [&] {
    return focus_typed(static_cast<const scalar_t*>(prob), sizes, maps, height, width, threshold, dilation, min_size,
                       total_cells, out_rows, out, alloc, as_stream(stream));
  });
}

}  // namespace cuda
}  // namespace sniper
