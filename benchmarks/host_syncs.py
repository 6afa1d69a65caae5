"""Host syncs per training step, counted on a CPU during real steps of a real run.

On a GPU a host sync is a call that reads a value back (`.item()`, a tensor in an `if`,
`.tolist()`, `nonzero`, `.cpu()`, `.numpy()`, `int()` / `float()` of a tensor): the host
waits until the GPU's queue is empty. Run on a CPU they cost nothing, but they are the same
calls, so counting them here counts the stalls a GPU would see. The methods are wrapped
while ssl_bf/pretrain.py trains; calls are counted inside the optimizer step
(ssl_bf.training.step.OptimizerStep.__call__) and inside the batched views
(ssl_bf.data.batched_views.BatchedViews.__call__); reads of the loader's own CPU tensors
(Trainer._views) are counted apart.

    python benchmarks/host_syncs.py recipe=mocov3_bf              # this checkout
    SSL_BF_REPO=/path/to/other/checkout python benchmarks/host_syncs.py recipe=mocov3_bf

Prints one JSON line: steps, syncs counted in the step and in the views, per step.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections import Counter

REPO = os.environ.get("SSL_BF_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

READS = ("item", "__bool__", "tolist", "nonzero", "cpu", "numpy", "__int__", "__float__")
counts: Counter = Counter()
where: list[str] = []  # the region being counted, innermost last


def counting(name: str):
    original = getattr(torch.Tensor, name)

    def wrapped(self, *args, **kwargs):
        if where:
            counts[(where[-1], name)] += 1
        return original(self, *args, **kwargs)

    return wrapped


def region(cls, method: str, label: str) -> None:
    call = getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        where.append(label)
        try:
            return call(self, *args, **kwargs)
        finally:
            where.pop()

    setattr(cls, method, wrapped)


def main() -> None:
    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    nonzero = torch.nonzero

    def torch_nonzero(*args, **kwargs):
        if where:
            counts[(where[-1], "torch.nonzero")] += 1
        return nonzero(*args, **kwargs)

    torch.nonzero = torch_nonzero
    from ssl_bf.data import batched_ops
    from ssl_bf.data.batched_views import BatchedViews
    from ssl_bf.pretrain import main as pretrain
    from ssl_bf.training.engine import Trainer
    from ssl_bf.training.step import OptimizerStep

    batched_ops.MASKED_ON_CPU = True  # count the path a GPU takes (where the checkout has it)
    region(OptimizerStep, "__call__", "step")
    region(BatchedViews, "__call__", "views")
    # the loader's own tensors (the epoch, the replaced-image marks) live on the CPU on any
    # machine: reading them costs nothing; counted apart
    region(Trainer, "_views", "loader")
    out = tempfile.mkdtemp(prefix="host_syncs_")
    argv = [*sys.argv[1:], f"train.output_dir={out}", "knn.every=0", "aug.batched=true"]
    with contextlib.redirect_stdout(sys.stderr):
        pretrain(argv)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps = max(r["step"] for r in rows)
    per = {label: sum(n for (lab, _), n in counts.items() if lab == label) / steps
           for label in ("step", "views", "loader")}
    detail = {f"{lab}.{name}": n for (lab, name), n in sorted(counts.items())}
    print(json.dumps({"repo": REPO, "argv": sys.argv[1:], "steps": steps,
                      "step_syncs_per_step": round(per["step"], 2),
                      "view_syncs_per_step": round(per["views"], 2),
                      "loader_cpu_reads_per_step": round(per["loader"], 2), "counts": detail}))


if __name__ == "__main__":
    main()
