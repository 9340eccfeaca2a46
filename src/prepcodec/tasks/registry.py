"""Task registry by name, in the style of timm's `create_model`.

Model modules register factories with `@register_task(...)`; `create_task("effnet-lite0")` builds one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from prepcodec.errors import InputError
from prepcodec.tasks.base import Task

# modules whose import registers tasks
_TASK_MODULES = (
    "prepcodec.tasks.classification",
    "prepcodec.tasks.detection",
    "prepcodec.tasks.pose",
    "prepcodec.tasks.segmentation",
)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    kind: str
    description: str
    factory: Callable[..., Task]


_REGISTRY: dict[str, TaskEntry] = {}
_loaded = False


def register_task(name: str, *, kind: str, description: str = "") -> Callable:
    """Decorator registering a factory `f(device="cpu", **kw) -> Task` under `name`."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        _REGISTRY[name] = TaskEntry(name, kind, description, factory)
        return factory

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in _TASK_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real missing dependency inside the module: surface it
                    raise
        _loaded = True


def list_tasks() -> list[TaskEntry]:
    """All registered tasks, sorted by name."""
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_task(name: str, device: str = "cpu", **kwargs) -> Task:
    """Build a registered task; unknown names give a one-line error listing the known ones."""
    return _entry(name).factory(device=device, **kwargs)


def task_kind(name: str) -> str:
    """The kind of a registered task ("classification", "detection", ...) without building it."""
    return _entry(name).kind


def _entry(name: str) -> TaskEntry:
    _load()
    if name not in _REGISTRY:
        raise InputError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]
