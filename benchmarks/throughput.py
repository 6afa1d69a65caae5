"""Samples/s of one pretraining step: ssl_bf's methods against the lightly-style loop.

One step = what the training loop does per batch, on synthetic inputs already on
the device (2 views of `--batch` 32-px images): forward, loss, backward,
optimizer step, key-encoder EMA. ssl_bf's step IS the engine's
(ssl_bf.training.step.OptimizerStep, built from the recipe as the engine builds it:
build_method, build_optimizer, accelerate's prepare; seeded and scheduled as
Trainer._train_step). The lightly step is benchmarks/lightly_loop.py's loop body
(its LightlyMoCo, NTXentLoss with a 4096-key bank, SGD). Variants are timed in
alternation (ABC..CBA.., so a drift in machine load hits all of them alike);
figures are medians over repeats.

    python benchmarks/throughput.py --width 0.25 --repeats 15        # CPU, fp32
    python benchmarks/throughput.py --methods mocov3,mocov3+lightly_lars+check_each_step --profile

Variant names: `lightly`, `backbone` (the backbone's own forward+backward over
both views, no heads, loss or update: the reference for MFU), or a recipe
(mocov2, mocov3, mocov2_bf, mocov3_bf) written RECIPE[:key=value...][+patch...]:
overrides for that variant only (`mocov2:train.channels_last=true`) and patches
that put back an earlier version of part of ssl_bf's step (see PATCHES), for ratios
measured side by side.
--channels-last / --compile apply to every variant, the lightly loop included; without
--channels-last ssl_bf runs as configured (train.channels_last, true by default) and the
lightly loop in NCHW, as lightly's example does.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile

import timing  # benchmarks/ is sys.path[0]; it also puts the repo root on sys.path
import torch
from lightly.loss import NTXentLoss
from lightly.models.utils import update_momentum
from lightly_loop import LightlyMoCo
from timing import Variant, count_and_warm, paired_ratio, run_rounds
from torch.autograd.profiler import record_function

from ssl_bf.config import load_config
from ssl_bf.config.derived import scaled_lr
from ssl_bf.config.schema import Config, ModelConfig
from ssl_bf.methods import build_method
from ssl_bf.models.backbones import build_backbone
from ssl_bf.training.optim import build_optimizer, param_groups
from ssl_bf.training.runtime import make_accelerator, seed_step
from ssl_bf.training.schedules import lr_at, momentum_at
from ssl_bf.training.step import OptimizerStep
from ssl_bf.training.step_stats import StepStats

DEFAULT_METHODS = "lightly,mocov2,mocov2_bf,mocov3,mocov3_bf,backbone"


# --- earlier versions of ssl_bf's step, for side-by-side ratios ----------------------

def lightly_lars_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """build_optimizer as it was before training/lars.py: lightly's LARS, which compares
    each tensor's norms on the host (2 syncs a tensor); SGD and AdamW as built today."""
    from lightly.utils.lars import LARS as LightlyLARS

    t = cfg.train
    if t.optimizer != "lars":
        return build_optimizer(cfg, model)
    return LightlyLARS(param_groups(cfg, model), lr=scaled_lr(cfg), momentum=t.sgd_momentum,
                       weight_decay=t.weight_decay, trust_coefficient=t.lars_eta)


PATCHES = {
    "lightly_lars": "lightly's LARS (host syncs per tensor), as before training/lars.py",
    "check_each_step": "read the finiteness and stop flags every step (train.check_every=1)",
}


# --- the steps ---------------------------------------------------------------------

def ssl_config(recipe: str, overrides: list[str], args) -> Config:
    model = [f"model.backbone={args.backbone}", f"model.width={args.width}"]
    if args.backbone.startswith("vit"):
        model = [f"model.backbone={args.backbone}", f"model.vit_depth={args.vit_depth}"]
    return load_config([f"recipe={recipe}", *model, f"train.batch_size={args.batch}",
                        f"train.precision={args.precision}",
                        # ssl_bf's rows keep the recipe's memory format (channels_last by
                        # default) unless --channels-last forces it on every variant
                        *(["train.channels_last=true"] if args.channels_last else []),
                        f"train.compile={str(args.compile).lower()}", "knn.every=0",
                        f"train.output_dir={tempfile.gettempdir()}/ssl_bf_throughput",
                        *args.set, *overrides])


