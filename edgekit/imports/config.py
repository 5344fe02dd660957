"""Options of `edgekit import`, in one place (no torch, onnx or ultralytics import: the CLI builds its --help from
it). A preprocessing option left at its default ('' or 0 or off) means "from the model": ultralytics' ONNX metadata,
the graph, or the task's usual convention; what was given and what was inferred are both recorded."""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.configs import ONNX_OPSETS, check_config, option
from edgekit.errors import EdgekitError
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

_NUM = r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*"
THREE_NUMBERS = rf"{_NUM}(,{_NUM},{_NUM})?"  # one value for all channels, or three
SIZE = r"\d+(,\d+)?"  # N or H,W


@dataclass
class ImportConfig:
    source: str = option("", hint="an .onnx file, an ultralytics .pt, torchvision:NAME or efficientnet_lite0")  # what to import: model.onnx | best.pt (with --trust-pickle) | torchvision:resnet18 | efficientnet_lite0
    out: str = option("", path="out_dir", hint="the model directory to write: --out DIR")  # the model directory to write (a new folder, or one edgekit made)
    task: str = option("", choices=("classify", "detect"), empty=True)  # classify | detect; empty: from the model's metadata or output shape
    labels: str = option("", path="file", empty=True)  # class names: .txt (one a line), .yaml or .json (a list, a dict id: name, or names:); empty: the model's metadata
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end | an installed plug-in module.path:function; empty: chosen from the output shape and metadata
    data: str = option("", path="any", empty=True)  # detectors: a YOLO data.yaml with the model's classes (parity images, mAP; later commands use it as held-out data); torchvision:NAME: a folder of images for the ONNX parity check
    trust_pickle: bool = False  # required for a .pt: ultralytics unpickles it, which runs any code it holds (edgekit does it in a separate process)
    weights: str = option("", path="file", empty=True)  # torchvision:NAME: a local weights file (state dict, read weights-only); empty: the packaged or torchvision ones
    imgsz: int = option(0, ge=0, le=4096)  # .pt: the export size (a multiple of 32); 0 = the size it was trained at (640 when not recorded)
    opset: int = option(17, ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1])  # .pt / torchvision: ONNX opset of the export (TensorRT 10.3 parses 17)
    mean: str = option("", pattern=THREE_NUMBERS, empty=True, hint="one number or three, comma-separated")  # per-channel mean subtracted after --scale (0.485,0.456,0.406); empty: from the model
    std: str = option("", pattern=THREE_NUMBERS, empty=True, hint="one number or three, comma-separated")  # per-channel std divided by after the mean (0.229,0.224,0.225); empty: from the model
    scale: float = option(0.0, ge=0)  # uint8 pixels are multiplied by this first (1/255 = 0.00392156862745098); 0 = from the model
    resize: int = option(0, ge=0, le=16384)  # shorter side before the centre crop; 0 = from the model (crop / 0.875 for a classifier)
    crop: str = option("", pattern=SIZE, empty=True, hint="N or H,W")  # network input size H,W (or N): needed when the graph's size is dynamic
    letterbox: bool = False  # keep aspect and pad (detectors, ultralytics' LetterBox) instead of resize + centre crop
    bgr: bool = False  # the model takes BGR channel order (default RGB)
    nhwc: bool = False  # the model takes NHWC (channels last) input; default: read from the graph

    def validate(self) -> None:
        check_config(self)
        if not self.source:
            raise EdgekitError("nothing to import: pass SOURCE (an .onnx file, an ultralytics .pt with --trust-pickle, "
                               "torchvision:NAME or efficientnet_lite0)")
        if not self.out:
            raise EdgekitError("no model directory given: pass --out DIR")
        if self.std and min(floats(self.std)) <= 0:
            raise EdgekitError(f"--std {self.std}: every value must be > 0")
        if self.crop and min(sizes(self.crop)) < 1:
            raise EdgekitError(f"--crop {self.crop}: sizes must be >= 1")
        if self.imgsz % 32:
            raise EdgekitError(f"--imgsz {self.imgsz} is not a multiple of 32 (the largest YOLO stride): use "
                               f"{max(32, round(self.imgsz / 32) * 32)}")

    def given(self) -> dict:
        """The preprocessing and label options the user set (what the manifest records as given)."""
        keys = ("task", "labels", "decoder", "mean", "std", "scale", "resize", "crop", "letterbox", "bgr", "nhwc")
        return {k: getattr(self, k) for k in keys if getattr(self, k) not in ("", 0, 0.0, False)}


def floats(text: str) -> list[float]:
    """'0.5' -> [0.5, 0.5, 0.5]; '1,2,3' -> [1.0, 2.0, 3.0]."""
    vals = [float(v) for v in text.split(",")]
    return vals * 3 if len(vals) == 1 else vals


def sizes(text: str) -> list[int]:
    """'224' -> [224, 224]; '480,640' -> [480, 640]."""
    vals = [int(v) for v in text.split(",")]
    return vals * 2 if len(vals) == 1 else vals
