"""The task layer: one module per task (classify, detect), one registry. Stages ask `task_for(manifest)` for
what differs between tasks (edgekit.tasks.base.Task) and never branch on the task's name."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.tasks.base import Task
from edgekit.tasks.classify import CLASSIFY
from edgekit.tasks.detect import DETECT

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFY, DETECT)}


def task_for(manifest_or_task: Manifest | str, decoder: str = "") -> Task:
    """The task of a manifest (or a task's name). An unknown one is an EdgekitError listing the known ones.
    A detector manifest's outputs are read by the decoder it names (`decoder`: the user's --decoder, which a
    plug-in recorded in the manifest needs)."""
    name = manifest_or_task if isinstance(manifest_or_task, str) else manifest_or_task.task
    try:
        task = TASKS[name]
    except KeyError:
        where = "" if isinstance(manifest_or_task, str) else f"{manifest_or_task.model_dir}: "
        raise EdgekitError(f"{where}edgekit knows the tasks {sorted(TASKS)}, not '{name}'") from None
    if isinstance(manifest_or_task, str) or manifest_or_task.postprocess is None:
        return task
    from edgekit.vision.decoders import resolve_decoder

    dec = resolve_decoder(manifest_or_task.postprocess.decoder, decoder, model_dir=manifest_or_task.model_dir)
    return replace(task, metric=partial(task.metric, decoder=dec), agreement=partial(task.agreement, decoder=dec),
                   parity=partial(task.parity, decoder=dec), fp32_targets=partial(task.fp32_targets, decoder=dec),
                   pipeline=partial(task.pipeline, decoder=dec))


def tasks_of(framework: str) -> list[str]:
    """The tasks whose models come from `framework` ("torchvision", "ultralytics")."""
    return sorted(name for name, t in TASKS.items() if t.framework == framework)


def require_framework(manifest: Manifest, framework: str, what: str) -> Task:
    """The manifest's task, when its models come from `framework`; else an EdgekitError saying `what` needs."""
    task = task_for(manifest)
    if task.framework != framework:
        raise EdgekitError(f"{manifest.model_dir} holds a '{task.name}' model ({task.framework}); {what} takes "
                           f"{framework} models ({', '.join(tasks_of(framework))})")
    return task


__all__ = ["TASKS", "Task", "require_framework", "task_for", "tasks_of"]