class SslStep:
    """The engine's optimizer step (ssl_bf.training.step.OptimizerStep) on fixed inputs,
    seeded and scheduled as Trainer._train_step does."""

    def __init__(self, cfg: Config, acc, patches: set[str], x1, x2):
        self.cfg, self.acc = cfg, acc
        torch.manual_seed(cfg.train.seed)
        method = build_method(cfg, acc.num_processes)
        if cfg.train.channels_last:
            method.to(memory_format=torch.channels_last)
        make = lightly_lars_optimizer if "lightly_lars" in patches else build_optimizer
        model, optimizer = acc.prepare(method, make(cfg, method))
        trainable = [p for p in method.parameters() if p.requires_grad]
        self.step = OptimizerStep(model, method, acc, optimizer, StepStats(acc), trainable)
        self.check_every = 1 if "check_each_step" in patches else cfg.train.check_every
        self.x1, self.x2 = x1, x2
        self.i, self.total = 0, 10_000

    def compile(self) -> None:
        self.step.model = torch.compile(self.step.model)

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """As PretrainInput.views: channels_last inputs when the config asks (a no-op if they
        are)."""
        if not self.cfg.train.channels_last:
            return self.x1, self.x2
        return tuple(x.contiguous(memory_format=torch.channels_last) for x in (self.x1, self.x2))

    def __call__(self) -> None:
        cfg, i = self.cfg, self.i % self.total
        seed_step(cfg.train.seed, self.i, self.acc.process_index)
        self.step([self.inputs()], 1, lr=lr_at(i, self.total, 0, scaled_lr(cfg)),
                  momentum=momentum_at(i + 1, self.total, cfg.method.momentum,
                                       cfg.method.momentum_end),
                  step=self.i + 1, check=(self.i + 1) % self.check_every == 0)
        self.i += 1


def backbone_config(args) -> ModelConfig:
    if args.backbone.startswith("vit"):
        return ModelConfig(backbone=args.backbone, vit_depth=args.vit_depth)
    return ModelConfig(backbone=args.backbone, width=args.width)


def autocast(device: torch.device, precision: str):
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class LightlyStep:
    """The loop body of benchmarks/lightly_loop.py (train()), its settings unchanged."""

    def __init__(self, args, device, x1, x2):
        torch.manual_seed(0)
        self.model = LightlyMoCo(build_backbone(backbone_config(args), 32)).to(device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # As lightly_loop.py (and lightly's example): the loss, with its bank, is not
        # moved to the device; on a GPU the bank is copied over each step.
        self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.06 * args.batch / 256,
                                         momentum=0.9, weight_decay=5e-4)
        self.query, self.key = self.model, self.model.forward_momentum
        self.device, self.precision, self.x1, self.x2 = device, args.precision, x1, x2

    def compile(self) -> None:
        self.query, self.key = torch.compile(self.model), torch.compile(self.model.forward_momentum)

    def __call__(self) -> None:
        m = self.model
        with record_function("## ema"):
            update_momentum(m.backbone, m.backbone_momentum, m=0.996)  # epoch-0 cosine value
            update_momentum(m.projection_head, m.projection_head_momentum, m=0.996)
        with record_function("## forward"), autocast(self.device, self.precision):
            loss = self.criterion(self.query(self.x1), self.key(self.x2))
        with record_function("## backward"):
            loss.backward()
        with record_function("## optimizer"):
            self.optimizer.step()
        self.optimizer.zero_grad()


