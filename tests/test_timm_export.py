"""A backbone as a run exports it loads strictly into timm and gives the same features."""
from __future__ import annotations

import pytest
import torch

import ssl_bf
from ssl_bf.config.schema import ModelConfig
from ssl_bf.export import main as export_main
from ssl_bf.models.backbones import build_backbone
from ssl_bf.rundir.export import BACKBONE_FILE, export_backbone, read_metadata

timm = pytest.importorskip("timm")  # an optional extra; the dev extra installs it

CASES = [  # (model, image size): CIFAR stem, ImageNet stem, ViT at CIFAR size
    (ModelConfig(backbone="resnet18"), 32),
    (ModelConfig(backbone="resnet18"), 96),
    (ModelConfig(backbone="vit_tiny", vit_depth=2), 32),
]


def exported(tmp_path, model: ModelConfig, size: int):
    torch.manual_seed(0)
    net = build_backbone(model, size)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return export_backbone(net, model, size, tmp_path / BACKBONE_FILE)


@pytest.mark.parametrize("model, size", CASES, ids=lambda c: getattr(c, "backbone", c))
def test_timm_file_loads_strictly_with_the_same_features(tmp_path, model, size):
    path = exported(tmp_path, model, size)
    assert export_main([str(path), "--to", "timm"]) == 0
    timm_file = tmp_path / "backbone_timm.safetensors"
    meta = read_metadata(timm_file)
    assert meta["format"] == "timm" and meta["timm_model"].startswith(model.backbone.split("_")[0])
    ours, theirs = ssl_bf.load_backbone(path), ssl_bf.load_timm(timm_file)
    assert isinstance(theirs, timm.models.resnet.ResNet if model.backbone.startswith("resnet")
                      else timm.models.vision_transformer.VisionTransformer)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (4, ours.dim)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_plain_timm_resnet18_takes_the_file_with_the_cifar_stem_patched(tmp_path):
    """What a user does by hand: timm.create_model("resnet18", num_classes=0), the CIFAR stem
    swapped in as for torchvision, then load_state_dict(strict=True) of backbone.safetensors."""
    from safetensors.torch import load_file

    path = exported(tmp_path, ModelConfig(backbone="resnet18"), 32)
    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ssl_bf.load_backbone(path)(x), atol=1e-5,
                                   rtol=1e-5)


def test_quarter_width_is_a_clear_error(tmp_path, capsys):
    path = exported(tmp_path, ModelConfig(backbone="resnet18", width=0.25), 32)
    with pytest.raises(SystemExit):
        export_main([str(path)])
    assert "timm has no ResNet of width 0.25" in capsys.readouterr().err
    assert not (tmp_path / "backbone_timm.safetensors").exists()


@pytest.mark.parametrize("args, fragment", [
    ([], "usage: python -m ssl_bf.export"),
    (["a", "b"], "usage:"),
    (["x.safetensors", "--to", "onnx"], "--to: 'onnx' is not a known target"),
    (["x.safetensors", "--out", "y.pt"], "--out: y.pt must end in .safetensors"),
    (["/nonexistent/run"], "does not exist"),
])
def test_export_cli_errors_are_one_line_exit_2(capsys, args, fragment):
    with pytest.raises(SystemExit) as exit_:
        export_main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
