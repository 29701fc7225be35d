// Host entry points of the CUDA kernels. This header is shared by the .cu
// files (compiled by nvcc, no torch headers) and the registration .cpp files
// (compiled by the host compiler, no CUDA headers): plain pointers only.
#pragma once

#include <cstddef>
#include <cstdint>

#include <sniper/dtype.h>

namespace sniper {
namespace cuda {

// Device memory for temporaries, provided by the caller (torch's caching
// allocator); freed when the registration code returns.
struct DeviceAllocator {
  virtual void* allocate(size_t bytes) = 0;
  virtual ~DeviceAllocator() = default;
};

// out[i, j] = IoU(a[i], b[j]); a: [n, 4], b: [m, 4], out: [n, m], all `dtype`.
void box_iou(const void* a, const void* b, void* out, int64_t n, int64_t m,
             Dtype dtype, void* stream);

// Greedy NMS. `group` may be null (one group). Writes the kept indices in
// output order to keep[0 .. count) and returns count. keep has n entries.
// Synchronises with the stream once, to read count.
int64_t nms(const void* boxes, const void* scores, const int64_t* group,
            int64_t n, double iou_threshold, Dtype dtype, int64_t* keep,
            DeviceAllocator& alloc, void* stream);

// Soft-NMS; writes kept indices and decayed scores (`dtype`) in output order
// to keep[0 .. count) and kept_scores[0 .. count); returns count. One
// launch does all groups; synchronises with the stream once, to read count.
int64_t soft_nms(const void* boxes, const void* scores, const int64_t* group,
                 int64_t n, int64_t method, double sigma, double iou_threshold,
                 double score_threshold, Dtype dtype, int64_t* keep,
                 void* kept_scores, DeviceAllocator& alloc, void* stream);

// Greedy chip cover (method §2). boxes [n, 4] (`dtype`), group [n] int64,
// canvas [groups, 2] float64. Writes chips [count, 4] (`chip_dtype`, float32
// or float64) and chip_group [count] into buffers of n rows, box_chip [n];
// returns count. seed < 0 means the canonical order. Synchronises twice.
int64_t greedy_chip_cover(const void* boxes, const int64_t* group, const double* canvas,
                          int64_t n, int64_t groups, int64_t chip_size, int64_t stride,
                          int64_t seed, Dtype dtype, void* chips, Dtype chip_dtype,
                          int64_t* chip_group, int64_t* box_chip, DeviceAllocator& alloc,
                          void* stream);

// RPN anchor labels (method §5) for `chips` chips: anchors [a, 4], gt
// [chips, g, 4] (`dtype`), state [chips, g] int8, canvas [chips, 2] float64.
// Writes labels [chips, a] int8 and matched [chips, a] int64. No host sync.
void label_anchors(const void* anchors, const void* gt, const int8_t* state, const double* canvas,
                   int64_t chips, int64_t a, int64_t g, double pos_iou, double neg_iou,
                   double invalid_iou, double border, Dtype dtype, int8_t* labels,
                   int64_t* matched, DeviceAllocator& alloc, void* stream);

}  // namespace cuda
}  // namespace sniper
