// C entry points over the CUDA launchers (csrc/ops/cuda/launchers.h), one
// uniform signature each so that Python (ctypes) and the sanitizer driver call
// them the same way:
//
//   int sim_op_<name>(void* const* p, const int64_t* i, const double* d, int64_t* ret)
//
// p: buffers (inputs, then outputs; null for an absent optional input),
// i: integer arguments, d: floating arguments, ret: the launcher's result.
// Returns 0, or 1 with the message in sim_last_error(). The argument order of
// each entry is documented beside it and mirrored in sim.py (OPS).
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "launchers.h"

namespace sim {
unsigned char poison_byte();
}

namespace {

std::string last_error;

// Temporaries from host memory, poisoned like fresh device memory, freed
// when the call returns (as the CUDA registrations' TensorAllocator does).
class HostAllocator final : public sniper::cuda::DeviceAllocator {
 public:
  void* allocate(size_t bytes) override {
    void* p = std::malloc(bytes > 0 ? bytes : 1);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, sim::poison_byte(), bytes > 0 ? bytes : 1);
    held_.push_back(p);
    return p;
  }
  ~HostAllocator() override {
    for (void* p : held_) std::free(p);
  }

 private:
  std::vector<void*> held_;
};

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown exception";
  }
  return 1;
}

sniper::Dtype dt(int64_t v) { return static_cast<sniper::Dtype>(int(v)); }

// NmsTuning from three integers: large_segment, mask_budget, soft_large.
sniper::cuda::NmsTuning tuning(const int64_t* v) {
  sniper::cuda::NmsTuning t;
  t.nms_large_segment = v[0];
  t.nms_mask_budget = v[1];
  t.soft_nms_large_group = v[2];
  return t;
}

sniper::DeformGeometry geometry(const int64_t* i) {
  return sniper::DeformGeometry{i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10], i[11], i[12], i[13]};
}

}  // namespace

#define SIM_OP(name) extern "C" int sim_op_##name(void* const* p, const int64_t* i, const double* d, int64_t* ret)

extern "C" const char* sim_last_error() { return last_error.c_str(); }
extern "C" void sim_set_last_error(const char* msg) { last_error = msg; }

// p: a, b, out; i: n, m, dtype
SIM_OP(box_iou) {
  (void)d, (void)ret;
  return guarded([&] { sniper::cuda::box_iou(p[0], p[1], p[2], i[0], i[1], dt(i[2]), nullptr); });
}

// p: boxes, scores, group (nullable), keep; i: n, dtype, large_segment, mask_budget, soft_large;
// d: iou_threshold; ret: count
SIM_OP(nms) {
  return guarded([&] {
    HostAllocator alloc;
    ret[0] = sniper::cuda::nms(p[0], p[1], static_cast<const int64_t*>(p[2]), i[0], d[0], dt(i[1]),
                               static_cast<int64_t*>(p[3]), alloc, nullptr, tuning(i + 2));
  });
}

// p: boxes, scores, group (nullable), keep, kept_scores; i: n, method, dtype, large_segment, mask_budget,
// soft_large;
// d: sigma, iou_threshold, score_threshold; ret: count
SIM_OP(soft_nms) {
  return guarded([&] {
    HostAllocator alloc;
    ret[0] = sniper::cuda::soft_nms(p[0], p[1], static_cast<const int64_t*>(p[2]), i[0],
                                    sniper::SoftNmsSpec{i[1], d[0], d[1], d[2]}, dt(i[2]), static_cast<int64_t*>(p[3]),
                                    p[4], alloc, nullptr, tuning(i + 3));
  });
}

// p: boxes, scores, group (nullable), keep [groups, capacity], count [groups] (both prefilled: -1, 0);
// i: n, groups, capacity, dtype, large_segment, mask_budget, soft_large; d: iou_threshold
SIM_OP(nms_fixed) {
  (void)ret;
  return guarded([&] {
    HostAllocator alloc;
    sniper::cuda::nms_fixed(p[0], p[1], static_cast<const int64_t*>(p[2]), i[0], i[1], d[0], i[2], dt(i[3]),
                            static_cast<int64_t*>(p[3]), static_cast<int64_t*>(p[4]), alloc, nullptr, tuning(i + 4));
  });
}

