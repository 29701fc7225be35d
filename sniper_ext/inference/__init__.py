"""Multi-scale inference helpers (method §9): per-scale valid ranges, the Soft-NMS merge of all
scales, and COCO detection-results files.

    from sniper_ext.inference import in_valid_range, merge_detections, detections_to_coco
    keep = scores > 1e-3 & in_valid_range(boxes, 32, 180)         # per scale, original pixels
    merged = merge_detections(per_image, num_classes=C)            # one batched soft_nms call
    results = detections_to_coco(image_ids, merged, category_ids)  # labels 1..C -> category ids
    write_results_json("results.json", results)
"""

from .merge import in_valid_range, merge_detections
from .results import detections_to_coco, read_results_jsonl, write_results_json, write_results_jsonl

__all__ = [
    "detections_to_coco",
    "in_valid_range",
    "merge_detections",
    "read_results_jsonl",
    "write_results_json",
    "write_results_jsonl",
]