class BackboneStep:
    """The backbone alone, forward and backward over both views: no heads, loss or update."""

    def __init__(self, args, device, x1, x2):
        torch.manual_seed(0)
        self.net = build_backbone(backbone_config(args), 32).to(device)
        if args.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.run = self.net
        self.x = torch.cat([x1, x2])
        self.device, self.precision = device, args.precision

    def compile(self) -> None:
        self.run = torch.compile(self.net)

    def __call__(self) -> None:
        with record_function("## forward"), autocast(self.device, self.precision):
            y = self.run(self.x)
        with record_function("## backward"):
            y.float().square().mean().backward()
        self.net.zero_grad(set_to_none=True)


def parse_spec(spec: str) -> tuple[str, list[str], set[str]]:
    """'mocov2:method.bn_splits=1+check_each_step'
    -> ('mocov2', ['method.bn_splits=1'], {'check_each_step'})."""
    head, *patches = spec.split("+")
    recipe, *overrides = head.split(":")
    unknown = set(patches) - set(PATCHES)
    if unknown:
        raise SystemExit(f"error: unknown patch {sorted(unknown)}; known: {sorted(PATCHES)}")
    return recipe, overrides, set(patches)


def build_variants(args, device, acc=None, per_process: int | None = None) -> list[Variant]:
    """One Variant per name in args.methods; inputs of `per_process` (default args.batch) pairs."""
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    n = per_process or args.batch
    x1, x2 = (torch.randn(n, 3, 32, 32, device=device).contiguous(memory_format=fmt)
              for _ in range(2))
    specs = [s for s in args.methods.split(",") if s]
    variants = []
    for spec in specs:
        recipe, overrides, patches = parse_spec(spec)
        if recipe == "lightly":
            step = LightlyStep(args, device, x1, x2)
        elif recipe == "backbone":
            step = BackboneStep(args, device, x1, x2)
        else:
            cfg = ssl_config(recipe, overrides, args)
            acc = acc or make_accelerator(cfg)  # one per process, as in the engine
            step = SslStep(cfg, acc, patches, x1, x2)
        wants = isinstance(step, SslStep) and step.cfg.train.compile
        variants.append(Variant(spec, step, n, step.compile, wants_compile=wants))
    return variants


# --- measuring ---------------------------------------------------------------------

def bf_costs(variants: list[Variant]) -> dict:
    by_name = {v.name: v for v in variants}
    return {f"{bf}/{plain}": paired_ratio(by_name[bf], by_name[plain])
            for bf, plain in (("mocov2_bf", "mocov2"), ("mocov3_bf", "mocov3"))
            if bf in by_name and plain in by_name}


def summarise(variants: list[Variant], peak: float) -> list[dict]:
    ref = next((v for v in variants if v.name == "lightly"), None)
    rows = []
    for v in variants:
        t = timing.median(v.times)
        ratio = paired_ratio(ref, v) if ref and v.name not in ("lightly", "backbone") else None
        rows.append({"variant": v.name, "step_s": t, "samples_per_s": v.samples / t,
                     "vs_lightly": ratio,
                     # the same ratio per FLOP: MoCo-v3 does ~2x MoCo-v2's work per sample
                     "vs_lightly_per_flop": ratio * v.flops / ref.flops if ratio else None,
                     "gflop_per_step": v.flops / 1e9, "achieved_flops_per_s": v.flops / t,
                     "mfu": v.flops / t / peak if peak else None,
                     "min_s": min(v.times), "max_s": max(v.times), "times_s": v.times})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"device: {meta['device']}; precision {meta['precision']}; batch {meta['batch']} "
             f"(x2 views); backbone {meta['backbone_desc']}; "
             f"channels_last forced on all {meta['channels_last']}; "
             f"compile {meta['compile']}; {meta['repeats']} repeats (median)",
             f"GEMM peak ({meta['peak']['dtype']}, n={meta['peak']['n']}): "
             f"{timing.fmt_rate(meta['peak']['flops_per_s'])} (best of start/end of run)", "",
             "| variant | samples/s | step ms (min-max) | ours/lightly | per FLOP | GFLOP/step | "
             "achieved | MFU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = ("-" if r["vs_lightly"] is None
                 else f"{r['vs_lightly']:.2f}x | {r['vs_lightly_per_flop']:.2f}x")
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        ratio = ratio if r["vs_lightly"] is not None else "- | -"
        lines.append(f"| {r['variant']} | {r['samples_per_s']:.1f} | {1e3 * r['step_s']:.0f} "
                     f"({1e3 * r['min_s']:.0f}-{1e3 * r['max_s']:.0f}) | {ratio} | "
                     f"{r['gflop_per_step']:.1f} | {timing.fmt_rate(r['achieved_flops_per_s'])} | "
                     f"{mfu} |")
    if meta["emulated_bf16"]:
        lines.append("\nbf16 is EMULATED on this CPU (no avx512_bf16/AMX): far slower than fp32 "
                     "and not representative of bf16 hardware; a bf16 torch.mm here is even "
                     "slower than the model's own bf16 ops, so MFU against that GEMM peak is not "
                     "meaningful.")
    elif any(r["mfu"] and r["mfu"] > 1 for r in rows):
        lines.append("\nMFU above 100%: this dtype's GEMM peak is below what its convolutions "
                     "reach here.")
    for name, ratio in meta["bf_cost"].items():
        lines.append(f"\nBatchFormer cost, step time {name}: {ratio:.3f} (median of paired rounds)")
    return "\n".join(lines)


