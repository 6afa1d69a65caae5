"""Feature extraction: dataset order, no duplicates across processes, backbone left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState

from ssl_bf.config import load_config
from ssl_bf.data.pipeline import eval_dataset
from ssl_bf.evaluation.features import eval_loader, extract_features
from ssl_bf.models.backbones import build_backbone
from ssl_bf.training.runtime import make_accelerator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD = 37  # 2 processes x batch 4: 5 batches each = 40 slots, 3 of them sampler padding


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(True)  # another test may have configured one differently
    yield make_accelerator(load_config([]))  # precision "no"
    AcceleratorState._reset_state(True)


def small_setup(root):
    cfg = load_config(["model.width=0.125", f"data.root={root}", "data.num_workers=0"])
    torch.manual_seed(0)
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    return cfg, backbone, eval_dataset(cfg, "train", ODD)


def reference(backbone, dataset) -> torch.Tensor:
    """Raw features of every sample in data-set order, in one batch (eval mode)."""
    backbone.eval()
    with torch.no_grad():
        return backbone(torch.stack([dataset[i][0] for i in range(len(dataset))]))


def test_features_in_order_normalised_and_backbone_untouched(cifar_root, accelerator):
    cfg, backbone, dataset = small_setup(cifar_root)
    backbone.train()
    backbone.layer1.eval()  # a submodule deliberately in eval mode must stay so
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    loader = eval_loader(dataset, accelerator, batch_size=8)
    feats, labels = extract_features(backbone, loader, accelerator)
    raw, raw_labels = extract_features(backbone, loader, accelerator, normalize=False)
    assert backbone.training and not backbone.layer1.training and backbone.layer2.training
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # BN stats too
    assert feats.shape == (ODD, backbone.dim) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=1), torch.ones(ODD), atol=1e-5)
    assert torch.equal(labels, torch.as_tensor(dataset.labels)) and torch.equal(raw_labels, labels)
    expected = reference(backbone, dataset)
    assert torch.allclose(raw, expected, atol=1e-4)
    assert torch.allclose(feats, F.normalize(expected, dim=1), atol=1e-5)


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from ssl_bf.models.backbones import build_backbone
    from ssl_bf.config import load_config
    from ssl_bf.data.pipeline import eval_dataset
    from ssl_bf.evaluation.features import eval_loader, extract_features
    from ssl_bf.training.runtime import make_accelerator

    root, out = sys.argv[1], sys.argv[2]
    cfg = load_config(["model.width=0.125", f"data.root={root}", "data.num_workers=0"])
    acc = make_accelerator(cfg)
    torch.manual_seed(0)  # same weights on both processes
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    dataset = eval_dataset(cfg, "train", int(sys.argv[3]))
    loader = eval_loader(dataset, acc, batch_size=4)
    feats, labels = extract_features(backbone, loader, acc, normalize=False)
    torch.save({"feats": feats, "labels": labels}, f"{out}/rank{acc.process_index}.pt")
    with open(f"{out}/rank{acc.process_index}.json", "w") as f:
        json.dump({"world": acc.num_processes, "batches": len(loader)}, f)
""")


def test_two_processes_return_each_sample_once_in_order(cifar_root, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(script), str(cifar_root), str(tmp_path), str(ODD)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    _, backbone, dataset = small_setup(cifar_root)
    expected = reference(backbone, dataset)
    for rank in (0, 1):
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # the sampler padded: the ranks together walked past the end of the data set
        assert info["world"] == 2 and info["batches"] * 4 * 2 > ODD
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["feats"].shape == expected.shape  # 37 rows: no padding duplicates kept
        assert torch.equal(got["labels"], torch.as_tensor(dataset.labels))
        assert torch.allclose(got["feats"], expected, atol=1e-4)  # row i is sample i
