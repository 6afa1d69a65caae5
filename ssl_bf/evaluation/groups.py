"""Top-1 per class and per frequency group: many / medium / few.

Classes are ranked by how many images of each the pretraining split holds (most
first, ties by label) and cut into thirds: the top round(C/3) are `many`, the
bottom round(C/3) `few`, the rest `medium` (CIFAR-10: 3 / 4 / 3; CIFAR-100:
33 / 34 / 33). On balanced data every count ties, so the groups are by label
order and every run reports the same fields. A group's top-1 is over the test
images whose true class is in it (the long-tail literature's many / medium /
few-shot split, e.g. Liu et al. 2019's OLTR; SDCLR and BCL call them major /
moderate / minor).
"""
from __future__ import annotations

import numpy as np
import torch


def class_groups(counts) -> dict[str, list[int]]:
    """{'many': [...], 'medium': [...], 'few': [...]}: class ids by pretraining count."""
    counts = np.asarray(counts)
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    k = round(len(counts) / 3)
    return {"many": sorted(order[:k]), "medium": sorted(order[k:len(order) - k]),
            "few": sorted(order[len(order) - k:])}


def per_class_top1(pred, labels, classes: int) -> list[float | None]:
    """Percent correct among the test images of each class (None where it has none)."""
    pred, labels = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(labels))
    out = []
    for c in range(classes):
        mine = labels == c
        out.append(round(100.0 * float((pred[mine] == c).float().mean()), 4) if mine.any()
                   else None)
    return out


def group_top1(pred, labels, counts) -> dict[str, float | None]:
    pred, labels = np.asarray(pred), np.asarray(labels)
    out = {}
    for name, members in class_groups(counts).items():
        mine = np.isin(labels, members)
        out[name] = (round(100.0 * float((pred[mine] == labels[mine]).mean()), 4) if mine.any()
                     else None)
    return out


def group_fields(prefix: str, pred, labels, counts) -> dict:
    """`{prefix}_top1_groups`, `{prefix}_top1_per_class` and the `class_counts` they rest on."""
    counts = [int(c) for c in counts]
    return {f"{prefix}_top1_groups": group_top1(pred, labels, counts),
            f"{prefix}_top1_per_class": per_class_top1(pred, labels, len(counts)),
            "class_counts": counts}


def padded(counts, classes: int) -> list[int]:
    """Counts for `classes` classes (a class the pretraining split lacks counts 0)."""
    counts = [int(c) for c in counts][:classes]
    return counts + [0] * (classes - len(counts))
