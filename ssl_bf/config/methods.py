"""The registry of method names, and what the rest of the toolkit knows about each method
without building it: the config's schema and checks, the views and the step plan read it
here; ssl_bf/methods builds the modules (and checks at import that it builds exactly these).
docs/design.md, "Adding a method", lists what a new entry needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MethodTraits:
    title: str  # for messages: "MoCo-v2"
    # Which lightly transform makes the views: MoCoV2Transform (two alike) or BYOL's
    # asymmetric pair (data/transforms.py).
    views: Literal["mocov2", "byol"]
    # Negatives come from a queue of past keys (method.queue_size; bf.queue applies).
    queue: bool
    # One process splits its batch into method.bn_splits BatchNorm groups, the official CIFAR
    # demo's stand-in for shuffle-BN across GPUs (models/split_bn.py).
    split_bn: bool
    # method.proj_bn may add BatchNorm to the projector (MoCo-v3's always has it).
    optional_head_bn: bool


METHODS: dict[str, MethodTraits] = {
    "mocov2": MethodTraits("MoCo-v2", views="mocov2", queue=True, split_bn=True,
                           optional_head_bn=True),
    "mocov3": MethodTraits("MoCo-v3", views="byol", queue=False, split_bn=False,
                           optional_head_bn=False),
}

MethodName = Literal[tuple(METHODS)]  # the config's method.name takes exactly these


def traits(name: str) -> MethodTraits:
    return METHODS[name]
