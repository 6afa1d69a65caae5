"""launch.sh argument building: `--dry-run` under faked machines, clusters and SLURM jobs.

Every run gets a PATH holding only the few tools launch.sh uses (plus fake nvidia-smi /
scontrol where a test wants one), so a real GPU driver or SLURM install on the test
machine cannot leak into the result.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch.sh"
CORES = len(os.sched_getaffinity(0))  # what `nproc` reports for this process
TOOLS = ("bash", "env", "nproc", "dirname", "sed")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run launch.sh"
        (d / tool).symlink_to(found)
    return d


def fake_tool(bin_dir: Path, name: str, output: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(output)}\n")   # no cat on PATH
    path.chmod(0o755)


def run(bin_dir: Path, *argv: str, cwd: Path = REPO, launcher: str = "./launch.sh",
        **env: str) -> subprocess.CompletedProcess:
    full_env = {"PATH": str(bin_dir), "HOME": str(bin_dir.parent), **env}
    return subprocess.run([launcher, *argv], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=10)


def dry(bin_dir: Path, *argv: str, **env: str) -> dict:
    """Run with --dry-run first and split the printed line into its parts."""
    proc = run(bin_dir, "--dry-run", *argv, **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return parse(lines[0])


def parse(line: str) -> dict:
    words = shlex.split(line)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[:2] == ["accelerate", "launch"], line
    opts: dict[str, str | bool] = {}
    i = 2
    while words[i].startswith("--"):
        if words[i + 1].startswith("--"):
            opts[words[i]] = True
            i += 1
        else:
            opts[words[i]] = words[i + 1]
            i += 2
    return {"line": line, "env": env, "opts": opts, "script": words[i], "args": words[i + 1:]}


# --- one machine -----------------------------------------------------------------

def test_no_gpu_is_one_process_on_every_core(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf", CUDA_VISIBLE_DEVICES="")
    assert out["line"] == (
        f"OMP_NUM_THREADS={CORES} accelerate launch --quiet --num_processes 1 --num_machines 1 "
        "--mixed_precision no --dynamo_backend no ./ssl_bf/pretrain.py recipe=mocov3_bf")


def test_no_gpu_without_cuda_visible_devices_or_nvidia_smi(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf")
    assert out["env"] == {"OMP_NUM_THREADS": str(CORES)}
    assert out["opts"] == {"--quiet": True, "--num_processes": "1", "--num_machines": "1",
                           "--mixed_precision": "no", "--dynamo_backend": "no"}


def test_nproc_on_cpu_uses_multi_gpu_launcher_and_splits_cores(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf", "bf.scope=global", CUDA_VISIBLE_DEVICES="", NPROC="2")
    assert out["opts"]["--multi_gpu"] is True      # --cpu would start only one process
    assert "--cpu" not in out["opts"]
    assert out["opts"]["--num_processes"] == "2"
    assert out["opts"]["--num_machines"] == "1"
    assert out["env"] == {"OMP_NUM_THREADS": str(max(1, CORES // 2))}
    assert out["args"] == ["recipe=mocov3_bf", "bf.scope=global"]


def test_nproc_above_core_count_keeps_one_thread(bin_dir):
    out = dry(bin_dir, CUDA_VISIBLE_DEVICES="", NPROC=str(CORES * 4))
    assert out["env"] == {"OMP_NUM_THREADS": "1"}
    assert out["opts"]["--num_processes"] == str(CORES * 4)


def test_one_gpu(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf", CUDA_VISIBLE_DEVICES="3")
    assert out["line"] == ("accelerate launch --quiet --num_processes 1 --num_machines 1 "
                           "--dynamo_backend no ./ssl_bf/pretrain.py recipe=mocov3_bf")


@pytest.mark.parametrize("env", [{"NUM_GPUS": "8"}, {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}])
def test_eight_gpus(bin_dir, env):
    out = dry(bin_dir, "recipe=mocov3_bf", **env)
    assert out["env"] == {}                          # threads are left to accelerate/the code
    assert out["opts"] == {"--quiet": True, "--multi_gpu": True, "--num_processes": "8",
                           "--num_machines": "1",
                           "--dynamo_backend": "no"}
    assert "--mixed_precision" not in out["opts"]   # train.precision decides


def test_nvidia_smi_counts_gpus_not_mig_lines(bin_dir):
    fake_tool(bin_dir, "nvidia-smi", "".join(
        f"GPU {i}: NVIDIA H100 (UUID: GPU-{i})\n  MIG 1g.10gb Device 0: (UUID: MIG-{i})\n"
        for i in range(4)))
    assert dry(bin_dir)["opts"]["--num_processes"] == "4"


def test_cuda_visible_devices_beats_nvidia_smi(bin_dir):
    fake_tool(bin_dir, "nvidia-smi", "".join(f"GPU {i}: NVIDIA H100\n" for i in range(8)))
    out = dry(bin_dir, CUDA_VISIBLE_DEVICES="2,5")
    assert out["opts"]["--num_processes"] == "2"
    assert out["opts"]["--multi_gpu"] is True
    out = dry(bin_dir, CUDA_VISIBLE_DEVICES="")
    assert out["opts"]["--num_processes"] == "1"
    assert "--multi_gpu" not in out["opts"]
    assert out["env"] == {"OMP_NUM_THREADS": str(CORES)}


@pytest.mark.parametrize("cvd,gpus", [("0,-1,2", 1), ("NoDevFiles", 0), ("GPU-aa,GPU-bb", 2)])
def test_cuda_visible_devices_counts_like_cuda(bin_dir, cvd, gpus):
    out = dry(bin_dir, CUDA_VISIBLE_DEVICES=cvd)
    assert out["opts"]["--num_processes"] == str(max(gpus, 1))
    assert ("OMP_NUM_THREADS" in out["env"]) == (gpus == 0)


def test_mixed_precision_only_when_asked(bin_dir):
    assert dry(bin_dir, NUM_GPUS="2", MIXED_PRECISION="bf16")["opts"]["--mixed_precision"] == "bf16"
    assert dry(bin_dir, CUDA_VISIBLE_DEVICES="",
               MIXED_PRECISION="bf16")["opts"]["--mixed_precision"] == "bf16"


def test_master_port_on_one_machine(bin_dir):
    out = dry(bin_dir, NUM_GPUS="2", MASTER_PORT="29611")
    assert out["opts"]["--main_process_port"] == "29611"
    assert "--machine_rank" not in out["opts"]


# --- several machines --------------------------------------------------------------

def test_two_nodes_of_eight_gpus(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf", NUM_GPUS="8", NNODES="2", NODE_RANK="1",
              MASTER_ADDR="10.1.2.3", MASTER_PORT="29600")
    assert out["opts"] == {"--quiet": True, "--multi_gpu": True, "--num_processes": "16",
                           "--num_machines": "2",
                           "--machine_rank": "1", "--main_process_ip": "10.1.2.3",
                           "--main_process_port": "29600", "--dynamo_backend": "no"}
    assert out["script"] == "./ssl_bf/pretrain.py"


def test_two_cpu_nodes_default_port(bin_dir):
    out = dry(bin_dir, CUDA_VISIBLE_DEVICES="", NPROC="2", NNODES="2", NODE_RANK="0",
              MASTER_ADDR="head")
    assert out["opts"]["--num_processes"] == "4"
    assert out["opts"]["--main_process_port"] == "29500"
    assert out["opts"]["--machine_rank"] == "0"
    assert out["env"] == {"OMP_NUM_THREADS": str(max(1, CORES // 2))}


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
         "SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_GPUS_ON_NODE": "4"}


def test_slurm_two_nodes(bin_dir):
    out = dry(bin_dir, "recipe=mocov3_bf", **SLURM)
    assert out["opts"] == {"--quiet": True, "--multi_gpu": True, "--num_processes": "8",
                           "--num_machines": "2",
                           "--machine_rank": "1", "--main_process_ip": "gpu03",
                           "--main_process_port": "29500", "--dynamo_backend": "no"}
    assert out["args"] == ["recipe=mocov3_bf"]


@pytest.mark.parametrize("nodelist,first", [
    ("gpu[03-04]", "gpu03"), ("a17,b02", "a17"), ("node[7,9-10]", "node7"),
    ("n[1-2]-ib,x01", "n1-ib"), ("single", "single"), ("c1,gpu[1-2]", "c1")])
def test_slurm_nodelist_without_scontrol(bin_dir, nodelist, first):
    out = dry(bin_dir, **{**SLURM, "SLURM_JOB_NODELIST": nodelist})
    assert out["opts"]["--main_process_ip"] == first


def test_slurm_uses_scontrol_when_present(bin_dir):
    fake_tool(bin_dir, "scontrol", "headnode-a\nheadnode-b\n")
    assert dry(bin_dir, **SLURM)["opts"]["--main_process_ip"] == "headnode-a"


def test_slurm_falls_back_to_parsing_when_scontrol_fails(bin_dir):
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    assert dry(bin_dir, **SLURM)["opts"]["--main_process_ip"] == "gpu03"


def test_slurm_gpus_per_node_with_type_and_cuda_visible_devices(bin_dir):
    env = {k: v for k, v in SLURM.items() if k != "SLURM_GPUS_ON_NODE"}
    assert dry(bin_dir, **env, SLURM_GPUS_PER_NODE="a100:8")["opts"]["--num_processes"] == "16"
    # The step's own device list wins over the job's request.
    assert dry(bin_dir, **SLURM, CUDA_VISIBLE_DEVICES="0,1")["opts"]["--num_processes"] == "4"


def test_slurm_explicit_variables_win(bin_dir):
    out = dry(bin_dir, **SLURM, MASTER_ADDR="10.0.0.9", MASTER_PORT="31000", NODE_RANK="0")
    assert out["opts"]["--main_process_ip"] == "10.0.0.9"
    assert out["opts"]["--main_process_port"] == "31000"
    assert out["opts"]["--machine_rank"] == "0"


def test_slurm_single_node_is_a_local_launch(bin_dir):
    out = dry(bin_dir, **{**SLURM, "SLURM_NNODES": "1", "SLURM_NODEID": "0"})
    assert out["opts"] == {"--quiet": True, "--multi_gpu": True, "--num_processes": "4",
                           "--num_machines": "1",
                           "--dynamo_backend": "no"}


def test_slurm_cpu_nodes(bin_dir):
    env = {k: v for k, v in SLURM.items() if k != "SLURM_GPUS_ON_NODE"}
    out = dry(bin_dir, **env, NPROC="2")
    assert out["opts"]["--num_processes"] == "4"
    assert out["opts"]["--mixed_precision"] == "no"


# --- subcommands and pass-through -------------------------------------------------------

@pytest.mark.parametrize("argv,script", [
    (["knn", "checkpoint=runs/a"], "./eval/knn.py"),
    (["linear", "checkpoint=runs/a"], "./eval/linear.py"),
    (["pretrain", "checkpoint=runs/a"], "./ssl_bf/pretrain.py"),
    (["checkpoint=runs/a"], "./ssl_bf/pretrain.py")])
def test_subcommand_chooses_script(bin_dir, argv, script):
    out = dry(bin_dir, *argv, CUDA_VISIBLE_DEVICES="")
    assert out["script"] == script
    assert (REPO / script).parent.is_dir()
    assert out["args"] == ["checkpoint=runs/a"]


def test_dry_run_after_subcommand(bin_dir):
    proc = run(bin_dir, "knn", "--dry-run", "k=1", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert parse(proc.stdout.strip())["script"] == "./eval/knn.py"


def test_arguments_survive_quoting(bin_dir):
    tricky = ["train.output_dir=runs/my run", "note=it's \"quoted\"", "x=$HOME", "g=*.py",
              "empty=", "--", "bare"]
    out = dry(bin_dir, "linear", *tricky, CUDA_VISIBLE_DEVICES="")
    assert out["args"] == tricky
    assert out["script"] == "./eval/linear.py"


def test_printed_line_is_valid_bash_even_with_control_characters(bin_dir):
    # printf %q writes a tab or newline as $'...', which bash (not shlex) reads back.
    tricky = ["t=a\tb", "n=line1\nline2", "s=it's \"x\" $HOME"]
    proc = run(bin_dir, "--dry-run", *tricky, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1, proc.stdout
    words = subprocess.run(["bash", "-c", 'eval "set -- $1"; printf "%s\\0" "$@"', "bash",
                            proc.stdout.strip()], capture_output=True, text=True, check=True,
                           env={"PATH": str(bin_dir)}).stdout.split("\0")[:-1]
    assert words[-len(tricky):] == tricky
    assert words[-len(tricky) - 1] == "./ssl_bf/pretrain.py"


def test_double_dash_ends_options(bin_dir):
    out = dry(bin_dir, "knn", "--", "--dry-run", "k=1", CUDA_VISIBLE_DEVICES="")
    assert out["args"] == ["--dry-run", "k=1"]


def test_script_path_follows_launch_sh_not_cwd(bin_dir, tmp_path):
    proc = run(bin_dir, "--dry-run", "knn", "a=1", cwd=tmp_path, launcher=str(LAUNCH),
               CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert parse(proc.stdout.strip())["script"] == str(REPO / "eval" / "knn.py")


def test_help(bin_dir):
    proc = run(bin_dir, "--help")
    assert proc.returncode == 0
    assert "./launch.sh [pretrain|knn|linear] [--dry-run] key=value" in proc.stdout


# --- errors -----------------------------------------------------------------------

@pytest.mark.parametrize("argv,env,message", [
    (["train", "k=1"], {}, "unknown subcommand 'train'"),
    (["--dryrun", "k=1"], {}, "unknown option '--dryrun'"),
    (["k=1"], {"NPROC": "0"}, "NPROC must be at least 1"),
    (["k=1"], {"NPROC": "two"}, "NPROC must be a whole number"),
    (["k=1"], {"NPROC": "-2"}, "NPROC must be a whole number"),
    (["k=1"], {"NPROC": "2", "NUM_GPUS": "4"}, "NPROC is for machines without GPUs"),
    (["k=1"], {"NUM_GPUS": "many"}, "NUM_GPUS must be a whole number"),
    (["k=1"], {"NNODES": "2", "NODE_RANK": "0"}, "needs MASTER_ADDR"),
    (["k=1"], {"NNODES": "2", "MASTER_ADDR": "h"}, "needs NODE_RANK"),
    (["k=1"], {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK must be below"),
    (["k=1"], {"NNODES": "0"}, "NNODES must be at least 1"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_errors_exit_2_with_one_line(bin_dir, argv, env, message, dry_run):
    # Without --dry-run too: the checks come before anything is started (and the
    # test PATH has no accelerate to start).
    proc = run(bin_dir, *(["--dry-run"] if dry_run else []), *argv, **env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
