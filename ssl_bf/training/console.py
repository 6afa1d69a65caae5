"""What a run prints: a progress bar and lines above it, on the main process only."""
from __future__ import annotations

import os
import sys


class Console:
    def __init__(self, main_process: bool):
        self.main = main_process
        self.bar = None

    def progress(self, total: int, done: int):
        """The step bar (a context manager); lines said meanwhile go above it."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done, unit="step", disable=not self.main,
                        dynamic_ncols=True, mininterval=1.0)
        return self.bar

    def show(self, **values: str) -> None:
        """Values beside the bar (loss, lr, knn), drawn at its next refresh."""
        if self.bar is not None:
            self.bar.set_postfix(**values, refresh=False)

    def say(self, message: str) -> None:
        """A line; warnings on stderr, the rest on stdout."""
        if not self.main:
            return
        stream = sys.stderr if message.startswith("warning") else sys.stdout
        try:
            if self.bar is not None:
                self.bar.write(message, file=stream)
            else:
                print(message, file=stream, flush=True)
        except BrokenPipeError:
            # Whoever read this stream is gone (a killed driver or shell): the run goes on,
            # checkpoints and exits as usual, its lines now go nowhere (the "Note on SIGPIPE"
            # of Python's signal docs: point the descriptor at devnull).
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