def emulated_bf16(device: torch.device, precision: str) -> bool:
    from ssl_bf.training.runtime import cpu_has_native_bf16

    return precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated variants (see above); patches: " +
                        "; ".join(f"+{k}: {v}" for k, v in PATCHES.items()))
    p.add_argument("--backbone", default="resnet18",
                   choices=["resnet18", "resnet50", "vit_tiny", "vit_small"])
    p.add_argument("--width", type=float, default=1.0,
                   help="ResNet width multiplier (0.25 on CPUs)")
    p.add_argument("--vit-depth", type=int, default=6,
                   help="ViT blocks (the earlier ViT figures: 6)")
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per variant after the FLOP-count step")
    p.add_argument("--steps-per-sample", type=int, default=None,
                   help="steps per timed sample (CPU 1, GPU 10)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA fp32: TF32 convolutions and matmuls (and peak)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--set", action="append", default=[], help="key=value for every ssl_bf variant")
    p.add_argument("--profile", action="store_true", help="profile instead of timing")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--profile-rows", type=int, default=20)
    p.add_argument("--trace", default=None, help="profile: chrome traces to TRACE.<variant>.json")
    p.add_argument("--json", default="benchmarks/results/throughput.json")
    p.add_argument("--device", default=None)
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    device = timing.pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        timing.set_tf32(args.tf32)
    args.steps_per_sample = args.steps_per_sample or (10 if device.type == "cuda" else 1)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    variants = build_variants(args, device)
    if args.profile:
        count_and_warm(variants, args, device)
        return timing.profile(variants, args, device)
    peak_start = timing.gemm_peak(device, dtype)
    count_and_warm(variants, args, device)
    run_rounds(variants, args, device)
    peak_end = timing.gemm_peak(device, dtype)
    peak = max(peak_start, peak_end, key=lambda p: p["flops_per_s"])
    rows = summarise(variants, peak["flops_per_s"])
    desc = (f"{args.backbone} depth {args.vit_depth}" if args.backbone.startswith("vit")
            else f"{args.backbone} width {args.width}")
    meta = {"device": timing.describe_device(device), "precision": args.precision,
            "batch": args.batch, "backbone_desc": desc, "channels_last": args.channels_last,
            "compile": args.compile, "repeats": args.repeats, "warmup": args.warmup,
            "steps_per_sample": args.steps_per_sample, "tf32": args.tf32,
            "peak": peak, "peaks": [peak_start, peak_end], "bf_cost": bf_costs(variants),
            "emulated_bf16": emulated_bf16(device, args.precision),
            "torch": torch.__version__}
    print(markdown(rows, meta))
    if args.json:
        import os
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        print(f"\nwrote {args.json}")
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
