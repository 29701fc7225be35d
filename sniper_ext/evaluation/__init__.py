"""COCO evaluation of detection results (pycocotools' COCOeval, checked and silenced).

    from sniper_ext.evaluation import evaluate_coco, format_table
    metrics = evaluate_coco("instances_val2017.json", "results.json")   # {"AP": 0.41, "AP50": ...}
    print(format_table(metrics))

The ``sniper eval`` command is :mod:`sniper_ext.cli.eval`.
"""

from .coco_eval import METRIC_KEYS, check_results, evaluate_coco, format_per_class, format_table, write_metrics_json

__all__ = ["METRIC_KEYS", "check_results", "evaluate_coco", "format_per_class", "format_table", "write_metrics_json"]
