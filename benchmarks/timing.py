"""Timing helpers shared by the speed benchmarks: device, clocks, GEMM peak, FLOP and op counts.

Every benchmark here times work on one device the same way: synchronise (CUDA
runs asynchronously, so a wall clock around an unsynchronised step measures
only the launch), run, synchronise, read `time.perf_counter`. Medians, not
means: on a shared 2-core box a single preempted repeat would move a mean.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run by path, as ssl_bf/pretrain.py is
    sys.path.insert(0, REPO_ROOT)


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of fn, with the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                      if line.startswith("model name")), "cpu")
        native = "avx512_bf16" in info or "amx_bf16" in info
        flags = "native bf16" if native else "no native bf16 (bf16 emulated)"
    except OSError:
        model = "cpu"
    return f"{model}, {torch.get_num_threads()} threads, {flags}".rstrip(", ")


def set_tf32(enabled: bool) -> None:
    """One setting for convolutions and matmuls, so the fp32 GEMM peak that MFU
    divides by is in the arithmetic the model's FLOPs actually run in (PyTorch's
    defaults differ: cuDNN convolutions use TF32, matmuls do not)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def gemm_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict:
    """Best FLOP/s of a square matmul in `dtype`, growing the size until it stops helping.

    Sizes grow while one product takes under half a second, so a CPU without
    native bf16 (where a 2048^3 bf16 product takes over a minute) is not stuck.
    """
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (256, 512, 1024, 2048, 3072)
    best = {"flops_per_s": 0.0, "n": 0, "dtype": str(dtype).replace("torch.", "")}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        first = seconds(lambda: torch.mm(a, b), device)  # warm-up (and the size guard)
        times = [first] if first > 0.5 else [seconds(lambda: torch.mm(a, b), device)
                                              for _ in range(repeats)]
        rate = 2 * n ** 3 / min(times)
        if rate > best["flops_per_s"]:
            best.update(flops_per_s=rate, n=n)
        if first > 0.5:
            break
    return best


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention; forward and backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


class OpCounter(TorchDispatchMode):
    """Counts ATen ops dispatched: on a GPU each is at least one kernel launch."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    counter = OpCounter()
    with counter:
        fn()
    return counter.ops


def fmt_rate(flops_per_s: float) -> str:
    return (f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12
            else f"{flops_per_s / 1e9:.1f} GFLOP/s")


# --- alternating runs of several steps -----------------------------------------------

@dataclass
class Variant:
    name: str
    step: Callable[[], None]
    samples: int  # samples (image pairs) per step
    compile: Callable[[], None] = lambda: None  # swaps in torch.compile'd modules
    wants_compile: bool = False
    flops: int = 0
    times: list = field(default_factory=list)


def count_and_warm(variants: list[Variant], args, device) -> None:
    """The FLOP count runs one real step of each (uncompiled) variant: it is warm-up 1."""
    for v in variants:
        v.flops = count_flops(v.step)
        if args.compile or v.wants_compile:
            v.compile()
    for _ in range(args.warmup):  # compiled variants compile here
        for v in variants:
            seconds(v.step, device)


def run_rounds(variants: list[Variant], args, device) -> None:
    """Round r times each variant once; the order reverses every round (ABC CBA ...)."""
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            t = seconds(lambda: [v.step() for _ in range(args.steps_per_sample)], device)
            v.times.append(t / args.steps_per_sample)
        if args.verbose:
            print(f"round {r + 1}/{args.repeats}: " + ", ".join(
                f"{v.name} {v.times[-1] * 1e3:.0f} ms" for v in variants), flush=True)


def paired_ratio(num: Variant, den: Variant) -> float:
    """Median over rounds of num's step time / den's, timed side by side."""
    return median([a / b for a, b in zip(num.times, den.times)])


# Op-name fragments -> what the time went on; the first match wins.
CATEGORIES = (("conv / matmul (the FLOPs)", ("conv", "mm", "linear", "bmm", "attention")),
              ("batch norm", ("batch_norm",)),
              ("copies (copy_/cat/clone/index)", ("copy_", "cat", "clone", "index", "contiguous")),
              ("elementwise / reductions", ("add", "mul", "relu", "clamp", "threshold", "div",
                                            "sub", "norm", "sum", "mean", "exp", "log", "softmax",
                                            "lerp", "sqrt", "where", "fill", "zero", "isfinite",
                                            "gelu")))


def by_category(events, steps: int) -> dict:
    """Self CPU ms per step, by kind of op (leaf ATen ops only)."""
    out = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for e in events:
        if not e.key.startswith("aten::"):
            continue
        name = next((c for c, frags in CATEGORIES if any(f in e.key for f in frags)), "other")
        out[name] += e.self_cpu_time_total / steps / 1e3
    return out


def profile(variants: list[Variant], args, device) -> None:
    """torch.profiler over a few steps of each variant: time per phase and the top ops."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for v in variants:
        with torch_profile(activities=activities) as prof:
            for _ in range(args.profile_steps):
                v.step()
            sync(device)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / args.profile_steps / 1e3
        phases = {e.key[3:]: e.cpu_time_total / args.profile_steps / 1e3
                  for e in events if e.key.startswith("## ")}
        print(f"\n### profile: {v.name} ({args.profile_steps} steps; CPU ms per step, self total "
              f"{total:.0f})\nphases: " + ", ".join(f"{k} {ms:.1f}" for k, ms in phases.items()))
        cats = by_category(events, args.profile_steps)
        print("self CPU by kind: " + ", ".join(f"{k} {ms:.1f} ({100 * ms / total:.0f}%)"
                                                 for k, ms in cats.items()))
        print(events.table(sort_by=sort, row_limit=args.profile_rows))
        if args.trace:
            prof.export_chrome_trace(f"{args.trace}.{v.name.replace(':', '_')}.json")
