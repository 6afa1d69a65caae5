"""Random numbers as a pure function of their address: (seed, epoch, stream, image, draw).

Two hashes of an address live here. `mix_seed` gives the seed of a whole RNG (the PIL
views' per-sample seed, the model's per-step seed); `stream_base`/`uniforms` give batched
augmentation its numbers directly. They are different functions of their keys, and every
committed run depends on one or the other, so neither replaces the other.

Batched augmentation draws every image's parameters at once, yet the views of image i
must depend only on (seed, epoch, i) - not on the batch it lands in, the number of
workers or processes, or a resume in mid-epoch. A counter-based generator gives that
for free: the n-th number of a stream is SplitMix64's output for state base + n·γ
(Steele, Lea, Flood 2014, "Fast splittable pseudorandom number generators"; the
finaliser constants are Stafford's "Mix13"), with base = a hash of (seed, epoch, stream)
and n = image · draws + draw. numpy's uint64 arithmetic wraps modulo 2^64 as the
algorithm needs.
"""
from __future__ import annotations

import random

import numpy as np
import torch

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _finalise(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_base(*key: int) -> np.uint64:
    """A 64-bit state for a key of integers (seed, epoch, stream, ...)."""
    z = np.zeros(1, dtype=np.uint64)
    for part in key:
        z = _finalise(z ^ np.uint64(part & 0xFFFFFFFFFFFFFFFF))
    return z[0]


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """uint64's logical shift on int64 bits (>> on int64 copies the sign bit)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _finalise_bits(z: torch.Tensor) -> torch.Tensor:
    """_finalise on int64 tensors: products wrap modulo 2^64 as uint64's do."""
    z = (z ^ _shift_right(z, 30)) * _signed(int(_M1))
    z = (z ^ _shift_right(z, 27)) * _signed(int(_M2))
    return z ^ _shift_right(z, 31)


def uniforms(base: np.uint64, index: torch.Tensor, draws: int) -> torch.Tensor:
    """(len(index), draws) float64 in [0, 1), on index's device: row r is image index[r]'s
    `draws` numbers - computed where the index is, so the training device never waits for
    numbers made on the host."""
    n = index.long()[:, None] * draws + torch.arange(draws, device=index.device)
    z = _finalise_bits(_signed(int(base)) + (n + 1) * _signed(int(_GAMMA)))
    return _shift_right(z, 11).double() * 2.0 ** -53


def mix_seed(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): neighbouring keys get unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h


def seed_all(seed: int) -> None:
    """Seed the CPU RNGs an augmentation may draw from (torch, random, numpy)."""
    torch.random.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
