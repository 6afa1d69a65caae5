"""Write a data set as shards that data.root can take (data/shard_reader.py has the layout).

    python -m ssl_bf.data.shard data/cifar10 data/cifar10_shards
    python -m ssl_bf.data.shard data/imagenet data/imagenet_shards --dataset imagefolder \
        --short-side 320 --per-shard 1000

SRC is read as `data.root` with `data.dataset` = --dataset would read it (an ImageFolder tree,
torchvision's CIFAR files, ...); DST gets train.json, test.json (when SRC has a test split),
pretrain.json (the train shards again; STL-10: its own, train + unlabeled) and the tar
shards, in the split's order. A file is stored as its own bytes, so it decodes
to the same pixels; images held as arrays (torchvision's CIFAR files) and formats the reader
does not take are stored as PNG (lossless). --short-side S stores images whose shorter side
is longer than S resized to it (bicubic) as JPEG quality 90, as FFCV and many ImageNet
loaders store them (benchmarks/BENCHMARKS.md §11 has what it saves). Serve DST over HTTP(S)
and data.root takes its URL.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_bf.config.schema import DataConfig
from ssl_bf.data.datasets import open_split
from ssl_bf.data.images import BadImage, ImageSource
from ssl_bf.data.shard_reader import IMAGE_EXTENSIONS
from ssl_bf.errors import UsageError


def encoded(source: ImageSource, i: int, short_side: int | None) -> tuple[bytes, str]:
    """Image i's file bytes and extension as stored in a shard."""
    path = None if source.paths is None else Path(source.paths[i])
    if path is not None and short_side is None and path.suffix.lower() in IMAGE_EXTENSIONS:
        return path.read_bytes(), path.suffix.lower()
    try:
        image = Image.fromarray(np.asarray(source.load(i)))
    except BadImage:  # kept as it is, as an image member (one per sample, in order):
        return path.read_bytes(), ".jpg"  # training replaces it, as from the folder
    out = io.BytesIO()
    if short_side is not None and min(image.size) > short_side:
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.BICUBIC)
        image.save(out, format="JPEG", quality=90)
        return out.getvalue(), ".jpg"
    image.save(out, format="PNG")
    return out.getvalue(), ".png"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # the same input, the same bytes
    tar.addfile(info, io.BytesIO(data))


def write_split(source: ImageSource, dst: Path, split: str, per_shard: int,
                short_side: int | None) -> dict:
    """The split's shards in DST and its index, DST/<split>.json (returned too)."""
    labels = (np.full(len(source), -1, np.int64) if source.labels is None
              else np.asarray(source.labels))
    shardlist = []
    for start in range(0, len(source), per_shard):
        name = f"{split}-{start // per_shard:06d}.tar"
        items = range(start, min(len(source), start + per_shard))
        with tarfile.open(dst / name, "w") as tar:
            for i in items:
                data, ext = encoded(source, i, short_side)
                _add(tar, f"{i:08d}{ext}", data)
                _add(tar, f"{i:08d}.cls", str(int(labels[i])).encode())
        shardlist.append({"url": name, "nsamples": len(items),
                          "filesize": (dst / name).stat().st_size})
        if source.labels is not None:  # none: an unlabelled split (STL-10's pretraining)
            shardlist[-1]["labels"] = [int(labels[i]) for i in items]
    index = {"wids_version": 1, "name": split, "classes": list(source.classes),
             "shardlist": shardlist}
    (dst / f"{split}.json").write_text(json.dumps(index))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_bf.data.shard",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--dataset", default="cifar10",
                        choices=["cifar10", "cifar100", "stl10", "imagefolder"])
    parser.add_argument("--per-shard", type=int, default=1000, help="images a shard")
    parser.add_argument("--short-side", type=int, default=None,
                        help="store larger images with this shorter side (JPEG)")
    args = parser.parse_args(argv)
    try:
        if args.per_shard < 1 or (args.short_side is not None and args.short_side < 8):
            raise UsageError("--per-shard must be at least 1, --short-side at least 8")
        dst = Path(args.dst)
        if (dst / "train.json").exists():
            raise UsageError(f"{dst} already holds shards (train.json); choose another DST")
        cfg = DataConfig(dataset=args.dataset, root=args.src)
        train = open_split(cfg, "train")
        try:
            test = open_split(cfg, "test")
        except UsageError:
            test = None  # a training set only
        # what pretraining reads: the train split, except STL-10's (train + unlabeled)
        pretrain = open_split(cfg, "pretrain") if args.dataset == "stl10" else None
        dst.mkdir(parents=True, exist_ok=True)
        for split, source in (("train", train), ("test", test), ("pretrain", pretrain)):
            if source is not None:
                index = write_split(source, dst, split, args.per_shard, args.short_side)
                print(f"{split}: {len(source)} images in {len(index['shardlist'])} shards "
                      f"-> {dst}/{split}.json")
        if pretrain is None:  # the train shards, listed again
            index = json.loads((dst / "train.json").read_text())
            (dst / "pretrain.json").write_text(json.dumps({**index, "name": "pretrain"}))
    except (UsageError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
