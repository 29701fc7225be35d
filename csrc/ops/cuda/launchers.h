// Host entry points of the CUDA kernels. This header is shared by the .cu
// files (compiled by nvcc, no torch headers) and the registration .cpp files
// (compiled by the host compiler, no CUDA headers): plain pointers only.
#pragma once

#include <cstddef>
#include <cstdint>

#include <sniper/bilinear.h>
#include <sniper/dtype.h>
#include <sniper/nms_rules.h>

namespace sniper {
namespace cuda {

// Device memory for temporaries, provided by the caller (torch's caching
// allocator); freed when the registration code returns.
struct DeviceAllocator {
  virtual void* allocate(size_t bytes) = 0;
  virtual ~DeviceAllocator() = default;
};

// out[i, j] = IoU(a[i], b[j]); a: [n, 4], b: [m, 4], out: [n, m], all `dtype`.
void box_iou(const void* a, const void* b, void* out, int64_t n, int64_t m, Dtype dtype, void* stream);

// Size thresholds of the NMS-family CUDA paths. The registrations take
// overrides from the environment (SNIPER_NMS_LARGE_SEGMENT,
// SNIPER_NMS_MASK_BUDGET, SNIPER_SOFT_NMS_LARGE_GROUP; see nms_tuning.h) so
// that tests can send small inputs down the large-group paths.
struct NmsTuning {
  // batched_nms: groups of more boxes than this use the bitmask path (mask
  // kernel over many blocks, then a walk per group); smaller groups run the
  // greedy loop in one block each. nms (one group) always uses the bitmask.
  int64_t nms_large_segment = 1024;
  // Bytes of suppression mask held at once (>= 512: one 64 x 64 tile). A group
  // of n boxes needs n * ceil(n / 64) * 8 bytes; groups are batched under the
  // budget, and a group over it is processed in column tiles.
  int64_t nms_mask_budget = int64_t(256) << 20;
  // soft_nms: groups of more boxes than this run on a 1024-thread block that
  // visits only the boxes whose x-range can overlap the selected box; smaller
  // groups run on a 256-thread block each, many groups per launch.
  int64_t soft_nms_large_group = 1024;
};

// Greedy NMS. `group` may be null (one group). Writes the kept indices in
// output order to keep[0 .. count) and returns count. keep has n entries.
// Synchronises with the stream once to read count, and with groups of more
// than tuning.nms_large_segment boxes once more, to plan the bitmask path.
int64_t nms(const void* boxes, const void* scores, const int64_t* group, int64_t n, double iou_threshold, Dtype dtype,
            int64_t* keep, DeviceAllocator& alloc, void* stream, const NmsTuning& tuning = NmsTuning());

// Soft-NMS; writes kept indices and decayed scores (`dtype`) in output order
// to keep[0 .. count) and kept_scores[0 .. count); returns count. Two
// launches do all groups (small ones, then large ones); synchronises with
// the stream once, to read count.
int64_t soft_nms(const void* boxes, const void* scores, const int64_t* group, int64_t n, const SoftNmsSpec& spec,
                 Dtype dtype, int64_t* keep, void* kept_scores, DeviceAllocator& alloc, void* stream,
                 const NmsTuning& tuning = NmsTuning());

// The fixed-capacity variants (sniper::nms_fixed, batched_nms_fixed,
// soft_nms_fixed): `group` null puts every box in group 0 (nms_fixed only),
// else a box whose id lies outside [0, groups) takes no part. keep [groups,
// capacity] (and kept_scores) and count [groups] come prefilled (-1, 0, 0);
// each group's row gets its first min(K_g, capacity) results in output order
// and count[g] their number. Everything is planned from n, groups and
// capacity: no stream synchronisation and no copy between host and device
// (so the calls can be captured into a CUDA graph). nms_fixed with one group
// takes the bitmask path (tuning.nms_mask_budget); with groups, every group
// runs the one-block greedy loop, which stops at the capacity.
void nms_fixed(const void* boxes, const void* scores, const int64_t* group, int64_t n, int64_t groups,
               double iou_threshold, int64_t capacity, Dtype dtype, int64_t* keep, int64_t* count,
               DeviceAllocator& alloc, void* stream, const NmsTuning& tuning = NmsTuning());

void soft_nms_fixed(const void* boxes, const void* scores, const int64_t* group, int64_t n, int64_t groups,
                    const SoftNmsSpec& spec, int64_t capacity, Dtype dtype, int64_t* keep, void* kept_scores,
                    int64_t* count, DeviceAllocator& alloc, void* stream, const NmsTuning& tuning = NmsTuning());

// Greedy chip cover (method §2). boxes [n, 4] (`dtype`), group [n] int64,
// canvas [groups, 2] float64. Writes chips [count, 4] (`chip_dtype`, float32
// or float64) and chip_group [count] into buffers of n rows, box_chip [n];
// returns count. seed < 0 means the canonical order. Synchronises twice.
int64_t greedy_chip_cover(const void* boxes, const int64_t* group, const double* canvas, int64_t n, int64_t groups,
                          int64_t chip_size, int64_t stride, int64_t seed, Dtype dtype, void* chips, Dtype chip_dtype,
                          int64_t* chip_group, int64_t* box_chip, DeviceAllocator& alloc, void* stream);

// AutoFocus's FocusChips for `maps` maps: prob [maps, height, width] (`dtype`), sizes [maps, 2]
// int64 (checked: 0 <= h <= height, 0 <= w <= width, h * w < 2^31), total_cells = the sum of h * w,
// out_rows = the sum of focus_max_chips(h, w) (focus_rules.h), out int64 [out_rows, 5]. Writes the
// chips (map, x1, y1, x2, y2), sorted by map, y1, x1, to the first rows of out and returns their
// number. Synchronises with the stream once, to read it.
int64_t focus_chips(const void* prob, const int64_t* sizes, int64_t maps, int64_t height, int64_t width,
                    double threshold, int64_t dilation, int64_t min_size, int64_t total_cells, int64_t out_rows,
                    Dtype dtype, int64_t* out, DeviceAllocator& alloc, void* stream);

// RPN anchor labels (method §5) for `chips` chips: anchors [a, 4], gt
// [chips, g, 4] (`dtype`), state [chips, g] int8, canvas [chips, 2] float64.
// Writes labels [chips, a] int8 and matched [chips, a] int64. No host sync.
void label_anchors(const void* anchors, const void* gt, const int8_t* state, const double* canvas, int64_t chips,
                   int64_t a, int64_t g, double pos_iou, double neg_iou, double invalid_iou, double border, Dtype dtype,
                   int8_t* labels, int64_t* matched, DeviceAllocator& alloc, void* stream);

// Deformable-convolution sampling for n samples: columns [n, C*K, L].
void deform_im2col(const void* input, const void* offset, const void* mask, const DeformGeometry& g, int64_t n,
                   void* columns, Dtype dtype, void* stream);

// Adjoint of deform_im2col. grad_mask may be null (no mask). The input
// gradient uses atomics unless `deterministic` (one thread per plane).
void deform_col2im(const void* grad_columns, const void* input, const void* offset, const void* mask,
                   const DeformGeometry& g, int64_t n, bool deterministic, void* grad_input, void* grad_offset,
                   void* grad_mask, Dtype dtype, DeviceAllocator& alloc, void* stream);

// RoI pooling forward: out [k, c, ph, pw]; offset may be null. rois [k, 5].
void roi_pool_forward(const void* input, const void* rois, const void* offset, int64_t n, int64_t c, int64_t h,
                      int64_t w, int64_t k, const RoiPoolSpec& spec, void* out, Dtype dtype, void* stream);

// RoI pooling backward: grad_input [n, c, h, w] (atomics); with an offset,
// grad_offset [k, 2, ph, pw] (needs input).
void roi_pool_backward(const void* grad, const void* input, const void* rois, const void* offset, int64_t n, int64_t c,
                       int64_t h, int64_t w, int64_t k, const RoiPoolSpec& spec, void* grad_input, void* grad_offset,
                       Dtype dtype, DeviceAllocator& alloc, void* stream);

}  // namespace cuda
}  // namespace sniper
