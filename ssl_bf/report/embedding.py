"""report_embedding.png: a 2-D t-SNE of each run's test-split features, coloured by class.

t-SNE (scikit-learn, PCA to 50 dimensions first, as is usual) rather than UMAP: on these
2 cores 5,000 points take ~15-30 s and 10,000 ~35-75 s, with no dependency beyond
scikit-learn, while umap-learn brings numba and a JIT warm-up of its own on every first
call. The points are the first N test images, balanced over classes (knn.test_subset's rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_bf.errors import UsageError
from ssl_bf.report.curves import pyplot


def test_features(run_dir: Path, points: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features (N, D), labels (N,), class names) of the run's backbone on its test split."""
    import torch
    from torch.utils.data import DataLoader

    from ssl_bf.data.pipeline import eval_dataset
    from ssl_bf.evaluation.load import load_target

    target = load_target([f"checkpoint={run_dir}"])
    data = eval_dataset(target.cfg, "test", points)
    feats, labels = [], []
    with torch.no_grad():
        for images, y, _ in DataLoader(data, batch_size=256, shuffle=False):
            feats.append(target.backbone(images))
            labels.append(y)
    names = list(data.load.source.classes or [])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy(), names


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise UsageError("the embedding picture needs scikit-learn: "
                         "pip install -e \".[plots]\"") from None
    # kNN's cosine view
    x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    if x.shape[1] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3)
    return TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


def plot_embedding(runs: list[dict], path: Path, points: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs) + 1.8, 6.2), squeeze=False)
    names: list[str] = []
    for ax, run in zip(axes[0], runs):
        feats, labels, names = test_features(run["dir"], points)
        xy = tsne_2d(feats)
        for c in np.unique(labels):
            mine = labels == c
            label = names[c] if c < len(names) else str(c)
            ax.scatter(xy[mine, 0], xy[mine, 1], s=max(2.0, min(16.0, 16000 / len(labels))),
                       color=plt.cm.tab10(c % 10) if len(names) <= 10
                       else plt.cm.nipy_spectral(c / max(1, len(names) - 1)), label=label)
        ax.set_title(f"{run['name']}: t-SNE of {len(labels)} test images")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 20:  # one legend outside the panels; more classes would bury them
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", markerscale=4, fontsize=9, title="class")
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
