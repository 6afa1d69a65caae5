"""The labelled splits every evaluation uses: train (bank / probe training) and test."""
from __future__ import annotations

from ssl_bf.config_schema import Config
from ssl_bf.data.pipeline import EvalDataset, eval_dataset
from ssl_bf.errors import UsageError


def labelled_splits(cfg: Config, test_subset: int | None = None) -> tuple[EvalDataset, EvalDataset]:
    """(train, test) EvalDatasets: the train split cut to data.subset (the images the
    run pretrains on), the test split to `test_subset`; both must carry labels."""
    train = eval_dataset(cfg, "train", cfg.data.subset)
    test = eval_dataset(cfg, "test", test_subset)
    for name, ds in (("train", train), ("test", test)):
        if ds.labels is None or (len(ds.labels) and ds.labels.min() < 0):
            raise UsageError(f"data.root: the {name} split of {cfg.data.root} has no labels; "
                             "evaluation needs labelled train and test splits")
    return train, test


def num_classes(*datasets: EvalDataset) -> int:
    """Classes named by the data sets (or implied by their largest label)."""
    return max(max(len(ds.load.source.classes), int(ds.labels.max()) + 1) for ds in datasets)
