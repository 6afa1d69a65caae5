"""What a loader worker costs per image at ImageNet sizes, on real photos (BENCHMARKS §11).

The photos are the two real JPEG photographs scikit-learn ships (china.jpg, flower.jpg,
640 x 427), cut to 4:3 and stored as ImageNet's typical 500 x 375 (landscape and portrait,
quality 90), and the same stored at a capped size (shorter side 320 and 256, as FFCV and
many ImageNet loaders store them). Each path makes one image's two 224-px views (MoCo-v2's
transform, lightly's parameters) on ONE core, the paths timed in alternation, medians of
rounds; images/s per core gives the cores a GPU needs at 1,000 and 3,000 pairs/s.

    python benchmarks/decode.py                 # 3 rounds of >= 2 s per path
    python benchmarks/decode.py --rounds 1 --seconds 0.5

Paths: today's ImageNet worker (PIL decode + lightly's PIL transform, both views made in the
worker); PIL decode + two RandomResizedCrops (the crop alone); the crop-in-worker path the
ImageNet recipes use (pretrain_input.ImagesDataset: read, decode - reduced by DCT scaling
where the crops allow -, crop, resize; the rest of each view on the device); the same with
torchvision.io.decode_jpeg (the same pixels as PIL's, but deprecated since torchvision 0.29 in
favour of TorchCodec, so not taken); the crop-in-worker path on the capped copies; and a
batch of 32 decoded by decode_jpeg on --device (nvJPEG on a GPU, so the loader would only
read bytes; the CPU decoder elsewhere) with the crops cut there (gpu_check.sh part a).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import sklearn
import timing  # benchmarks/ is sys.path[0]; it puts the repo root on sys.path
import torch
from PIL import Image
from torchvision.io import decode_jpeg
from torchvision.transforms import RandomResizedCrop

from ssl_bf.config.schema import AugConfig
from ssl_bf.data.batched_views import BatchedViews, ViewCrops, loader_boxes
from ssl_bf.data.images import ImageSource, read_image
from ssl_bf.data.pretrain_input import ImagesDataset, ViewsDataset
from ssl_bf.data.transforms import pretrain_transform

SIZE = 224  # the ImageNet recipes' view size (official MoCo)
PHOTOS = ("china.jpg", "flower.jpg")


def write_photos(folder: str, short_side: int | None) -> list[str]:
    """The photos at 500 x 375 and 375 x 500 (4:3 centre cut), or their capped copies."""
    paths = []
    for name in PHOTOS:
        photo = Image.open(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images",
                                        name)).convert("RGB")
        w, h = photo.size
        cut = photo.crop(((w - h * 4 // 3) // 2, 0, (w - h * 4 // 3) // 2 + h * 4 // 3, h))
        for turn in (False, True):
            img = cut.resize((500, 375), Image.BICUBIC)
            img = img.transpose(Image.ROTATE_90) if turn else img
            if short_side is not None:
                scale = short_side / min(img.size)
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.BICUBIC)
            path = os.path.join(folder, f"{name[:-4]}_{'p' if turn else 'l'}_{short_side}.jpg")
            img.save(path, quality=90)
            paths.append(path)
    return paths


def source(paths: list[str]) -> ImageSource:
    return ImageSource(labels=None, classes=[], paths=paths, description="photos")


BATCH = 32  # images a loader call gets (a worker's batch; the boxes are drawn per call)


def paths_to_time(folder: str, device: torch.device) -> dict:
    """name -> fn() making the two views of BATCH images (cycling over the photos)."""
    full = write_photos(folder, None)
    keys = [(0, i % len(full)) for i in range(BATCH)]
    transform = pretrain_transform("mocov2", SIZE, AugConfig())
    views = BatchedViews.from_lightly(transform, seed=0)
    lightly = ViewsDataset(source(full), transform, 0)
    crop_here = {side: ImagesDataset(source(write_photos(folder, side) if side else full), 0,
                                     views) for side in (None, 320, 256)}
    rrc = RandomResizedCrop(SIZE, scale=(0.2, 1.0))
    files = [torch.frombuffer(bytearray(open(p, "rb").read()), dtype=torch.uint8) for p in full]

    def tv_decode_crops():
        sizes = [(375, 500) if i % 2 == 0 else (500, 375) for _, i in keys]
        boxes = loader_boxes(views, 0, [i for _, i in keys], sizes)
        return [ViewCrops(views, 0, i, (size, b))(
                    decode_jpeg(files[i]).permute(1, 2, 0).contiguous().permute(2, 0, 1))
                for (_, i), size, b in zip(keys, sizes, boxes)]

    def on_device():  # nvJPEG on CUDA: the worker hands over bytes, the GPU decodes and crops
        images = decode_jpeg([files[i] for _, i in keys], device=device)
        sizes = [tuple(image.shape[1:]) for image in images]
        boxes = loader_boxes(views, 0, [i for _, i in keys], sizes)
        crops = [ViewCrops(views, 0, i, (size, b))(image.float())
                 for (_, i), size, b, image in zip(keys, sizes, boxes, images)]
        timing.sync(device)
        return crops

    return {
        f"decode_jpeg on {device.type}, 32 a call, + crops there": on_device,
        "PIL decode only": lambda: [read_image(full[i]) for _, i in keys],
        "decode_jpeg only (torchvision.io)": lambda: [decode_jpeg(files[i]) for _, i in keys],
        "today: PIL + lightly's transform, 2 views": lambda: [lightly[k] for k in keys],
        "PIL + 2 RandomResizedCrops": lambda: [
            [np.asarray(rrc(Image.fromarray(a))) for a in [read_image(full[i])] * 2]
            for _, i in keys],
        "crop in worker (PIL), 500x375": lambda: crop_here[None].__getitems__(keys),
        "crop in worker (decode_jpeg), 500x375": tv_decode_crops,
        "crop in worker, stored short side 320": lambda: crop_here[320].__getitems__(keys),
        "crop in worker, stored short side 256": lambda: crop_here[256].__getitems__(keys),
        "crop boxes alone (32 a call)": lambda: loader_boxes(
            views, 0, [i for _, i in keys], [(375, 500)] * BATCH),
    }


def rate(fn, seconds: float) -> float:
    """Images/s of fn (BATCH images a call) over at least `seconds`."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 2:
        fn()
        n += 1
    return n * BATCH / elapsed


