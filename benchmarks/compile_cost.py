"""train.compile=true against eager on this machine: the compile time (the first compiled
step) and the step time after it, side by side (alternated rounds, medians).

    python benchmarks/compile_cost.py      # MoCo-v3, quarter-width ResNet-18, batch 128
"""
import statistics
import sys
import time

import timing  # benchmarks/ is sys.path[0]; it also puts the repo root on sys.path
import torch
from throughput import SslStep

from ssl_bf.config import load_config
from ssl_bf.training.runtime import make_accelerator


def main() -> None:
    cfg = load_config(["recipe=mocov3", "model.width=0.25", "train.batch_size=128",
                       "knn.every=0", *sys.argv[1:]])
    acc = make_accelerator(cfg)
    x = [torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
         for _ in range(2)]
    eager, compiled = SslStep(cfg, acc, set(), *x), SslStep(cfg, acc, set(), *x)
    compiled.compile()
    eager()
    start = time.time()
    compiled()  # compiles
    first = time.time() - start
    te, tc = [], []
    for _ in range(6):
        te.append(timing.seconds(eager, acc.device))
        tc.append(timing.seconds(compiled, acc.device))
    gain = statistics.median(te) - statistics.median(tc)
    print({"device": timing.describe_device(acc.device), "compile_first_step_s": round(first, 1),
           "eager_ms": round(1000 * statistics.median(te)),
           "compiled_ms": round(1000 * statistics.median(tc)),
           "compiled_over_eager": round(statistics.median([c / e for c, e in zip(tc, te)]), 3),
           "steps_to_pay_off": round(first / gain) if gain > 0 else None})


if __name__ == "__main__":
    main()
