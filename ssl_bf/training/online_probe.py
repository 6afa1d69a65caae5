"""The online linear probe: a linear classifier on the detached backbone features of the
labelled pretraining views, trained beside pretraining (lightly's OnlineLinearClassifier,
solo-learn's online classifier), its test top-1 logged as `online_top1` by the kNN monitor.

It never touches the backbone's training: the features are taken by a forward hook on
the query backbone (detached, training mode only, so evaluation passes are not seen), the
head has its own optimizer and its own random generator, and nothing flows back. Every
view the query backbone embeds in a step (both views in MoCo-v3 and in symmetric MoCo-v2)
is a training sample, as solo-learn does with all its large crops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bf.config.derived import backbone_dim
from ssl_bf.config.schema import Config, ProbeConfig
from ssl_bf.errors import UsageError


def online_probe(cfg: Config, backbone: nn.Module, source, world: int,
                 device: torch.device) -> "OnlineProbe | None":
    """The probe of probe.online (None when off); the pretraining images need labels."""
    if not cfg.probe.online:
        return None
    if source.labels is None or len(source.labels) == 0 or source.labels.min() < 0:
        raise UsageError(f"probe.online: the pretraining split at {cfg.data.root} has no labels "
                         "for the online probe to learn from")
    return OnlineProbe(backbone, backbone_dim(cfg.model), source.labels, cfg.probe,
                       cfg.train.seed, world, device)


class OnlineProbe:
    def __init__(self, backbone: nn.Module, dim: int, labels, cfg: ProbeConfig, seed: int,
                 world: int, device: torch.device):
        self.labels = torch.as_tensor(labels).long()  # of the pretraining images, by index
        classes = int(self.labels.max()) + 1
        with torch.random.fork_rng(devices=[]):  # nn.Linear's init, the training RNG untouched
            torch.manual_seed(seed + 7919)
            self.head = nn.Linear(dim, classes).to(device)
        # SGD with momentum 0.9 and no weight decay, the lr per 256 samples on the step's
        # cosine: solo-learn's and lightly's online classifiers (lr 0.1, wd 0 in lightly's
        # examples)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=cfg.lr, momentum=0.9,
                                         weight_decay=cfg.weight_decay)
        self.world = world
        self.features: list[torch.Tensor] = []
        self.hook = backbone.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self.features.append(output.detach().float())

    def update(self, indices: list[torch.Tensor], lr: float) -> torch.Tensor:
        """One SGD step on the features captured since the last call; `indices`: the
        pretraining images of each micro-batch, in order. Returns its top-1 on them (%) as
        a tensor: reading it is a host sync, which the training loop does not pay."""
        feats, self.features = self.features, []
        labels = [self.labels[i.cpu().long()] for i in indices]
        per_micro = len(feats) // len(labels)
        y = torch.cat([lab for lab in labels for _ in range(per_micro)]).to(feats[0].device)
        logits = self.head(torch.cat(feats))
        loss = F.cross_entropy(logits, y)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:  # every process keeps the same head
            for p in self.head.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        self.optimizer.step()
        return 100.0 * (logits.detach().argmax(1) == y).float().mean()

    @torch.no_grad()
    def top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 (%) of the head on raw (not normalised) backbone features."""
        device = self.head.weight.device
        pred = self.head(features.to(device).float()).argmax(1).cpu()
        return round(100.0 * float((pred == labels.cpu()).float().mean()), 4)

    # --- checkpoints: the head's tensors and its optimizer state --------------------------
    PREFIX = "online_probe."

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {self.PREFIX + k: v for k, v in self.head.state_dict().items()}

    def load(self, model_state: dict, optimizer_state: dict | None) -> bool:
        """Restore from a checkpoint's tensors; False if it holds no probe (a fresh head)."""
        own = {k[len(self.PREFIX):]: v for k, v in model_state.items() if k.startswith(self.PREFIX)}
        if not own:
            return False
        self.head.load_state_dict(own)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        return True