def reducible_share(short_sides=(375, 750, 1500), n: int = 4000) -> dict:
    """Share of images whose two crops both allow a JPEG decode at 1/2 or less, by stored
    size (4:3); from the crop boxes alone, no decode."""
    views = BatchedViews.from_lightly(pretrain_transform("mocov2", SIZE, AugConfig()), seed=0)
    out = {}
    for h in short_sides:
        w = h * 4 // 3
        out[f"{w}x{h}"] = float(np.mean([ViewCrops(views, 0, i).reduction(h, w) > 1
                                         for i in range(n)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--device", default=None, help="for the decode_jpeg row (default: "
                        "cuda when there is one, so nvJPEG; else the CPU decoder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per core
    # torchvision 0.29 deprecates its decoders (TorchCodec replaces them); measured all the same
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with tempfile.TemporaryDirectory() as folder:
        paths = paths_to_time(folder, timing.pick_device(args.device))
        rates = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                rates[name].append(rate(fn, args.seconds))
    rows = {}
    for name, r in rates.items():
        per_core = statistics.median(r)
        rows[name] = {"images_per_s_per_core": round(per_core, 1),
                      "cores_for_1000_pairs_per_s": math.ceil(1000 / per_core),
                      "cores_for_3000_pairs_per_s": math.ceil(3000 / per_core)}
        print(f"{name:45s} {per_core:7.1f} img/s/core  cores for 1,000 / 3,000 pairs/s: "
              f"{rows[name]['cores_for_1000_pairs_per_s']} / "
              f"{rows[name]['cores_for_3000_pairs_per_s']}")
    share = reducible_share()
    print("share of images a reduced (DCT-scaled) decode serves, by stored size:", share)
    result = {"rates": rows, "reducible_share": share, "rounds": args.rounds,
              "device": timing.describe_device(timing.pick_device(args.device))}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
