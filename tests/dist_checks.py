"""Multi-process semantics, computed by 1 or 2 processes over the same global inputs.

    python tests/dist_checks.py OUT.pt                                       # 1 process
    accelerate launch --multi_gpu --num_processes 2 tests/dist_checks.py OUT.pt

Rank 0 saves a dict of tensors; tests/test_distributed.py compares the two runs.
Every input is a fixed-seed global batch; process r takes its slice, so one
process x 2B and two processes x B see the same samples.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from ssl_bf.config import load_config
from ssl_bf.methods import build_method
from ssl_bf.methods.key_encoder import KeyEncoder
from ssl_bf.methods.query_path import QueryPath, build_batchformer
from ssl_bf.training.optim import build_optimizer, set_lr
from ssl_bf.training.runtime import make_accelerator

GLOBAL_BATCH = 16
SMALL = ["model.width=0.25", "method.proj_hidden=64", "method.pred_hidden=64",
         f"train.batch_size={GLOBAL_BATCH}", "method.bn_splits=1"]


def global_views(seed: int, n: int = GLOBAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


def my_slice(acc) -> slice:
    b = GLOBAL_BATCH // acc.num_processes
    return slice(acc.process_index * b, (acc.process_index + 1) * b)


def eval_mode_loss_and_grads(acc, args: list[str], seed: int) -> tuple:
    """Loss (mean over processes) and query-side gradients of one step, BN and dropout
    isolated (eval mode)."""
    cfg = load_config([*args, *SMALL])
    torch.manual_seed(0)
    method = build_method(cfg, acc.num_processes).eval()
    model = acc.prepare(method)
    x1, x2 = global_views(seed)
    sl = my_slice(acc)
    out = model([x1[sl], x2[sl]])
    acc.backward(out.loss)
    grads = torch.cat([p.grad.flatten() for p in method.query.parameters() if p.grad is not None])
    return acc.reduce(out.loss.detach(), "mean"), grads


def mocov3_loss_and_grads(acc) -> dict:
    """(a) the loss and gradients of MoCo-v3 with BN isolated (eval mode)."""
    loss, grads = eval_mode_loss_and_grads(acc, ["recipe=mocov3"], 1)
    return {"v3_loss": loss, "v3_grads": grads}


def authors_v3_global(acc) -> dict:
    """(f) the authors' MoCo-v3 (keys through the shared layer, 8 terms), global scope,
    trainable, BN and dropout isolated (eval mode): loss and gradients."""
    loss, grads = eval_mode_loss_and_grads(
        acc, ["recipe=mocov3_bf_authors", "bf.scope=global", "bf.trainable=true"], 2)
    return {"authors_v3_loss": loss, "authors_v3_grads": grads}


def authors_v2_queue(acc) -> dict:
    """(g) the authors' MoCo-v2 with shuffle-BN: both key streams of every rank enqueued."""
    cfg = load_config(["recipe=mocov2_bf_authors", *SMALL, "method.queue_size=64"])
    torch.manual_seed(0)
    method = build_method(cfg, acc.num_processes)
    model = acc.prepare(method)
    torch.manual_seed(300)
    x1, x2 = global_views(30)
    out = model([x[my_slice(acc)] for x in (x1, x2)])
    return {"authors_v2_queues": acc.gather(method.queue.keys.unsqueeze(0)),
            "authors_v2_plain_keys": acc.gather(out.keys),
            "authors_v2_ptr": method.queue.ptr.clone()}


