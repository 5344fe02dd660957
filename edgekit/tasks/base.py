"""What differs between tasks, as one record per task: `edgekit.tasks.task_for(manifest)` returns it, and the
stages ask it instead of branching on the task's name (jetson-inference's imageNet / detectNet over tensorNet,
as data instead of classes).

Two groups of hooks. What the reduced-precision exports need (edgekit.export.fp16 / int8): the held-out inputs
that score the model, the training images that calibrate and tune it, the metric and the label-free agreement
with FP32, the parity numbers recorded and the nodes that must never be quantized. What `edgekit bench` adds
(edgekit.profile): decoded held-out images, the application pipeline around the model for the end-to-end
timing (preprocess -> infer -> postprocess), and the labels and columns the report prints. Between them, the
task's preprocessing contract (decoded images -> model inputs), the framework whose exporter makes its ONNX
and the agreement each precision must keep. The bench's accuracy and parity are the export's hooks, so the bench
and the manifest never disagree on "accuracy"."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# (the model's first output over all inputs [N, ...], targets) -> {"metric": name, "value": float, "n": int, ...};
# higher is better, and budgets are in points of value (100 x the fraction)
Metric = Callable[[np.ndarray, np.ndarray], dict]

# (reference outputs, outputs) -> fraction of inputs on which the two models agree (label-free)
Agreement = Callable[[np.ndarray, np.ndarray], float]

# (manifest, --data, n calibration images, minimum, seed, n tuning images) -> (calibration set, a function
# that builds the tuning inputs: training images that did not calibrate, built only when the fallback runs)
Calibration = Callable[..., tuple[Any, Callable[[], Any]]]

# a stage of the application pipeline: (image or model output, context) -> (result, context)
Pre = Callable[[np.ndarray], tuple[np.ndarray, Any]]
Post = Callable[[np.ndarray, Any], Any]


@dataclass(frozen=True)
class Task:
    name: str  # the manifest's task
    # ---- what the FP16 / INT8 exports ask ----
    metric: Metric  # scores outputs against targets; budgets are in points of it
    agreement: Agreement  # (FP32 outputs, reduced-precision outputs) -> fraction in [0, 1], label-free
    agreement_name: str  # what the agreement is, in words, for messages
    parity: Callable[[np.ndarray, np.ndarray], dict]  # the numbers recorded against the FP32 reference
    heldout: Callable[..., Any]  # (manifest, data, limit) -> LabelledInputs of the val split
    calibration: Calibration
    float_nodes: Callable[[object], list[str]]  # onnx.ModelProto -> nodes that are never quantized
    # ---- the preprocessing contract, what the exports build and check ----
    inputs: Callable[..., np.ndarray]  # (manifest, decoded uint8 BGR images) -> model inputs [N, ...]
    # --calib-data (no labels): FP32's outputs [N, ...] -> the targets the metric scores (agreement with FP32)
    fp32_targets: Callable[..., np.ndarray]
    input_fields: tuple[str, ...]  # the InputSpec fields `inputs` reads: a fingerprint of the preprocessing
    # (manifest, data, n, seed) -> (the image files `calibration` calibrates on, in its order; the dataset root):
    # what the TensorRT calibrator reads, so both INT8 paths see the same training images
    calibration_paths: Callable[..., tuple[list[Path], str]]
    framework: str  # the library its torch weights belong to: "torchvision" or "ultralytics" (its own exporter)
    dynamic_batch: bool  # whether its ONNX may have a dynamic batch axis
    fp16_min_agreement: float  # --fp16-min-agreement -1: the agreement with FP32 an FP16 export must keep
    int8_min_agreement: float  # --int8-min-agreement -1: the agreement with FP32 an INT8 export must keep
    trt_min_agreement: dict[str, float]  # precision -> the agreement with ONNX Runtime a TensorRT engine must reach
    # ---- what `edgekit bench` asks ----
    metric_label: str  # the accuracy metric's name in tables and plots
    agreement_label: str  # what parity's agreement counts, in words
    agreement_key: str  # its key in the parity dict
    agreement_note: str  # how the report explains the agreement (after agreement_label), or ""
    e2e_what: str  # what end-to-end covers, in words
    # report columns beyond the latency ones: (column, "accuracy" | "parity", key in that dict)
    columns: tuple[tuple[str, str, str], ...]
    images: Callable[..., list[np.ndarray]]  # (manifest, data, n) -> decoded held-out images, uint8 BGR
    pipeline: Callable[..., tuple[Pre, Post]]  # (manifest) -> (preprocess, postprocess) of one image

    def column_value(self, row: dict, column: str) -> Any:
        for name, where, key in self.columns:
            if name == column:
                return (row.get(where) or {}).get(key)
        raise KeyError(column)