// p: boxes, scores, group, keep [groups, capacity], kept_scores [groups, capacity], count [groups] (prefilled:
// -1, 0, 0); i: n, groups, capacity, method, dtype, large_segment, mask_budget, soft_large;
// d: sigma, iou_threshold, score_threshold
SIM_OP(soft_nms_fixed) {
  (void)ret;
  return guarded([&] {
    HostAllocator alloc;
    sniper::cuda::soft_nms_fixed(
        p[0], p[1], static_cast<const int64_t*>(p[2]), i[0], i[1], sniper::SoftNmsSpec{i[3], d[0], d[1], d[2]}, i[2],
        dt(i[4]), static_cast<int64_t*>(p[3]), p[4], static_cast<int64_t*>(p[5]), alloc, nullptr, tuning(i + 5));
  });
}

// p: boxes, group, canvas, chips, chip_group, box_chip;
// i: n, groups, chip_size, stride, seed, dtype, chip_dtype; ret: count
SIM_OP(greedy_chip_cover) {
  (void)d;
  return guarded([&] {
    HostAllocator alloc;
    ret[0] = sniper::cuda::greedy_chip_cover(p[0], static_cast<const int64_t*>(p[1]), static_cast<const double*>(p[2]),
                                             i[0], i[1], i[2], i[3], i[4], dt(i[5]), p[3], dt(i[6]),
                                             static_cast<int64_t*>(p[4]), static_cast<int64_t*>(p[5]), alloc, nullptr);
  });
}

// p: prob, sizes, out; i: maps, height, width, dilation, min_size, total_cells, out_rows, dtype;
// d: threshold
SIM_OP(focus_chips) {
  return guarded([&] {
    HostAllocator alloc;
    ret[0] = sniper::cuda::focus_chips(p[0], static_cast<const int64_t*>(p[1]), i[0], i[1], i[2], d[0], i[3], i[4],
                                       i[5], i[6], dt(i[7]), static_cast<int64_t*>(p[2]), alloc, nullptr);
  });
}

// p: anchors, gt, state, canvas, labels, matched; i: chips, a, g, dtype;
// d: pos_iou, neg_iou, invalid_iou, border
SIM_OP(label_anchors) {
  (void)ret;
  return guarded([&] {
    HostAllocator alloc;
    sniper::cuda::label_anchors(p[0], p[1], static_cast<const int8_t*>(p[2]), static_cast<const double*>(p[3]), i[0],
                                i[1], i[2], d[0], d[1], d[2], d[3], dt(i[3]), static_cast<int8_t*>(p[4]),
                                static_cast<int64_t*>(p[5]), alloc, nullptr);
  });
}

// p: input, offset, mask (nullable), columns;
// i: geometry (channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
//    pad_h, pad_w, dil_h, dil_w, offset_groups, out_h, out_w), n, dtype
SIM_OP(deform_im2col) {
  (void)d, (void)ret;
  return guarded([&] { sniper::cuda::deform_im2col(p[0], p[1], p[2], geometry(i), i[14], p[3], dt(i[15]), nullptr); });
}

// p: grad_columns, input, offset, mask (nullable), grad_input, grad_offset, grad_mask (nullable);
// i: geometry (14), n, deterministic, dtype
SIM_OP(deform_col2im) {
  (void)d, (void)ret;
  return guarded([&] {
    HostAllocator alloc;
    sniper::cuda::deform_col2im(p[0], p[1], p[2], p[3], geometry(i), i[14], i[15] != 0, p[4], p[5], p[6], dt(i[16]),
                                alloc, nullptr);
  });
}

// p: input, rois, offset (nullable), out; i: n, c, h, w, k, ph, pw, sampling, aligned, dtype;
// d: scale, gamma
SIM_OP(roi_pool_forward) {
  (void)ret;
  return guarded([&] {
    const sniper::RoiPoolSpec spec{d[0], i[5], i[6], i[7], i[8] != 0, d[1]};
    sniper::cuda::roi_pool_forward(p[0], p[1], p[2], i[0], i[1], i[2], i[3], i[4], spec, p[3], dt(i[9]), nullptr);
  });
}

// p: grad, input (nullable), rois, offset (nullable), grad_input, grad_offset (nullable);
// i: n, c, h, w, k, ph, pw, sampling, aligned, dtype; d: scale, gamma
SIM_OP(roi_pool_backward) {
  (void)ret;
  return guarded([&] {
    HostAllocator alloc;
    const sniper::RoiPoolSpec spec{d[0], i[5], i[6], i[7], i[8] != 0, d[1]};
    sniper::cuda::roi_pool_backward(p[0], p[1], p[2], p[3], i[0], i[1], i[2], i[3], i[4], spec, p[4], p[5], dt(i[9]),
                                    alloc, nullptr);
  });
}
