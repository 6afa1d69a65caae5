"""MoCo-v2 trained the way lightly's own example does it: the number users would otherwise get.

Follows lightly's examples/pytorch/moco.py (lightly 1.5/1.6): MoCoProjectionHead(512, 512,
128) (here scaled to the backbone's width), NTXentLoss with a 4096-key memory bank at T=0.1,
SGD lr 0.06 with momentum 0.9 and wd 5e-4, a momentum encoder updated with
cosine_schedule(epoch, epochs, 0.996, 1) before each step, no shuffle-BN, MoCoV2Transform at
32 px, a torchvision dataset read image by image in DataLoader workers. The backbone is
ssl_bf's (same architecture as the compared run), so the difference is the training loop.

    python benchmarks/lightly_loop.py --root data/cifar10 --subset 10000 --epochs 25 \
        --width 0.25 --precision bf16 --out runs/lightly_loop

Writes OUT/metrics.jsonl (step, epoch, loss, samples_per_s, time) and
OUT/backbone.safetensors, which `python eval/knn.py checkpoint=OUT/backbone.safetensors`
evaluates like any ssl_bf run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import MoCoV2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bf.config.schema import ModelConfig
from ssl_bf.data.images import stratified_first
from ssl_bf.models.backbones import build_backbone
from ssl_bf.rundir.export import export_backbone


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(backbone.dim, backbone.dim, 128)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.projection_head(self.backbone(x))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


def loader(args) -> torch.utils.data.DataLoader:
    transform = MoCoV2Transform(input_size=32, gaussian_blur=0.0)  # as the CIFAR recipes
    dataset = torchvision.datasets.ImageFolder(os.path.join(args.root, "train"),
                                               transform=transform)
    if args.subset:
        labels = torch.tensor(dataset.targets).numpy()
        dataset = torch.utils.data.Subset(
            dataset, stratified_first(labels, args.subset, len(labels)).tolist())
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                       drop_last=True, num_workers=args.workers)


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = ModelConfig(backbone="resnet18", width=args.width)
    model = LightlyMoCo(build_backbone(cfg, 32)).to(device)
    criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * args.batch_size / 256,
                                momentum=0.9, weight_decay=5e-4)
    data = loader(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "w")
    step, start = 0, time.time()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    for epoch in range(args.epochs):
        momentum = cosine_schedule(epoch, args.epochs, 0.996, 1.0)
        tick = time.time()
        for batch_index, ((x_query, x_key), _) in enumerate(data):
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            x_query, x_key = x_query.to(device), x_key.to(device)
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(x_query), model.forward_momentum(x_key))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % args.log_every == 0:
                now = time.time()
                log.write(json.dumps({"step": step,
                                      "epoch": round(epoch + (batch_index + 1) / len(data), 4),
                                      "loss": loss.item(),
                                      "samples_per_s": (args.log_every * args.batch_size
                                                        / (now - tick)),
                                      "time": round(now - start, 2)}) + "\n")
                log.flush()
                tick = now
            if args.max_steps and step >= args.max_steps:
                break
        if args.max_steps and step >= args.max_steps:
            break
    export_backbone(model.backbone, cfg, 32, out / "backbone.safetensors")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data/cifar10")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", default="runs/lightly_loop")
    train(p.parse_args())


if __name__ == "__main__":
    main()
