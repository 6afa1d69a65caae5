"""ssl_bf/pretrain.py with faults and stand-ins switched on from the environment, for the
multi-process tests of tests/test_scaling_out.py (each process of a launch reads them):

    STAND_IN_URL, STAND_IN_MD5S, STAND_IN_COUNT   torchvision's CIFAR-10 download points at a
        local archive (URL, checksums as JSON); every download-and-extract call appends a
        line to the STAND_IN_COUNT file
    RANK1_SEES_CHECKPOINT=PATH   on rank 1, the latest checkpoint of a run is PATH (a stale
        cache or a node-local copy that shows another `last`)
    RANK1_LOADS_CHECKPOINT=PATH  on rank 1, loading a checkpoint reads PATH instead
    FAIL_METRICS_AFTER=N         on rank 0, the metrics.jsonl write after the N-th fails as a
        full disk does
"""
import errno
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RANK = int(os.environ.get("RANK", "0"))


def stand_in_download() -> None:
    import torchvision.datasets.cifar as cifar

    md5s = json.loads(os.environ["STAND_IN_MD5S"])
    cifar.CIFAR10.url = os.environ["STAND_IN_URL"]
    cifar.CIFAR10.tgz_md5 = md5s["archive"]
    cifar.CIFAR10.train_list = [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)]
    cifar.CIFAR10.test_list = [["test_batch", md5s["test_batch"]]]
    cifar.CIFAR10.meta = {**cifar.CIFAR10.meta, "md5": md5s["batches.meta"]}
    fetch = cifar.download_and_extract_archive

    def counted(*args, **kwargs):
        with open(os.environ["STAND_IN_COUNT"], "a") as f:
            f.write(f"{os.getpid()}\n")
        return fetch(*args, **kwargs)

    cifar.download_and_extract_archive = counted


def rank1_sees(path: str) -> None:
    import ssl_bf.rundir.checkpoint as checkpoint

    checkpoint.find_latest = lambda root: Path(path)


def rank1_loads(path: str) -> None:
    import ssl_bf.training.state_io as state_io

    load = state_io.load_checkpoint
    state_io.load_checkpoint = lambda _path: load(path)


def fail_metrics_after(n: int) -> None:
    from ssl_bf.rundir.run_log import MetricsLog

    write, calls = MetricsLog.write, [0]

    def failing(self, row):
        calls[0] += 1
        if calls[0] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, row)

    MetricsLog.write = failing


if "STAND_IN_URL" in os.environ:
    stand_in_download()
if RANK == 1 and "RANK1_SEES_CHECKPOINT" in os.environ:
    rank1_sees(os.environ["RANK1_SEES_CHECKPOINT"])
if RANK == 1 and "RANK1_LOADS_CHECKPOINT" in os.environ:
    rank1_loads(os.environ["RANK1_LOADS_CHECKPOINT"])
if RANK == 0 and "FAIL_METRICS_AFTER" in os.environ:
    fail_metrics_after(int(os.environ["FAIL_METRICS_AFTER"]))

from ssl_bf.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
