"""metrics.jsonl: one JSON object per line, appended and flushed as training goes.

Training lines carry step, epoch, loss, lr (and more); monitor lines carry
epoch and knn_top1. On resume the lines written after the checkpoint's step by
the interrupted run are dropped, so the log reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    return value


class MetricsLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def truncate_after(self, step: int) -> None:
        """Keep only lines logged at or before `step` (a resume point)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by the crash
            if row.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        """Append one line; if the write fails (a full disk), the file is cut back to
        where it was, so no half line is left, and the OSError goes on."""
        if not self.enabled:
            return
        data = (json.dumps({k: _clean(v) for k, v in row.items()}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(data):  # unbuffered: nothing is left to flush at close
                    written += os.write(fd, data[written:])
            except OSError:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

