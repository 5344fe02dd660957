"""`edgekit train classify`: transfer-learn a torchvision-style classifier on an ImageFolder.

Strategies: feature-extract (frozen backbone, new head), finetune (head-only warm-up epochs, then all
layers with a lower backbone learning rate) and progressive (head, then the last stages, then more, on
an epoch schedule). Writes best/last checkpoints (resumable), model.pt, labels.txt, a confusion matrix
and the manifest into the output directory. Multi-GPU/multi-process through torchrun (DDP).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.data.imagefolder import ImageSet, load_imagefolder, skipped_summary
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path, atomic_write_json, atomic_write_text
from edgekit.manifest import InputSpec, Manifest, TensorSpec
from edgekit.platform import machine_summary
from edgekit.train import models
from edgekit.train.classify_config import ClassifyConfig
from edgekit.train.data import EvalDataset, TrainDataset, epoch_order, train_batches
from edgekit.train.metrics import classification_metrics, plot_confusion
from edgekit.zoo import preprocessing_for

log = logging.getLogger(__name__)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def train_classifier(cfg: ClassifyConfig, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train, checkpoint every epoch, write the model directory. Returns the final summary."""
    cfg.validate()
    dist = _init_distributed()
    device = _device(cfg.device, dist)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    train_set, val_set = load_imagefolder(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
    classes = train_set.classes
    spec = input_spec(cfg)

    torch.manual_seed(cfg.seed)
    model, weights_source = models.build_model(cfg.arch, len(classes), cfg.pretrained)
    model.to(device)
    head = models.head_module(model, cfg.arch)
    stages = models.backbone_stages(model, cfg.arch)
    optimizer = _optimizer(model, head, cfg)
    train_ds = TrainDataset(train_set, spec, scale_min=cfg.scale_min, hflip=cfg.hflip, seed=cfg.seed)
    per_rank = math.ceil(len(train_set) / dist.world)
    if per_rank < 2:
        raise EdgekitError(f"{cfg.data}: {len(train_set)} training image(s) for {dist.world} process(es); training "
                           "needs at least 2 per process (BatchNorm normalises over the batch)")
    steps_per_epoch = len(train_batches(list(range(per_rank)), cfg.batch))
    scheduler = _scheduler(optimizer, cfg, steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    state = {"epoch": 0, "best_top1": -1.0, "history": [], "train_seconds": 0.0}
    last_ckpt = out / "last.pt"
    if cfg.resume and last_ckpt.exists():
        state = _resume(last_ckpt, cfg, model, optimizer, scheduler, scaler)
        if dist.main:
            log.info("resuming %s from epoch %d of %d", out, state["epoch"], cfg.epochs)
    elif dist.main:
        out.mkdir(parents=True, exist_ok=True)

    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.perf_counter()
        trainable = _apply_freeze(model, head, stages, cfg, epoch)
        ddp = _wrap(model, dist, device)
        train_ds.epoch = epoch
        order = epoch_order(len(train_set), cfg.seed, epoch, dist.rank, dist.world)
        loader = torch.utils.data.DataLoader(train_ds, batch_sampler=train_batches(order, cfg.batch),
                                             num_workers=cfg.workers)
        loss = _train_epoch(ddp, model, loader, criterion, optimizer, scheduler, scaler, cfg, device, use_amp,
                            desc=f"epoch {epoch + 1}/{cfg.epochs}", show=cfg.progress and dist.main)
        state["train_seconds"] += time.perf_counter() - t0
        if dist.main:
            logits, labels = predict(model, val_set, spec, device, cfg.batch)
            m = classification_metrics(logits, labels, classes)
            row = {"epoch": epoch + 1, "train_loss": round(loss, 5), "val_top1": m["top1"],
                   "trainable": trainable, "seconds": round(time.perf_counter() - t0, 2)}
            state["history"].append(row)
            log.info("epoch %d/%d  loss %.4f  val top-1 %.4f  (%s, %.1fs)", epoch + 1, cfg.epochs, loss,
                     m["top1"], trainable, row["seconds"])
            if m["top1"] > state["best_top1"]:
                state["best_top1"] = m["top1"]
                _save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch + 1, "top1": m["top1"]})
            state["epoch"] = epoch + 1
            _save(last_ckpt, _checkpoint(model, optimizer, scheduler, scaler, state, cfg))
        else:
            state["epoch"] = epoch + 1
        _barrier(dist)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, state)

    summary: dict = {}
    if dist.main:
        summary = _finish(cfg, out, model, val_set, spec, device, state, weights_source, dist.world,
                          skipped=skipped_summary(train_set.skipped + val_set.skipped))
    _barrier(dist)
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return summary


