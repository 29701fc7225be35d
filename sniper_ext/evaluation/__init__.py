"""COCO evaluation of detection results (pycocotools' COCOeval, or faster-coco-eval's when installed;
checked and silenced).

    from sniper_ext.evaluation import evaluate_coco, format_table
    metrics = evaluate_coco("instances_val2017.json", "results.json")   # {"AP": 0.41, "AP50": ..., "backend": "faster"}
    print(format_table(metrics))

The ``sniper eval`` command is :mod:`sniper_ext.cli.eval`.
"""

from .coco_eval import (
    BACKENDS,
    METRIC_KEYS,
    check_ground_truth,
    check_results,
    evaluate_coco,
    format_per_class,
    format_table,
    resolve_backend,
    write_metrics_json,
)

__all__ = [
    "BACKENDS",
    "METRIC_KEYS",
    "check_ground_truth",
    "check_results",
    "evaluate_coco",
    "format_per_class",
    "format_table",
    "resolve_backend",
    "write_metrics_json",
]
