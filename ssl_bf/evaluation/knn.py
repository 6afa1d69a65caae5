"""Weighted k-nearest-neighbour classification on faiss (Wu et al. 2018).

    result = knn_classify(bank, bank_labels, queries, query_labels, ks=[20, 200],
                          temperature=0.1, num_classes=10)
    result["top1"][20], result["top5"][200]        # percent

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018, §3.4: each of the k training samples most similar to
a query (cosine similarity s_i of L2-normalised features) votes for its class
with weight exp(s_i / T); the class with the largest sum is the prediction.

The search is exact (faiss `IndexFlatIP`: inner product = cosine on unit vectors)
and runs once at max(k) for all k: the nearest k are a prefix of the nearest
max(k), as faiss returns them sorted. Queries go through in chunks, so memory is
the bank, faiss's copy of it, and one chunk's results - never a queries x bank
similarity matrix.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import warnings
from typing import Iterator, Sequence

import faiss
import numpy as np
import torch

from ssl_bf.data.images import cpu_threads
from ssl_bf.errors import UsageError

DEFAULT_CHUNK = 4096  # queries per faiss search: (chunk, max k) results live at a time


def as_float32(x) -> np.ndarray:
    """(N, D) torch/numpy -> C-contiguous float32 numpy (faiss's only input type)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def as_labels(y) -> torch.Tensor:
    return (y.detach().cpu() if isinstance(y, torch.Tensor)
            else torch.as_tensor(np.asarray(y))).long()


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """faiss's OpenMP thread count for a block, restored afterwards (it is process-global)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n or cpu_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def faiss_blas_core() -> str | None:
    """The CPU kernel set that faiss's bundled OpenBLAS chose, or None if unreadable."""
    try:
        with open("/proc/self/maps") as maps:
            libs = sorted({line.split()[-1] for line in maps
                           if "openblas" in line and "faiss" in line})
        for path in libs:
            name = ctypes.CDLL(path).openblas_get_corename
            name.restype = ctypes.c_char_p
            return name().decode()
    except (OSError, AttributeError, UnicodeDecodeError):
        return None  # no readable OpenBLAS in this process: nothing to warn about
    return None


@functools.lru_cache(maxsize=1)
def warn_if_generic_blas() -> None:
    """faiss-cpu 1.15 wheels bundle OpenBLAS 0.3.15, which does not know recent Intel
    Xeons and falls back to its generic 'Prescott' kernels: measured on one, the
    search ran 5.7x slower than with OPENBLAS_CORETYPE=SkylakeX. Say so once."""
    try:
        with open("/proc/cpuinfo") as f:
            avx2 = " avx2" in f.read()
    except OSError:
        return
    if avx2 and faiss_blas_core() == "Prescott":
        warnings.warn("faiss's OpenBLAS runs generic kernels on this CPU (kNN several times "
                      "slower); start Python with OPENBLAS_CORETYPE=Haswell (or SkylakeX on "
                      "AVX-512 CPUs)", RuntimeWarning, stacklevel=3)


def weighted_votes(sims: torch.Tensor, neighbour_labels: torch.Tensor, temperature: float,
                   num_classes: int) -> torch.Tensor:
    """Class scores from the neighbours' weighted votes.

    Args:
        sims: (Q, k) cosine similarities of each query's neighbours, best first.
        neighbour_labels: (Q, k) their classes (int64).

    Returns:
        (Q, C) scores: sum over neighbours of class c of exp((s_i - s_1) / T).
        Subtracting the best similarity s_1 multiplies a query's scores by one
        constant, so the ranking is that of exp(s_i / T), without overflow at small T.
    """
    weights = torch.exp((sims - sims[:, :1]) / temperature)
    scores = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
    return scores.scatter_add_(1, neighbour_labels, weights)


def _check(bank: np.ndarray, bank_labels: torch.Tensor, queries: np.ndarray,
           query_labels: torch.Tensor, ks: Sequence[int], num_classes: int) -> None:
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"features must be (N, D) and (Q, D), got {bank.shape} and "
                         f"{queries.shape}")
    if len(bank_labels) != len(bank) or len(query_labels) != len(queries):
        raise ValueError("one label per feature row is needed")
    if not ks or min(ks) < 1:
        raise UsageError(f"knn.k: expected positive integers, got {list(ks)}")
    if max(ks) > len(bank):
        raise UsageError(f"knn.k: {max(ks)} neighbours asked for, but the bank holds only "
                         f"{len(bank)} samples (lower knn.k or raise data.subset)")
    labels = torch.cat([bank_labels, query_labels])
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"kNN needs labels in 0..{num_classes - 1}, got {int(labels.min())}.."
                         f"{int(labels.max())} (is the split unlabelled?)")


