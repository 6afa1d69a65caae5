"""Every registered method keeps the contract of ssl_bf/methods/base.py: it takes its views as
a list and returns a StepOutput, names its backbone where the checkpoint loader looks, sorts
every trainable parameter into exactly one role (BatchFormer's lr scale depends on it), and its
name is known to every reader of the registry."""
from __future__ import annotations

import pytest
import torch

from ssl_bf.config import load_config
from ssl_bf.config.methods import METHODS, traits
from ssl_bf.data.transforms import pretrain_transform
from ssl_bf.methods import BUILDERS, Method, StepOutput, build_method
from ssl_bf.training.optim import param_groups

SMALL = ["model.width=0.125", "method.proj_hidden=64", "method.pred_hidden=64",
         "method.proj_out=32", "method.queue_size=64", "train.batch_size=16", "method.bn_splits=2"]


def method(name: str, *extra: str) -> tuple:
    cfg = load_config([f"recipe={name}", *SMALL, *extra])
    torch.manual_seed(0)
    return cfg, build_method(cfg)


def views(n: int = 2, b: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, 32, 32, generator=g) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("bf", [False, True])
def test_forward_takes_a_list_of_views_and_returns_a_step_output(name, bf):
    _, m = method(name, f"bf.enabled={str(bf).lower()}")
    assert isinstance(m, Method) and m.n_views == 2
    out = m(views(m.n_views))
    assert isinstance(out, StepOutput)
    assert out.loss.requires_grad and out.loss.dim() == 0
    assert not out.loss_plain.requires_grad and not out.embedding.requires_grad
    assert (out.loss_bf is not None) == bf
    # the spread monitor's input: one L2-normalised embedding per image
    assert out.embedding.shape[0] == 8
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(8), atol=1e-5)
    with pytest.raises(ValueError, match="takes 2 views, got 3"):
        m(views(3))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_roles_partition_the_trainable_parameters_and_batchformer_is_its_own(name):
    cfg, m = method(name, "bf.enabled=true", "bf.lr_scale=0.1")
    roles = m.param_roles()
    trainable = [p for p in m.parameters() if p.requires_grad]
    flat = [p for ps in roles.values() for p in ps]
    assert len(flat) == len({id(p) for p in flat}) == len(trainable)
    assert {id(p) for p in roles["batchformer"]} == {id(p) for p in m.batchformer.parameters()}
    # the optimizer's BatchFormer groups hold exactly those, at bf.lr_scale
    groups = {g["name"]: g for g in param_groups(cfg, m)}
    bf_params = {id(p) for n in ("batchformer", "batchformer_norm_bias")
                 for p in groups.get(n, {"params": []})["params"]}
    assert bf_params == {id(p) for p in roles["batchformer"]}
    assert groups["batchformer"]["lr_scale"] == 0.1 and groups["weights"]["lr_scale"] == 1.0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_frozen_batchformer_takes_no_role(name):
    _, m = method(name, "bf.enabled=true", "bf.trainable=false")
    roles = m.param_roles()
    frozen = list(m.batchformer.parameters())
    assert len(frozen) > 0 and not any(p.requires_grad for p in frozen)
    assert len(roles["batchformer"]) == 0
    # every trainable parameter is the encoder's, and none of the frozen layer's is
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in roles["encoder"]} == trainable
    assert trainable.isdisjoint(id(p) for p in frozen)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_backbone_sits_under_its_prefix_in_the_state_dict(name):
    _, m = method(name)
    state = m.state_dict()
    for key, value in m.backbone.state_dict().items():
        assert (state[Method.BACKBONE_PREFIX + key] is value
                or torch.equal(state[Method.BACKBONE_PREFIX + key], value))


def test_every_registered_name_is_built_configured_and_augmented():
    assert BUILDERS.keys() == METHODS.keys()
    for name in METHODS:
        cfg = load_config([f"method.name={name}"])  # the schema takes it
        transform = pretrain_transform(name, 32, cfg.aug)
        assert (len(transform.transforms)
                == build_method(load_config([f"recipe={name}", *SMALL])).n_views)
        # the view family the registry names is the one the transform builds
        family = "MoCoV2Transform" if traits(name).views == "mocov2" else "BYOLTransform"
        assert type(transform).__name__ == family