def mocov2_queue(acc) -> dict:
    """(b) the queue after steps with shuffle-BN: identical everywhere, holding every rank's
    keys."""
    cfg = load_config(["recipe=mocov2", *SMALL, "method.queue_size=40"])
    torch.manual_seed(0)
    method = build_method(cfg, acc.num_processes)
    model = acc.prepare(method)
    for step in range(3):  # 48 keys into 40 slots: the ring wraps
        torch.manual_seed(100 + step)
        x1, x2 = global_views(10 + step)
        sl = my_slice(acc)
        out = model([x1[sl], x2[sl]])
    last_keys = acc.gather(out.keys)  # rank order = global batch order
    queues = acc.gather(method.queue.keys.unsqueeze(0))
    return {"v2_queues": queues, "v2_last_keys": last_keys, "v2_ptr": method.queue.ptr.clone()}


class Recorder(nn.Module):
    """Identity on (B, 3, 1, 1) inputs that remembers which sample ids it saw."""

    def __init__(self):
        super().__init__()
        self.seen = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x[:, 0, 0, 0].clone()
        return x.flatten(1)


def shuffle_bn(acc) -> dict:
    """(c) the key encoder's batch mixes ranks, and its output comes back in order."""
    enc = KeyEncoder(Recorder(), nn.Identity(), shuffle_bn=True)
    ids = torch.arange(GLOBAL_BATCH, dtype=torch.float32)
    x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)[:, :, None, None]
    torch.manual_seed(7)
    k = enc(x[my_slice(acc)])[0]
    recovered = k[:, 0] / k[:, 1]  # normalisation keeps the id / 1 ratio
    seen = acc.gather(enc.backbone.seen.unsqueeze(0))
    return {"shuffle_seen": seen, "shuffle_recovered": acc.gather(recovered)}


def batchformer_scope(acc, scope: str) -> dict:
    """(d) BF over the gathered batch: outputs and input-gradients of all ranks."""
    cfg = load_config(["recipe=mocov3_bf", "bf.dropout=0.0", f"bf.scope={scope}"])
    torch.manual_seed(0)
    path = QueryPath(nn.Identity(), nn.Identity(), None, build_batchformer(cfg.bf, 16), cfg.bf)
    g = torch.Generator().manual_seed(3)
    h_all, w_all = (torch.randn(GLOBAL_BATCH, 16, generator=g),
                    torch.randn(GLOBAL_BATCH, 16, generator=g))
    sl = my_slice(acc)
    h = h_all[sl].clone().requires_grad_(True)
    out = path.batchformer(h)
    (out * w_all[sl]).sum().backward()
    return {f"bf_{scope}_out": acc.gather(out.detach()), f"bf_{scope}_grad": acc.gather(h.grad)}


def params_after_steps(acc) -> dict:
    """(e) a few real optimizer steps of MoCo-v3 + BF (dropout on): ranks stay identical."""
    cfg = load_config(["recipe=mocov3_bf", *SMALL])
    torch.manual_seed(0)
    method = build_method(cfg, acc.num_processes)
    optimizer = build_optimizer(cfg, method)
    model, optimizer = acc.prepare(method, optimizer)
    for step in range(3):
        set_lr(optimizer, 0.5)
        torch.manual_seed(200 + step + 1000 * acc.process_index)  # different dropout per rank
        x1, x2 = global_views(20 + step)
        sl = my_slice(acc)
        acc.backward(model([x1[sl], x2[sl]]).loss)
        optimizer.step()
        optimizer.zero_grad()
        method.update_key_encoder(0.9)
    flat = torch.cat([p.detach().flatten() for p in method.parameters()])
    return {"params": acc.gather(flat.unsqueeze(0))}


def main(out_path: str) -> None:
    cfg = load_config(["recipe=mocov3"])
    acc = make_accelerator(cfg)
    torch.set_num_threads(1)
    results = {"world": torch.tensor(acc.num_processes)}
    for check in (mocov3_loss_and_grads, mocov2_queue, shuffle_bn, params_after_steps,
                  authors_v3_global, authors_v2_queue):
        results.update(check(acc))
    for scope in ("global", "local"):
        results.update(batchformer_scope(acc, scope))
    if acc.is_main_process:
        torch.save({k: v.detach().cpu() for k, v in results.items()}, out_path)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
