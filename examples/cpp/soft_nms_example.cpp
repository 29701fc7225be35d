// Calls sniper::soft_nms and sniper::nms from C++ on the mmcv fixture.
// Build: see README ("C++ / CMake"); run: ./soft_nms_example
#include <sniper/ops.h>
#include <torch/csrc/stable/ops.h>

#include <cstdio>
#include <vector>

using torch::stable::Tensor;

static Tensor make(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor t = torch::stable::empty(shape, torch::headeronly::ScalarType::Float);
  float* p = t.mutable_data_ptr<float>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t;
}

int main() {
  std::printf("sniper_ops %s\n", sniper::library_version());
  Tensor boxes = make({6, 3, 8, 7, 3, 6, 9, 11, 3, 7, 10, 12, 1, 4, 13, 7}, {4, 4});
  Tensor scores = make({0.6f, 0.9f, 0.7f, 0.2f}, {4});
  auto [keep, new_scores] = sniper::soft_nms(boxes, scores, std::nullopt, sniper::kSoftNmsLinear, 0.5, 0.3, 0.01);
  std::printf("soft_nms(linear) keep:");
  for (int64_t i = 0; i < keep.numel(); ++i) std::printf(" %ld", (long)keep.const_data_ptr<int64_t>()[i]);
  std::printf("\nsoft_nms(linear) scores:");
  for (int64_t i = 0; i < new_scores.numel(); ++i) std::printf(" %.6f", new_scores.const_data_ptr<float>()[i]);
  Tensor nms_keep = sniper::nms(boxes, scores, 0.3);
  std::printf("\nnms keep:");
  for (int64_t i = 0; i < nms_keep.numel(); ++i) std::printf(" %ld", (long)nms_keep.const_data_ptr<int64_t>()[i]);
  std::printf("\n");
  // Two boxes on a 1000x800 canvas: the earliest 512x512 windows that hold them.
  Tensor gt = make({10, 10, 50, 50, 900, 10, 950, 40}, {2, 4});
  Tensor group = torch::stable::new_zeros(nms_keep, {2});
  Tensor canvas = make({1000, 800}, {1, 2});
  auto [chips, chip_group, box_chip] = sniper::greedy_chip_cover(gt, group, canvas);
  std::printf("chips:");
  for (int64_t i = 0; i < chips.numel(); ++i) std::printf(" %.0f", chips.const_data_ptr<float>()[i]);
  std::printf("\n");
  return 0;
}
