"""The README works as written: its quickstart commands, its Python examples, its launch line.

The commands are read out of README.md (not copied here), so the two cannot drift apart.
They run from the repository root on the CIFAR-10 tree at data/cifar10, which .ci/run
writes before the tests (the quickstart's first command downloads it with a network); on
a bare clone with neither, on the repository's 300-image fixture (on_fixture).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CIFAR_PACK, REPO

README = (REPO / "README.md").read_text()
# the README links these; what they show a user to type is tested the same way
EXPORT_DOC = (REPO / "docs" / "export.md").read_text()
SCALING_DOC = (REPO / "docs" / "scaling.md").read_text()


def section(title: str, doc: str = README) -> str:
    start = doc.index(f"## {title}")
    end = doc.find("\n## ", start + 3)
    return doc[start:end if end > 0 else None]


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[str]:
    lines = [line.strip() for block in bash_blocks(text) for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def marked_python(marker: str, doc: str = README) -> str:
    block = doc.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    return re.search(r"```python\n(.*?)```", block, flags=re.S).group(1)


def run_marked_python(marker: str, cwd: Path, doc: str = README) -> dict:
    """Run a README Python block in `cwd`, as a user would paste it there; its names."""
    before = os.getcwd()
    try:
        os.chdir(cwd)
        namespace: dict = {}
        exec(compile(marked_python(marker, doc), f"README {marker}", "exec"), namespace)
    finally:
        os.chdir(before)
    return namespace


def shell(command: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def on_fixture(command: str, root: Path) -> str:
    """The command on the repository's 300-image fixture: where neither data/cifar10 nor a
    copy to write it from exists (a bare clone, no network), the commands run as written
    with the data keys pointed at the fixture (and a batch that fits its 200 train images)."""
    extra = f" data.root={root} data.subset=null knn.test_subset=null"
    if "pretrain.py" in command:
        extra += " train.batch_size=64"
    return (command + extra if ("pretrain.py" in command or "checkpoint=random" in command)
            else command)


@pytest.fixture(scope="module")
def quickstart(cifar_root):
    fixture = None
    if not (REPO / "data" / "cifar10" / "train").is_dir():
        if (CIFAR_PACK / "make_imagefolder.py").is_file():  # the offline copy, as CI writes it
            subprocess.run([sys.executable, str(CIFAR_PACK / "make_imagefolder.py"),
                            "data/cifar10"],
                           cwd=REPO, check=True, capture_output=True)
        else:
            fixture = cifar_root
    run = REPO / "runs" / "quick"
    shutil.rmtree(run, ignore_errors=True)
    outputs = {}
    # the last one fails on purpose
    for command in commands(section("Quickstart on CIFAR-10"))[:-1]:
        if fixture is not None:
            command = on_fixture(command, fixture)
        result = shell(command)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        outputs[command] = result.stdout
    yield run, outputs
    shutil.rmtree(run, ignore_errors=True)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_quickstart_runs_as_written(quickstart):
    run, outputs = quickstart
    assert {"config.yaml", "metrics.jsonl", "backbone.safetensors", "report_curves.png"} <= {
        p.name for p in run.iterdir()}
    assert (run / "checkpoints" / "last").is_dir()
    knn = [last_json(out) for cmd, out in outputs.items() if cmd.startswith("python eval/knn.py")]
    trained, untrained = knn
    assert 10.0 < untrained["knn_top1"] < 100.0 and 10.0 < trained["knn_top1"] < 100.0
    linear = next(last_json(o) for c, o in outputs.items() if "eval/linear.py" in c)
    assert 10.0 < linear["linear_top1"] <= linear["linear_top5"] <= 100.0
    monitor = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
               if "knn_top1" in line]
    assert [m["epoch"] for m in monitor] == [1, 2]
    assert abs(monitor[-1]["knn_top1"] - trained["knn_top1"]) < 0.02  # same setting, same number


def test_the_error_example_prints_what_the_readme_says():
    block = bash_blocks(section("Quickstart on CIFAR-10"))[-1].strip().splitlines()
    command, expected = block[0], block[1].lstrip("# ")
    result = shell(command)
    assert result.returncode == 2
    assert result.stderr.strip() == expected


def test_python_api_example(quickstart):
    namespace = run_marked_python("api-example", REPO)
    assert tuple(namespace["features"].shape) == (8, namespace["backbone"].dim)
    assert bool(namespace["torch"].isfinite(namespace["out"].loss))


def test_export_example_loads_strictly_into_torchvision(tmp_path, cifar_root):
    out = tmp_path / "runs" / "full"
    result = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov2",
                             f"data.root={cifar_root}", "data.subset=64", "train.batch_size=32",
                             "train.max_steps=1", "knn.every=0",
                             "method.bn_splits=4", f"train.output_dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    net = run_marked_python("export-example", tmp_path)["net"].eval()
    import torch

    import ssl_bf
    ours = ssl_bf.load_backbone(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), ours(x), atol=1e-5)
    # the timm lines beside it, in the same place
    block = EXPORT_DOC.split("<!-- timm-example -->")[1].split("<!-- /timm-example -->")[0]
    command = commands(block)[0].replace("python ", f"{sys.executable} ", 1)
    exported = shell(command, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    model = run_marked_python("timm-example", tmp_path, EXPORT_DOC)["model"].eval()
    assert model.num_classes == 10
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x).mean((2, 3)), ours(x), atol=1e-5)


def test_launch_dry_run_line_matches_the_readme():
    if (os.cpu_count() or 0) != 2:
        pytest.skip("the README shows the line of a 2-core machine")
    documented = next(line for line in SCALING_DOC.splitlines()
                      if line.strip().startswith("# = OMP_NUM_THREADS"))
    prefix = documented.strip()[len("# = "):].split(" ...")[0]
    result = shell("CUDA_VISIBLE_DEVICES= ./launch.sh --dry-run recipe=mocov3_bf data.subset=5000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(prefix), (result.stdout, prefix)


def test_the_key_lists_are_the_schemas():
    """The README's BatchFormer and head key lists name every such field of the schema, no
    more, and docs/configuration.md describes each."""
    import dataclasses

    from ssl_bf.config.schema import BatchFormerConfig

    def listed(marker):
        return re.findall(r"`([a-z_]+\.[a-z_]+)`", README.split(f"<!-- {marker} -->")[1]
                          .split(f"<!-- /{marker} -->")[0])

    bf = [f"bf.{f.name}" for f in dataclasses.fields(BatchFormerConfig)]
    assert listed("bf-keys") == bf
    head = ["method.proj_hidden", "method.proj_out", "method.proj_layers", "method.proj_bn",
            "method.pred_hidden"]
    assert listed("head-keys") == head
    configuration = (REPO / "docs" / "configuration.md").read_text()
    assert [k for k in bf + head if f"`{k}`" not in configuration] == []