def knn_classify(bank, bank_labels, queries, query_labels, ks: Sequence[int], temperature: float,
                 num_classes: int, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None,
                 return_predictions: bool = False) -> dict:
    """Weighted kNN accuracy of `queries` against a labelled `bank`, for several k.

    Args:
        bank: (N, D) L2-normalised features (torch or numpy); bank_labels: (N,).
        queries: (Q, D) L2-normalised features; query_labels: (Q,).
        ks: neighbour counts; one search at max(ks) serves them all.
        temperature: T in exp(s / T) (0.1 CIFAR, 0.07 ImageNet).
        chunk_size: queries per search; bounds the memory of the results.
        threads: faiss threads (None = every core this process may use).

    Returns:
        {"top1": {k: percent}, "top5": {k: percent}} (top-5 = top-min(5, C)), plus
        "predictions": {k: (Q,) int64 numpy} when asked for.
    """
    bank, queries = as_float32(bank), as_float32(queries)
    bank_labels, query_labels = as_labels(bank_labels), as_labels(query_labels)
    _check(bank, bank_labels, queries, query_labels, ks, num_classes)
    warn_if_generic_blas()
    ks = sorted(set(int(k) for k in ks))
    top = min(5, num_classes)
    correct1, correct5 = dict.fromkeys(ks, 0), dict.fromkeys(ks, 0)
    predictions = {k: [] for k in ks}
    with faiss_threads(threads):
        index = faiss.IndexFlatIP(bank.shape[1])
        index.add(bank)
        for start in range(0, len(queries), chunk_size):
            sims, idx = index.search(queries[start:start + chunk_size], ks[-1])
            sims, nb_labels = torch.from_numpy(sims), bank_labels[torch.from_numpy(idx)]
            y = query_labels[start:start + chunk_size]
            for k in ks:
                ranked = weighted_votes(sims[:, :k], nb_labels[:, :k], temperature,
                                        num_classes).topk(top, dim=1).indices
                correct1[k] += int((ranked[:, 0] == y).sum())
                correct5[k] += int((ranked == y[:, None]).any(dim=1).sum())
                if return_predictions:
                    predictions[k].append(ranked[:, 0].numpy())
        index.reset()
    n = max(1, len(queries))
    result = {"top1": {k: 100.0 * correct1[k] / n for k in ks},
              "top5": {k: 100.0 * correct5[k] / n for k in ks}}
    if return_predictions:
        result["predictions"] = {k: np.concatenate(p) if p else np.zeros(0, np.int64)
                                 for k, p in predictions.items()}
    return result


def knn_metrics(result: dict, ks: Sequence[int]) -> dict:
    """The flat metrics row shared by the monitor and eval/knn.py.

    `knn_top1` is the top-1 at the LAST k of `knn.k` as written (k=200 for the
    default [20, 200], the k of the MoCo CIFAR demo); every k also gets
    `knn_top1_k{k}` and `knn_top5_k{k}`.
    """
    row = {"knn_top1": round(result["top1"][int(ks[-1])], 4)}
    for k in ks:
        row[f"knn_top1_k{k}"] = round(result["top1"][int(k)], 4)
        row[f"knn_top5_k{k}"] = round(result["top5"][int(k)], 4)
    return row
