"""Process-level set-up: the Accelerator, CPU threads, per-step RNG seeds."""
from __future__ import annotations

import os
import sys
import warnings

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from ssl_bf.config.schema import Config
from ssl_bf.data.counter_rng import mix_seed
from ssl_bf.data.datasets import fetch
from ssl_bf.data.images import cpu_threads
from ssl_bf.errors import UsageError
from ssl_bf.rundir.on_main import on_each_node
from ssl_bf.training.trackers import check_tracker

# accelerate >= 1.13 deprecates broadcast_buffers but itself advises keeping it
# for rank-local buffers until init_sync_buffers exists; it is deliberate here.
warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")


def make_accelerator(cfg: Config, find_unused: bool = False, trackers: bool = False) -> Accelerator:
    """The Accelerator for a run; `trackers` (pretraining only) attaches log.with."""
    precision = cfg.train.precision
    if precision == "fp16" and not torch.cuda.is_available():
        if trackers:  # training: say so; evaluation of an fp16 run on a CPU just uses fp32
            raise UsageError("train.precision: fp16 needs a GPU; use bf16 or no on a CPU")
        precision = "no"
    # broadcast_buffers=False: DDP would otherwise copy every buffer from rank 0
    # before each forward - the whole MoCo queue (65536 x 128 at ImageNet scale)
    # included. The queue is identical on all ranks by construction (gathered
    # keys); BN running stats stay per-rank, as with SyncBN off in MoCo's code.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False, find_unused_parameters=find_unused)
    # cpu=True on a machine without CUDA: only then does accelerate turn a
    # multi-process launch into gloo DDP (else every process runs alone).
    return Accelerator(mixed_precision=precision, kwargs_handlers=[ddp],
                       cpu=not torch.cuda.is_available(),
                       log_with=check_tracker(cfg) if trackers else None,
                       project_dir=cfg.train.output_dir if trackers else None)


def cpu_has_native_bf16() -> bool | None:
    """avx512_bf16 or AMX in /proc/cpuinfo (None where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_slow_bf16(cfg: Config, accelerator: Accelerator) -> None:
    # Without native bf16 a CPU emulates it, far slower than fp32 (benchmarks/BENCHMARKS.md
    # §1, "bf16 (EMULATED on this CPU)").
    if (cfg.train.precision == "bf16" and accelerator.device.type == "cpu"
            and cpu_has_native_bf16() is False and accelerator.is_main_process):
        print("warning: this CPU has no native bf16 (no avx512_bf16/amx_bf16): bf16 autocast is "
              "emulated and much slower than fp32 here; consider train.precision=no",
              file=sys.stderr, flush=True)


def local_processes() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def set_cuda_flags(cfg: Config) -> None:
    """train.cudnn_benchmark and train.tf32 (schema.py says why); nothing on a CPU."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
        torch.backends.cudnn.allow_tf32 = cfg.train.tf32


def set_threads(cfg: Config, accelerator: Accelerator) -> int:
    """Every core this process may use: `accelerate launch` sets OMP_NUM_THREADS=1,
    which would leave a single CPU process on one core."""
    if cfg.train.threads is not None:
        n = cfg.train.threads
    elif accelerator.device.type == "cpu":
        n = max(1, cpu_threads() // local_processes())
    else:
        n = max(1, min(8, cpu_threads() // local_processes()))
    torch.set_num_threads(n)
    return n


def seed_step(seed: int, step: int, rank: int) -> None:
    """Re-derive the model's RNG (dropout, shuffle-BN permutations) for this step.

    Nothing random depends on history, so a resumed run draws exactly what the
    uninterrupted one did - no RNG state has to be saved or unpickled.
    """
    torch.manual_seed(mix_seed(seed, step, rank) & 0x7FFFFFFFFFFFFFFF)


def fetch_once(cfg: Config, accelerator) -> None:
    """data.download for a launch of any size: the main process fetches while the others
    wait (then the first process of each other node, for node-local roots); nobody opens the
    data before that."""
    if cfg.data.download:
        on_each_node(accelerator, lambda: fetch(cfg.data))


def prepare_process(cfg: Config, accelerator: Accelerator, training: bool = False) -> None:
    """What every process does before it builds anything: its threads, the CUDA flags, the
    slow-bf16 warning when it will train, and data.download (once per launch)."""
    set_threads(cfg, accelerator)
    set_cuda_flags(cfg)
    if training:
        warn_slow_bf16(cfg, accelerator)
    fetch_once(cfg, accelerator)
