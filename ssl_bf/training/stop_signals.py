"""SIGTERM / SIGINT (what schedulers send before preempting) ask for a clean stop.

Inside `with StopSignals() as s:` the first signal only sets `s.stop`; the loop
finishes its step, writes a checkpoint and exits 0, and `train.resume=auto`
continues. A second SIGINT restores the default handler's behaviour (Ctrl-C twice).
"""
from __future__ import annotations

import signal
import threading


class StopSignals:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.stop, self.name, self._previous = False, None, {}

    def _handle(self, signum, frame) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop, self.name = True, signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
