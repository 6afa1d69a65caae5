"""The BatchFormer study: a grid of recipes x seeds at one fixed budget, run one after another.

    python experiments/study.py                       # run what is missing, then report
    python experiments/study.py --only 'v2*' --seeds 0 --dry-run
    python experiments/study.py --report-only         # tables and plots from finished runs
    python experiments/study.py --grid experiments/study_lt_grid.yaml   # the long-tailed study

The grid is experiments/study_grid.yaml (the long-tailed study's: study_lt_grid.yaml). Every
run is a normal ssl_bf run directory under --out (default experiments/out/<report>/<variant>/
seed<k>, <report> the grid's `report:` name); a row with `linear: true` also gets the
linear probe (eval/linear.py, its recipe's linear.* settings) on its final backbone. A
finished run's config.yaml, metrics.jsonl and result.json are copied into the archive,
experiments/results/<report>_runs/ (committed; checkpoints stay in --out): the report is made
from the archive, and a run found there is skipped, so a fresh clone runs only what is missing.
An interrupted run resumes from its last checkpoint (train.resume=auto). Two runs at once on 2 cores
are ~5x slower than one after another: --parallel N is for machines with many cores (a GPU
box), where each run gets its share of the data-loading workers. The report
(experiments/study_report.py) writes experiments/results/<report>_runs.csv, <report>_summary.md
and the plots; --readme experiments/README.md also puts the summary between that file's
<!-- <report>_summary --> markers, so the document's table is always the report's (and the
project README's study verdict is the paired tests', experiments/study_tests.py).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from experiments.markers import markers  # noqa: E402
from experiments.study_report import write_report  # noqa: E402
from ssl_bf.config import yaml_load  # noqa: E402
from ssl_bf.errors import UsageError, exit_on_usage_error  # noqa: E402


def report_name(path: Path) -> str:
    """The grid's `report:` key names its result files (study_summary.md, study_lt_summary.md)."""
    return yaml_load(path.read_text()).get("report", "study")


def load_grid(path: Path) -> list[dict]:
    grid = yaml_load(path.read_text())
    runs = []
    for entry in grid["variants"]:
        for seed in entry.get("seeds", [0]):
            # the grid's `probe:` overrides go to every row's linear probe: one protocol for
            # the whole table, also for runs whose config.yaml predates a recipe change
            runs.append({"probe": grid.get("probe", []), **entry, "seed": seed})
    return runs


def run_dir(out: Path, run: dict) -> Path:
    return out / run["name"] / f"seed{run['seed']}"


def finished(directory: Path) -> bool:
    return (directory / "result.json").is_file()


def done(run: dict, args) -> bool:
    """Finished in the working directory or in the committed archive."""
    return finished(run_dir(Path(args.out), run)) or finished(run_dir(args.archive, run))


ARCHIVED = ("config.yaml", "metrics.jsonl", "result.json")  # result.json last: it marks a run done


def archive(directory: Path, dest: Path) -> bool:
    """Copy a finished run's record (not its checkpoints) into the archive, unless it is there."""
    if not finished(directory) or finished(dest):  # also: --out is the archive itself
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED:
        if (directory / name).is_file():
            shutil.copy2(directory / name, dest / name)
    return True


def pretrain_cmd(run: dict, directory: Path, args) -> list[str]:
    cmd = [sys.executable, "ssl_bf/pretrain.py", f"recipe={run['recipe']}",
           *run.get("overrides", []), *args.set, f"train.seed={run['seed']}",
           f"train.output_dir={directory}", f"data.root={args.root}"]
    if args.workers is not None:
        cmd.append(f"data.num_workers={args.workers}")
    if (directory / "checkpoints").exists():
        cmd.append("train.resume=auto")
    return cmd


def knn_cmd(checkpoint: str, run: dict, args) -> list[str]:
    return [sys.executable, "eval/knn.py", f"checkpoint={checkpoint}", f"recipe={run['recipe']}",
            *[o for o in args.set if o.startswith(("data.", "knn.", "model."))],
            f"train.seed={run['seed']}", f"data.root={args.root}"]


def linear_cmd(directory: Path, run: dict, args) -> list[str]:
    """The linear probe (the run's linear.* settings and the grid's probe overrides, cached
    features) on the finished run."""
    return [sys.executable, "eval/linear.py", f"checkpoint={directory}", *run.get("probe", []),
            f"data.root={args.root}"]


def lightly_cmd(run: dict, directory: Path, args) -> list[str]:
    b = run["budget"]
    return [sys.executable, "benchmarks/lightly_loop.py", "--root", args.root,
            "--subset", str(b["subset"]),
            "--epochs", str(b["epochs"]), "--width", str(b["width"]), "--seed", str(run["seed"]),
            "--workers", str(args.workers if args.workers is not None else 1),
            "--out", str(directory)]


