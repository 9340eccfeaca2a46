"""ImageNet-1k class names by index (the order of the sorted wnids, as every ImageNet classifier uses).

`imagenet_classes.json` is torchvision's list (`ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`, offline),
shipped as data so that naming a class does not import torchvision; a test checks the two agree.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_JSON = Path(__file__).with_name("imagenet_classes.json")


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id."""
    names = tuple(json.loads(_JSON.read_text(encoding="utf-8")))
    if len(names) != 1000:
        raise RuntimeError(f"{_JSON} holds {len(names)} names, expected 1000")
    return names


def class_name(index: int) -> str:
    """Name of one ImageNet-1k class."""
    return class_names()[index]