def seconds_per_step(cfg: ClassifyConfig, steps: int = 3) -> float:
    """Median seconds of one training step of cfg's network with every layer trainable (the cost of most
    epochs) on a batch of cfg.batch random images at cfg.imgsz, after one warm-up step: how a time budget
    becomes epochs on this machine (`edgekit demo`). Costs a few seconds; the model is thrown away."""
    device = _device(cfg.device, _Dist())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, _ = models.build_model(cfg.arch, 10, cfg.pretrained)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    x = torch.randn(cfg.batch, 3, cfg.imgsz, cfg.imgsz, device=device)
    y = torch.randint(0, 10, (cfg.batch,), device=device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def input_spec(cfg: ClassifyConfig) -> InputSpec:
    """The eval preprocessing: the architecture's own normalisation (the pretrained backbone's, e.g.
    EfficientNet-Lite0's (x - 127) / 128), OpenCV's resize (what training augments with)."""
    pre = preprocessing_for(cfg.arch)
    return InputSpec(name="input", shape=[1, 3, cfg.imgsz, cfg.imgsz], dtype="float32", color="RGB",
                     resize=round(cfg.imgsz / cfg.crop_pct), crop=[cfg.imgsz, cfg.imgsz], scale=pre.scale,
                     mean=list(pre.mean), std=list(pre.std))


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, spec: InputSpec, device: torch.device, batch: int = 64
            ) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over a whole split, preprocessed exactly as the manifest says."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(EvalDataset(data, spec), batch_size=batch)
    logits = [model(x.to(device)).float().cpu() for x, _ in loader]
    model.train(was_training)
    return torch.cat(logits).numpy(), data.labels.copy()


# ---- the loop -----------------------------------------------------------------------------------------