def execute(cmd: list[str], log) -> str:
    """Run a command from the repo root; its output goes to the log; return stdout's last line."""
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    # This checkout's ssl_bf, even when another checkout is the one pip installed (a study
    # runs from a worktree at a fixed commit while the main checkout moves on).
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    log.write(result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {' '.join(cmd)}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def shown(cmd: list[str]) -> str:
    """A command as recorded: `python`, not this machine's interpreter path."""
    return " ".join(["python" if c == sys.executable else c for c in cmd])


def perform(run: dict, args) -> str:
    directory = run_dir(Path(args.out), run)
    if done(run, args):
        return f"done already: {run['name']} seed {run['seed']}"
    directory.mkdir(parents=True, exist_ok=True)
    kind = run.get("kind", "pretrain")
    commands = []
    start = time.time()
    with open(directory / "log.txt", "a") as log:
        if kind == "random":
            commands.append(knn_cmd("random", run, args))
            knn = json.loads(execute(commands[-1], log))
        elif kind == "lightly_loop":
            commands.append(lightly_cmd(run, directory, args))
            execute(commands[-1], log)
            commands.append(knn_cmd(str(directory / "backbone.safetensors"), run, args))
            knn = json.loads(execute(commands[-1], log))
        else:
            commands.append(pretrain_cmd(run, directory, args))
            if not (directory / "backbone.safetensors").is_file():  # written as a run ends
                execute(commands[-1], log)
            knn = {}
            if run.get("linear"):
                commands.append(linear_cmd(directory, run, args))
                knn = json.loads(execute(commands[-1], log))
    result = {"name": run["name"], "seed": run["seed"], "kind": kind, "recipe": run.get("recipe"),
              "overrides": run.get("overrides", []), "commands": [shown(c) for c in commands],
              "wall_s": round(time.time() - start, 1), **knn}
    (directory / "result.json").write_text(json.dumps(result, indent=1))
    archive(directory, run_dir(args.archive, run))
    return f"finished {directory} in {result['wall_s']} s"


def attempt(run: dict, args) -> str:
    """perform(), but a failed run is reported and left unfinished (it reruns next time)."""
    try:
        return perform(run, args)
    except (RuntimeError, ValueError) as err:
        return f"FAILED {run['name']} seed {run['seed']}: {err} (see its log.txt)"


@exit_on_usage_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default=str(REPO / "experiments" / "study_grid.yaml"))
    p.add_argument("--out", default=None, help="default: experiments/out/<the grid's report name>")
    p.add_argument("--results", default=str(REPO / "experiments" / "results"))
    p.add_argument("--root", default="data/cifar10")
    p.add_argument("--only", default="*",
                   help="fnmatch pattern(s) on variant names, comma-separated")
    p.add_argument("--seeds", default=None,
                   help="only these seeds, comma-separated (default: the grid's)")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="data.num_workers per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run (smoke tests: --set train.epochs=1)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="also write the report between <!-- <report>_summary --> markers in PATH")
    args = p.parse_args()
    name = report_name(Path(args.grid))
    args.out = args.out or str(REPO / "experiments" / "out" / name)
    if args.readme:
        markers(Path(args.readme), name)  # a bad --readme stops here, before any run
    patterns = args.only.split(",")
    grid = load_grid(Path(args.grid))
    runs = [r for r in grid if any(fnmatch.fnmatch(r["name"], pat) for pat in patterns)]
    if args.seeds is not None:
        runs = [r for r in runs if r["seed"] in {int(s) for s in args.seeds.split(",")}]
    args.archive = Path(args.results) / f"{name}_runs"
    if args.report_only and not any(done(r, args) for r in grid):
        raise UsageError(f"no finished run of {args.grid} in {args.out} or {args.archive}: "
                         "nothing to report")
    if not args.dry_run:
        for r in grid:  # runs finished before the archive existed, or by another driver
            archive(run_dir(Path(args.out), r), run_dir(args.archive, r))
    if not args.report_only:
        todo = [r for r in runs if not done(r, args)]
        todo.sort(key=lambda r: r["seed"])  # every variant's first seed before any repeat
        print(f"{len(runs)} runs selected, {len(todo)} to do", flush=True)
        if args.dry_run:
            for r in todo:
                print(r["name"], r["seed"], r.get("kind", "pretrain"), *r.get("overrides", []))
            return
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            for message in pool.map(lambda r: attempt(r, args), todo):
                print(message, flush=True)
    if any(finished(run_dir(args.archive, r)) for r in grid):
        write_report(grid, args.archive, Path(args.results), name,
                     Path(args.readme) if args.readme else None,
                     REPO / "README.md" if args.readme else None)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
