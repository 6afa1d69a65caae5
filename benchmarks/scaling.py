"""Step time against batch size and process count, and a GPU projection from measured FLOPs.

1. Batch sweep: one process, the ssl_bf step of benchmarks/throughput.py at each
   batch size, sizes alternating within every round.
2. Processes: the same global batch on 1 and 2 processes (per-process batch
   halves). Two processes run under `accelerate launch --multi_gpu
   --num_processes 2` (gloo DDP on a CPU, shuffle-BN across processes, keys
   gathered) with cores split between them, as ssl_bf.training.runtime.set_threads does;
   one process runs plain `python` on every core. Launches alternate 1, 2, 1, 2...
3. Projection (NOT a measurement) for 1 and N GPUs: measured FLOPs and ATen op
   count per step, an assumed achievable GPU throughput, per-op launch cost and
   all-reduce bandwidth (all printed with the result):
       step = max(FLOPs / N / achievable, ops * launch) + 2 (N-1)/N * grad bytes / bus bandwidth

    python benchmarks/scaling.py --width 0.25 --batches 64,128,256,512 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import throughput
import timing  # puts the repo root on sys.path
import torch


def step_args(args, batch: int, extra: list[str] = ()) -> argparse.Namespace:
    argv = ["--methods", args.method, "--width", str(args.width), "--batch", str(batch),
            "--backbone", args.backbone, "--precision", args.precision, "--json", "", *extra]
    for kv in args.set:
        argv += ["--set", kv]
    targs = throughput.parse_args(argv)
    targs.steps_per_sample = args.steps_per_sample
    return targs


def batch_sweep(args, device) -> list[dict]:
    variants = []
    for b in args.batches:
        v = throughput.build_variants(step_args(args, b), device)[0]
        v.name = f"batch {b}"
        variants.append(v)
    targs = step_args(args, args.batches[0], ["--repeats", str(args.repeats), "--warmup", "1"])
    targs.steps_per_sample = args.steps_per_sample
    timing.count_and_warm(variants, targs, device)
    timing.run_rounds(variants, targs, device)
    return [{"batch": v.samples, "step_s": timing.median(v.times), "times_s": v.times,
             "samples_per_s": v.samples / timing.median(v.times), "gflop_per_step": v.flops / 1e9}
            for v in variants]


# --- process count -----------------------------------------------------------------

def worker(args) -> None:
    """One process of a 1- or 2-process run: time the step, rank 0 prints a RESULT line."""
    from ssl_bf.training.runtime import make_accelerator

    targs = step_args(args, args.global_batch)
    cfg = throughput.ssl_config(args.method, [], targs)
    acc = make_accelerator(cfg)
    torch.set_num_threads(args.threads or max(1, timing.cpu_count() // acc.num_processes))
    per = args.global_batch // acc.num_processes
    v = throughput.build_variants(targs, acc.device, acc=acc, per_process=per)[0]
    for _ in range(args.warmup):
        v.step()
    times = []
    for _ in range(args.repeats):
        acc.wait_for_everyone()  # every rank starts the sample together
        times.append(timing.seconds(lambda: [v.step() for _ in range(args.steps_per_sample)],
                                    acc.device) / args.steps_per_sample)
    if acc.is_main_process:
        print("RESULT " + json.dumps({"processes": acc.num_processes, "per_process_batch": per,
                                      "threads": torch.get_num_threads(), "times_s": times}),
              flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, processes: int) -> dict:
    me = [os.path.abspath(__file__), "--worker", "--global-batch", str(args.global_batch),
          "--method", args.method, "--width", str(args.width), "--backbone", args.backbone,
          "--precision", args.precision, "--repeats", str(args.repeats),
          "--warmup", str(args.warmup), "--steps-per-sample", str(args.steps_per_sample)]
    if args.threads:
        me += ["--threads", str(args.threads)]
    for kv in args.set:
        me += ["--set", kv]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:  # docs/design.md: --cpu --num_processes 2 would silently run one process
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", args.precision, "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *me]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=timing.REPO_ROOT)
    line = next((out_line for out_line in proc.stdout.splitlines()
                 if out_line.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"error: {processes}-process run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def process_sweep(args) -> list[dict]:
    runs = {p: [] for p in args.procs}
    for _ in range(args.launches):
        for p in args.procs:
            runs[p] += launch(args, p)["times_s"]
    return [{"processes": p, "global_batch": args.global_batch,
             "per_process_batch": args.global_batch // p,
             "step_s": timing.median(t), "samples_per_s": args.global_batch / timing.median(t),
             "times_s": t} for p, t in runs.items()]


# --- projection ----------------------------------------------------------------------

def projection(args, device) -> dict:
    """FLOPs, ops and gradient bytes of one step at the global batch, then the model above."""
    v = throughput.build_variants(step_args(args, args.global_batch), device)[0]
    flops = timing.count_flops(v.step)
    ops = timing.count_ops(v.step)
    module = getattr(v.step, "method", None) or getattr(v.step, "model", None) or v.step.net
    grad_bytes = 4 * sum(p.numel() for p in module.parameters() if p.requires_grad)
    achievable = args.gpu_peak_tflops * 1e12 * args.gpu_efficiency
    rows = []
    for n in args.gpus:
        compute = flops / n / achievable
        launch = ops * args.launch_us * 1e-6
        comm = 0.0 if n == 1 else 2 * (n - 1) / n * grad_bytes / (args.busbw_gbs * 1e9)
        step = max(compute, launch) + comm
        rows.append({"gpus": n, "compute_s": compute, "launch_s": launch, "allreduce_s": comm,
                     "step_s": step, "samples_per_s": args.global_batch / step,
                     "bound": "launch" if launch > compute else "compute"})
    return {"gflop_per_step": flops / 1e9, "aten_ops_per_step": ops,
            "grad_mbytes": grad_bytes / 1e6,
            "assumptions": {"gpu_peak_tflops": args.gpu_peak_tflops,
                            "efficiency": args.gpu_efficiency,
                            "launch_us_per_op": args.launch_us,
                            "allreduce_busbw_gbs": args.busbw_gbs,
                            "overlap": "none (comm added to compute: conservative)"},
            "rows": rows}


def report(sweep, procs, proj, args) -> str:
    lines = [f"{args.method}, {args.backbone} width {args.width}, precision {args.precision}", "",
             "| batch | step ms | samples/s | GFLOP/step |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {1e3 * r['step_s']:.0f} | {r['samples_per_s']:.1f} | "
              f"{r['gflop_per_step']:.1f} |" for r in sweep]
    if procs:
        lines += ["", f"global batch {args.global_batch}",
                  "| processes | per-process batch | step ms | samples/s |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {r['processes']} | {r['per_process_batch']} | {1e3 * r['step_s']:.0f} | "
                  f"{r['samples_per_s']:.1f} |" for r in procs]
    if proj:
        a = proj["assumptions"]
        lines += ["", f"PROJECTION (not measured), global batch {args.global_batch}: "
                      f"{proj['gflop_per_step']:.1f} GFLOP and "
                      f"{proj['aten_ops_per_step']} ATen ops per step, "
                      f"{proj['grad_mbytes']:.1f} MB of fp32 gradients; "
                      f"assumed {a['gpu_peak_tflops']} TFLOP/s "
                      f"peak x {a['efficiency']} achievable, {a['launch_us_per_op']} us per op, "
                      f"all-reduce bus bandwidth {a['allreduce_busbw_gbs']} GB/s, no overlap",
                  "| GPUs | compute ms | launch ms | all-reduce ms | step ms | samples/s | bound |",
                  "|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r['gpus']} | {1e3 * r['compute_s']:.2f} | {1e3 * r['launch_s']:.2f} | "
                  f"{1e3 * r['allreduce_s']:.2f} | {1e3 * r['step_s']:.2f} | "
                  f"{r['samples_per_s']:.0f} | "
                  f"{r['bound']} |" for r in proj["rows"]]
    return "\n".join(lines)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="mocov2", help="one variant name, as in throughput.py")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--batches", type=ints, default=[64, 128, 256, 512])
    p.add_argument("--global-batch", type=int, default=256, help="process sweep and projection")
    p.add_argument("--procs", type=ints, default=None,
                   help="process counts (CPU default 1,2; GPU: none)")
    p.add_argument("--launches", type=int, default=2,
                   help="launches per process count, alternating")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps-per-sample", type=int, default=None)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: the cores split between processes)")
    p.add_argument("--gpus", type=ints, default=[1, 8])
    p.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16")
    p.add_argument("--gpu-efficiency", type=float, default=0.4)
    p.add_argument("--launch-us", type=float, default=5.0, help="eager cost per ATen op on a GPU")
    p.add_argument("--busbw-gbs", type=float, default=300.0,
                   help="NCCL all-reduce bus bandwidth, 8x NVLink")
    p.add_argument("--skip", default="", help="comma list of parts to skip: batch,procs,projection")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default="benchmarks/results/scaling.json")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = timing.pick_device()
    args.steps_per_sample = args.steps_per_sample or (10 if device.type == "cuda" else 1)
    if args.worker:
        return worker(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(args.skip.split(","))
    if args.procs is None:
        args.procs = [1, 2] if device.type == "cpu" else []
    sweep = [] if "batch" in skip else batch_sweep(args, device)
    procs = [] if "procs" in skip or not args.procs else process_sweep(args)
    proj = None if "projection" in skip else projection(args, device)
    print(report(sweep, procs, proj, args))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"device": timing.describe_device(device), "args": vars(args),
                       "batch_sweep": sweep, "processes": procs, "projection": proj}, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