def _train_epoch(ddp, model, loader, criterion, optimizer, scheduler, scaler, cfg, device, use_amp, *, desc, show):
    from tqdm import tqdm

    total, count = 0.0, 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=None if show else True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss = criterion(ddp(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / max(count, 1)


def _apply_freeze(model: nn.Module, head: nn.Module, stages: list[nn.Module], cfg: ClassifyConfig, epoch: int) -> str:
    """Set requires_grad for this epoch; frozen stages keep BatchNorm statistics fixed (eval mode)."""
    if cfg.strategy == "feature-extract" or epoch < cfg.head_epochs:
        n_open = 0
    elif cfg.strategy == "finetune":
        n_open = len(stages)
    else:
        step = (epoch - cfg.head_epochs) // max(cfg.unfreeze_every, 1) + 1
        n_open = min(len(stages), step * cfg.unfreeze_stages)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    for i, stage in enumerate(stages):
        if i >= len(stages) - n_open:
            stage.requires_grad_(True)
        else:
            stage.eval()
    return "head" if n_open == 0 else ("all" if n_open == len(stages) else f"head+{n_open}/{len(stages)} stages")


def _optimizer(model: nn.Module, head: nn.Module, cfg: ClassifyConfig) -> torch.optim.Optimizer:
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim <= 1  # norms and biases
        groups.setdefault((id(p) in head_ids, no_decay), []).append(p)
    param_groups = [{"params": ps, "lr": cfg.lr * (1.0 if is_head else cfg.backbone_lr_scale),
                     "weight_decay": 0.0 if no_decay else cfg.weight_decay}
                    for (is_head, no_decay), ps in sorted(groups.items())]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def _scheduler(optimizer, cfg: ClassifyConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        t = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- checkpoints ------------------------------------------------------------------------------------

def _checkpoint(model, optimizer, scheduler, scaler, state, cfg) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "config": asdict(cfg),
            "epoch": state["epoch"], "best_top1": state["best_top1"], "train_seconds": state["train_seconds"],
            "history": json.dumps(state["history"])}


def _save(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a short write (a full disk) as "unexpected pos"
            free = shutil.disk_usage(tmp.parent).free >> 20
            raise EdgekitError(f"cannot write {path} ({free} MiB free there; is the disk full?): "
                               f"{str(e).splitlines()[0][:160]}") from None


def _resume(path: Path, cfg, model, optimizer, scheduler, scaler) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgekitError(f"cannot resume from {path} ({type(e).__name__}): delete it or pass --no-resume") from None
    old = ck.get("config", {})
    diff = [k for k, v in asdict(cfg).items() if k not in cfg.RESUMABLE_CHANGES and old.get(k) != v]
    if diff:
        raise EdgekitError(f"{path.parent} holds a run with other settings ({', '.join(diff)} differ): "
                           "use another --out, the same settings, or --no-resume to start over")
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["rng"])
    return {"epoch": int(ck["epoch"]), "best_top1": float(ck["best_top1"]),
            "train_seconds": float(ck["train_seconds"]), "history": json.loads(ck["history"])}


def _finish(cfg, out: Path, model, val_set: ImageSet, spec: InputSpec, device, state, weights_source, world, *,
            skipped: dict | None = None) -> dict:
    """Reload the best weights, evaluate them, and write model.pt, labels, plot, config and manifest."""
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    model.to(device)
    logits, labels = predict(model, val_set, spec, device, cfg.batch)
    classes = val_set.classes
    m = classification_metrics(logits, labels, classes)
    _save(out / "model.pt", {k: v.cpu() for k, v in model.state_dict().items()})
    atomic_write_text(out / "labels.txt", "\n".join(classes) + "\n")
    plot_confusion(m["confusion"], classes, out / "confusion_matrix.png",
                   f"{cfg.arch} val top-1 {m['top1']:.2%} (n={m['n']})")
    atomic_write_json(out / "train_config.json", asdict(cfg))
    metrics = {k: v for k, v in m.items() if k != "confusion"}
    metrics.update(best_epoch=int(best["epoch"]), train_seconds=round(state["train_seconds"], 1), world_size=world)
    manifest = Manifest(
        name=out.name, task="classify", labels=classes, input=spec,
        outputs=[TensorSpec("logits", [1, len(classes)], "float32")],
        source={"arch": cfg.arch, "weights": weights_source, "checkpoint": "best.pt",
                "dataset": {"root": str(Path(cfg.data).resolve()), "val_split": cfg.val_split, "seed": cfg.seed,
                            "val_images": len(val_set), "skipped_images": skipped or skipped_summary([])},
                "train_args": asdict(cfg), "metrics": metrics, "history": state["history"]},
    )
    manifest.save(out)  # a new manifest: artifacts exported from earlier weights are no longer listed
    manifest.add_artifact("torch", "model.pt", "fp32", built_on=machine_summary(), accuracy={"val_top1": m["top1"]})
    manifest.save(out)
    return {"model_dir": str(out), "val_top1": m["top1"], "metrics": metrics, "history": state["history"]}


# ---- devices and processes ----------------------------------------------------------------------------

def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return _Dist(rank, world, local)


def _device(name: str, dist: _Dist) -> torch.device:
    if name == "auto":
        name = f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgekitError("--device cuda asked for, but torch sees no CUDA device: use --device cpu")
    return torch.device(name)


def _wrap(model: nn.Module, dist: _Dist, device: torch.device) -> nn.Module:
    if dist.world == 1:
        return model
    # Re-wrapped each epoch: DDP registers only the parameters that train, and that set changes.
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _barrier(dist: _Dist) -> None:
    if dist.world > 1:
        torch.distributed.barrier()
