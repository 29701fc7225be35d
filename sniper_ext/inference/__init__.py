"""Inference (method §9): multi-scale detection with a trained detector (:class:`MultiScaleInference`,
also the RPN pass of negative mining), the Soft-NMS merge of all scales, COCO detection-results
files, the inference settings of a checkpoint, and AutoFocus's cascade (:class:`AutoFocusInference`,
method §11).

    engine = MultiScaleInference.for_config(model, cfg, device="cpu")
    run = engine.run(records, image_root, categories)               # detections + COCO results
    keep = scores > 1e-3 & in_valid_range(boxes, 32, 180)           # per scale, original pixels
    merged = merge_detections(per_image, num_classes=C)             # one batched soft_nms call
    write_results_json("results.json", run.results)
"""

from .autofocus import AutoFocusInference, cascade_order, check_autofocus_config, chip_edge_keep
from .merge import in_valid_range, merge_detections
from .multiscale import InferenceRun, MultiScaleInference, resolution_loaders
from .results import detections_to_coco, read_results_jsonl, write_results_json, write_results_jsonl
from .settings import check_class_count, check_overrides, inference_config

__all__ = [
    "AutoFocusInference",
    "cascade_order",
    "check_autofocus_config",
    "chip_edge_keep",
    "InferenceRun",
    "MultiScaleInference",
    "check_class_count",
    "check_overrides",
    "detections_to_coco",
    "in_valid_range",
    "resolution_loaders",
    "inference_config",
    "merge_detections",
    "read_results_jsonl",
    "write_results_json",
    "write_results_jsonl",
]
