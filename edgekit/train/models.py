"""Classifier architectures for transfer learning: build, load pretrained weights, swap the head, and
name the backbone's stages (input to output) so strategies can freeze and unfreeze them."""
from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.zoo import PACKAGED, packaged_weights


@dataclass(frozen=True)
class ArchInfo:
    head: str  # dotted name of the final nn.Linear
    stages: Callable[[nn.Module], list[nn.Module]]  # backbone groups, input -> output
    default_imgsz: int = 224


def _tv(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)

    return build


def _lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EdgekitError("efficientnet_lite0 needs efficientnet-lite-pytorch: "
                           "pip install efficientnet-lite-pytorch==0.1.0 (make setup installs it)") from None
    return EfficientNet.from_name("efficientnet-lite0")


def _features(m: nn.Module) -> list[nn.Module]:
    return list(m.features)


def _resnet(m: nn.Module) -> list[nn.Module]:
    return [nn.ModuleList([m.conv1, m.bn1]), m.layer1, m.layer2, m.layer3, m.layer4]


def _lite_stages(m: nn.Module) -> list[nn.Module]:
    return [nn.ModuleList([m._conv_stem, m._bn0]), *m._blocks, nn.ModuleList([m._conv_head, m._bn1])]


ARCHS: dict[str, tuple[Callable[[], nn.Module], ArchInfo]] = {
    "mobilenet_v2": (_tv("mobilenet_v2"), ArchInfo("classifier.1", _features)),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small"), ArchInfo("classifier.3", _features)),
    "mobilenet_v3_large": (_tv("mobilenet_v3_large"), ArchInfo("classifier.3", _features)),
    "resnet18": (_tv("resnet18"), ArchInfo("fc", _resnet)),
    "resnet34": (_tv("resnet34"), ArchInfo("fc", _resnet)),
    "resnet50": (_tv("resnet50"), ArchInfo("fc", _resnet)),
    "efficientnet_b0": (_tv("efficientnet_b0"), ArchInfo("classifier.1", _features)),
    "efficientnet_lite0": (_lite0, ArchInfo("_fc", _lite_stages)),
}
PRETRAINED_CHOICES = ("auto", "packaged", "torchvision", "none")  # or a path to a state_dict


def arch_info(arch: str) -> ArchInfo:
    if arch not in ARCHS:
        raise unknown_choice("architecture", arch, ARCHS)
    return ARCHS[arch][1]


def build_model(arch: str, num_classes: int, pretrained: str = "none") -> tuple[nn.Module, str]:
    """The architecture with a fresh `num_classes` head and pretrained backbone weights.
    Returns the model and a description of where its weights came from."""
    info = arch_info(arch)
    model = ARCHS[arch][0]()
    source = _load_pretrained(model, arch, info, pretrained)
    _replace_head(model, info.head, num_classes)
    return model, source


def head_module(model: nn.Module, arch: str) -> nn.Module:
    return model.get_submodule(arch_info(arch).head)


def backbone_stages(model: nn.Module, arch: str) -> list[nn.Module]:
    return arch_info(arch).stages(model)


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    parent_name, _, leaf = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, leaf)
    new = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(new.weight, 0, 0.01)
    nn.init.zeros_(new.bias)
    setattr(parent, leaf, new)


def _load_pretrained(model: nn.Module, arch: str, info: ArchInfo, pretrained: str) -> str:
    if pretrained == "none":
        return "none (random init)"
    if pretrained == "auto":
        pretrained = "packaged" if arch in PACKAGED else "torchvision"
    if pretrained == "packaged":
        path = packaged_weights(arch)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if PACKAGED[arch].what == "backbone":  # names differ from torchvision's: map by position
            _load_by_position(model.features, state, path)
        else:
            _load_matching(model, state, info.head, path)
        return f"packaged:{PACKAGED[arch].package}/{PACKAGED[arch].relpath}"
    if pretrained == "torchvision":
        return _load_torchvision(model, arch, info)
    path = Path(pretrained)
    if not path.exists():
        raise EdgekitError(f"--pretrained '{pretrained}' is neither one of {', '.join(PRETRAINED_CHOICES)} "
                           "nor an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgekitError(f"could not read weights from {path} ({type(e).__name__}): pass a state_dict saved "
                           "with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # an edgekit or torchvision-reference checkpoint
    _load_matching(model, state, info.head, path)
    return f"file:{path}"


def _load_torchvision(model: nn.Module, arch: str, info: ArchInfo) -> str:
    if arch == "efficientnet_lite0":
        raise EdgekitError("torchvision has no efficientnet_lite0 weights: use --pretrained packaged")
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        state = weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as e:
        raise EdgekitError(
            f"could not download torchvision's {arch} weights ({e}); offline, pass --pretrained PATH to a "
            f"state_dict, --pretrained packaged (available for {', '.join(PACKAGED)}), or --pretrained none"
        ) from None
    _load_matching(model, state, info.head, weights.url)
    return f"torchvision:{weights}"


def _load_by_position(module: nn.Module, state: dict, where: object) -> None:
    own = module.state_dict()
    if len(own) != len(state) or any(a.shape != b.shape for a, b in zip(own.values(), state.values())):
        raise EdgekitError(f"weights in {where} do not match this architecture's layout")
    module.load_state_dict(dict(zip(own.keys(), state.values())), strict=True)


def _load_matching(model: nn.Module, state: dict, head: str, where: object) -> None:
    """Load every tensor except the head's; all non-head tensors must be present with the same shapes."""
    if not isinstance(state, dict):
        raise EdgekitError(f"{where} does not hold a state_dict")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head + ".")}
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise EdgekitError(f"weights in {where} do not fit this architecture: {len(missing)} missing "
                           f"(e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]}); is it the same arch?")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
