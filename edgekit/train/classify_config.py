"""Options of `edgekit train classify`, in one place (no torch import: the CLI builds its --help from it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.configs import check_config, option
from edgekit.errors import EdgekitError

STRATEGIES = ("feature-extract", "finetune", "progressive")
ARCH_NAMES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50",
              "efficientnet_b0", "efficientnet_lite0")
PRETRAINED_SOURCES = ("auto", "packaged", "torchvision", "none")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
DEVICE_HINT = "auto, cpu, cuda or cuda:N (N a CUDA device index)"
MIN_IMGSZ = 32  # the backbones downsample 32x: a smaller crop leaves less than one pixel for the last stage


@dataclass
class ClassifyConfig:
    data: str = option("", path="dir", empty=True)  # ImageFolder: root/train + root/val, or root/<class>/ (val_split)
    out: str = option("runs/classify", path="out_dir")  # model directory: checkpoints, manifest, labels, plots
    arch: str = option("mobilenet_v2", choices=ARCH_NAMES)  # mobilenet_v2/v3_small/v3_large, resnet18/34/50, efficientnet_b0/lite0
    pretrained: str = option("auto")  # auto (packaged, else torchvision) | packaged | torchvision | none | PATH
    imgsz: int = option(224, ge=MIN_IMGSZ, le=4096)  # square crop fed to the network
    crop_pct: float = option(0.875, gt=0, le=1)  # eval: resize the shorter side to imgsz / crop_pct, then centre-crop
    strategy: str = option("finetune", choices=STRATEGIES)  # feature-extract | finetune | progressive
    epochs: int = option(10, ge=1)  # passes over the training set
    head_epochs: int = option(1, ge=0)  # finetune/progressive: epochs that train only the head first
    unfreeze_every: int = option(1, ge=1)  # progressive: epochs between unfreezing the next backbone stages
    unfreeze_stages: int = option(2, ge=1)  # progressive: backbone stages unfrozen at each step, from the top
    backbone_lr_scale: float = option(0.33, ge=0)  # backbone learning rate = lr * this (the head gets lr)
    batch: int = option(64, ge=2)  # per process
    lr: float = option(1e-3, gt=0, le=10)  # peak learning rate of the head
    optimizer: str = option("adamw", choices=("adamw", "sgd"))  # adamw | sgd (with momentum, nesterov)
    momentum: float = option(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = option(1e-4, ge=0)  # not applied to norms and biases
    warmup_epochs: float = option(0.3, ge=0)  # linear warm-up, then cosine decay to 1% of lr
    label_smoothing: float = option(0.0, ge=0, lt=1)  # share of the target spread over all classes
    clip_grad: float = option(0.0, ge=0)  # max gradient norm; 0 = off
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    hflip: float = option(0.5, ge=0, le=1)  # probability of a horizontal flip (0 for digits and text)
    scale_min: float = option(0.6, gt=0, le=1)  # random-resized-crop minimum area fraction
    val_split: float = option(0.1, gt=0, lt=1)  # used when the data has no val/ folder
    seed: int = option(0, ge=0)  # data order, augmentation and head initialisation
    workers: int = option(0, ge=0, le=256)  # DataLoader workers; 0 loads in the main process (fine for small sets)
    device: str = option("auto", pattern=DEVICE_PATTERN, hint=DEVICE_HINT)  # auto | cpu | cuda | cuda:N
    threads: int = option(0, ge=0, le=1024)  # torch intra-op threads on CPU; 0 = torch's default
    resume: bool = True  # continue from out/last.pt when it exists
    progress: bool = True  # progress bars on a terminal

    # Fields that may differ between an interrupted run and its resumption.
    RESUMABLE_CHANGES = ("resume", "progress", "workers", "device", "threads")

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        if not self.data:
            raise EdgekitError("no dataset given: pass --data DIR (an ImageFolder; try `edgekit data mnist5k`)")
        if self.pretrained not in PRETRAINED_SOURCES and not Path(self.pretrained).is_file():
            raise EdgekitError(f"--pretrained {self.pretrained} is neither {', '.join(PRETRAINED_SOURCES)} nor a "
                               "weights file")
