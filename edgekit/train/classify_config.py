"""Options of `edgekit train classify`, in one place (no torch import: the CLI builds its --help from it)."""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import EdgekitError, unknown_choice

STRATEGIES = ("feature-extract", "finetune", "progressive")
ARCH_NAMES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50",
              "efficientnet_b0", "efficientnet_lite0")


@dataclass
class ClassifyConfig:
    data: str = ""  # ImageFolder root: root/train + root/val, or root/<class>/ split with val_split
    out: str = "runs/classify"  # model directory: checkpoints, manifest, labels, plots
    arch: str = "mobilenet_v2"  # mobilenet_v2, mobilenet_v3_small/large, resnet18/34/50, efficientnet_b0/lite0
    pretrained: str = "auto"  # auto (packaged, else torchvision) | packaged | torchvision | none | PATH
    imgsz: int = 224  # square crop fed to the network
    crop_pct: float = 0.875  # eval: resize the shorter side to imgsz / crop_pct, then centre-crop
    strategy: str = "finetune"  # feature-extract | finetune | progressive
    epochs: int = 10
    head_epochs: int = 1  # finetune/progressive: epochs that train only the head first
    unfreeze_every: int = 1  # progressive: epochs between unfreezing the next backbone stages
    unfreeze_stages: int = 2  # progressive: backbone stages unfrozen at each step, from the top
    backbone_lr_scale: float = 0.33  # backbone learning rate = lr * this (the head gets lr)
    batch: int = 64  # per process
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | sgd (with momentum, nesterov)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4  # not applied to norms and biases
    warmup_epochs: float = 0.3  # linear warm-up, then cosine decay to 1% of lr
    label_smoothing: float = 0.0
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    hflip: float = 0.5  # probability of a horizontal flip (0 for digits and text)
    scale_min: float = 0.6  # random-resized-crop minimum area fraction
    val_split: float = 0.1  # used when the data has no val/ folder
    seed: int = 0
    workers: int = 0  # DataLoader workers; 0 loads in the main process (fine for cached small sets)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    resume: bool = True  # continue from out/last.pt when it exists
    progress: bool = True  # progress bars on a terminal

    # Fields that may differ between an interrupted run and its resumption.
    RESUMABLE_CHANGES = ("resume", "progress", "workers", "device", "threads")

    def validate(self) -> None:
        if not self.data:
            raise EdgekitError("no dataset given: pass --data DIR (an ImageFolder; try `edgekit data mnist5k`)")
        if self.arch not in ARCH_NAMES:
            raise unknown_choice("architecture", self.arch, ARCH_NAMES)
        if self.strategy not in STRATEGIES:
            raise unknown_choice("strategy", self.strategy, STRATEGIES)
        if self.optimizer not in ("adamw", "sgd"):
            raise unknown_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        for name in ("epochs", "batch", "imgsz"):
            if getattr(self, name) < 1:
                raise EdgekitError(f"--{name} must be at least 1")
        if not 0 < self.crop_pct <= 1:
            raise EdgekitError("--crop-pct must be in (0, 1]")
