"""The labelled splits every evaluation uses: train (bank / probe training) and test."""
from __future__ import annotations

from ssl_bf.config.schema import Config
from ssl_bf.data.pipeline import EvalDataset, eval_dataset
from ssl_bf.errors import UsageError


def eval_train_is_full(cfg: Config) -> bool:
    """data.eval_train, resolved: the whole labelled train split, or the pretraining images."""
    if cfg.data.eval_train is None:
        return cfg.data.imbalance is not None
    return cfg.data.eval_train == "full"


def labelled_splits(cfg: Config, test_subset: int | None = None) -> tuple[EvalDataset, EvalDataset]:
    """(train, test) EvalDatasets: the kNN bank / probe training set (data.eval_train: the
    whole balanced train split, or the images the run pretrains on) and the test split cut
    to `test_subset`; both must carry labels."""
    if eval_train_is_full(cfg):
        train = eval_dataset(cfg, "train")
    else:
        train = eval_dataset(cfg, "train", cfg.data.subset, cfg.data.imbalance)
    test = eval_dataset(cfg, "test", test_subset)
    for name, ds in (("train", train), ("test", test)):
        if ds.labels is None or (len(ds.labels) and ds.labels.min() < 0):
            raise UsageError(f"data.root: the {name} split of {cfg.data.root} has no labels; "
                             "evaluation needs labelled train and test splits")
    return train, test


def num_classes(*datasets: EvalDataset) -> int:
    """Classes named by the data sets (or implied by their largest label)."""
    return max(max(len(ds.load.source.classes), int(ds.labels.max()) + 1) for ds in datasets)
