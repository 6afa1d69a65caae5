#!/usr/bin/env bash
# Run HERE (not on the device) before benchmarks/gpu_check.sh: the device machine receives
# only this repository's working tree and cannot reach the network, so this puts beside it,
# in git-ignored folders named in the device call's `carry`:
#   gpu_data/cifar10_jpeg.npz   the CIFAR-10 JPEG pack (18 MB; gpu_check.sh writes the tree there)
#   .whl/                       wheels of what the device image lacks (Python 3.12): lightly and
#                               faiss-cpu with the dependencies not already in that image
set -euo pipefail
cd "$(dirname "$0")/.."
PACK="${1:?usage: benchmarks/gpu_prepare.sh PATH/TO/cifar10_jpeg.npz (the CIFAR-10 JPEG pack; see npz_to_imagefolder.py)}"
mkdir -p gpu_data .whl
cp "$PACK" gpu_data/cifar10_jpeg.npz
grep -qx "/gpu_data/" .git/info/exclude 2>/dev/null || echo "/gpu_data/" >> .git/info/exclude
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
# the device image has torch, torchvision, accelerate, safetensors, pyyaml, numpy, tqdm,
# pytorch-lightning, packaging, scikit-learn, timm; lightly 1.6 needs hydra-core (omegaconf,
# antlr4), faiss-cpu nothing more
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    lightly==1.6.0 faiss-cpu hydra-core==1.3.8 omegaconf==2.3.0
# omegaconf pins antlr4 4.9.*, published as source only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -la gpu_data .whl
du -sh gpu_data .whl
