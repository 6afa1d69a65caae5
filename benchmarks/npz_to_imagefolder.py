"""Write an ImageFolder tree (train/<class>/*.jpg, test/<class>/*.jpg) from a CIFAR-10 JPEG
pack: an .npz with `train_jpeg` / `test_jpeg` (JPEG files concatenated), `train_offsets` /
`test_offsets` (N+1 byte offsets), `y_train` / `y_test` and `class_names`.

    python benchmarks/npz_to_imagefolder.py gpu_data/cifar10_jpeg.npz gpu_data/cifar10

Used by benchmarks/gpu_check.sh on a machine that receives only this repository. The JPEG
bytes are written as they are (no re-encoding); a tree already complete is left alone.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def write_split(pack, split: str, labels_key: str, out: Path, names: list[str]) -> int:
    data, offsets, labels = pack[f"{split}_jpeg"], pack[f"{split}_offsets"], pack[labels_key]
    for name in names:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(labels):
        path = out / split / names[int(label)] / f"{i:05d}.jpg"
        path.write_bytes(data[offsets[i]:offsets[i + 1]].tobytes())
    return len(labels)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/npz_to_imagefolder.py PACK.npz OUT_DIR", file=sys.stderr)
        return 2
    pack, out = np.load(argv[0]), Path(argv[1])
    names = [str(n) for n in pack["class_names"]]
    if (out / "done").is_file():
        print(f"{out}: already written")
        return 0
    n = (write_split(pack, "train", "y_train", out, names)
         + write_split(pack, "test", "y_test", out, names))
    (out / "done").write_text(f"{n}\n")
    print(f"{out}: wrote {n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
