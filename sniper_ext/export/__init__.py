"""Deployable inference (method §9 as one program): the detector exported with ``torch.export``
(:func:`export_detector`), compiled ahead of time into an AOTInductor ``.pt2`` package
(:func:`compile_package`) and run from Python (:func:`load_package`, :func:`run_program`) or from
C++ (``examples/cpp/sniper_detect.cpp``). ``sniper export`` writes a package from a checkpoint.
See docs/export.md."""

from .graph import PRE_NMS_TOP_N, ExportableDetector, input_names, output_names
from .package import (
    FORMAT_VERSION,
    compile_package,
    config_from_metadata,
    detect_image_file,
    dynamic_shapes,
    example_inputs,
    export_detector,
    format_detections,
    host_sync_nodes,
    load_package,
    package_metadata,
    prepare_image,
    program_batches,
    read_image_file,
    resize_image,
    run_program,
    unpack,
)

__all__ = [
    "ExportableDetector",
    "FORMAT_VERSION",
    "PRE_NMS_TOP_N",
    "compile_package",
    "config_from_metadata",
    "detect_image_file",
    "dynamic_shapes",
    "example_inputs",
    "export_detector",
    "format_detections",
    "host_sync_nodes",
    "input_names",
    "load_package",
    "output_names",
    "package_metadata",
    "prepare_image",
    "program_batches",
    "read_image_file",
    "resize_image",
    "run_program",
    "unpack",
]
