"""Run an action on the main process and give every process its outcome.

Writes to the run directory happen on the main process only. If one fails there while the
other processes go on into the next collective, they wait for a partner that never comes
until the launcher's watchdog ends them - and the user reads the timeout, not the cause. So
the outcome (a value, or the error with its message) is broadcast, and every process returns
the same value or raises the same error at once.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from accelerate.utils import broadcast_object_list, gather_object

from ssl_bf.errors import TrainingFailed, UsageError

T = TypeVar("T")
ERRORS = {"usage": UsageError, "failed": TrainingFailed}


def on_main(accelerator, action: Callable[[], T]) -> T:
    """`action()` on the main process; its result (picklable) or its UsageError /
    TrainingFailed on every process."""
    outcome: list = [None, None]  # (error kind or None, result or message)
    if accelerator.is_main_process:
        try:
            outcome[1] = action()
        except UsageError as err:
            outcome = ["usage", str(err)]
        except TrainingFailed as err:
            outcome = ["failed", str(err)]
    if accelerator.num_processes > 1:
        outcome = broadcast_object_list(outcome, from_process=0)
    if outcome[0] is not None:
        raise ERRORS[outcome[0]](outcome[1])
    return outcome[1]


def on_each_node(accelerator, action: Callable[[], None]) -> None:
    """`action()` on the main process, then on the first process of every other node (for
    what lives on node-local disks: a no-op there when the main process already did it on
    shared storage); every process raises the first error any of them met."""
    on_main(accelerator, action)
    if accelerator.num_processes == 1:
        return
    outcome: list = [None, None]
    if accelerator.is_local_main_process and not accelerator.is_main_process:
        try:
            action()
        except UsageError as err:
            outcome = ["usage", str(err)]
        except TrainingFailed as err:
            outcome = ["failed", str(err)]
    failed = [o for o in gather_object([outcome]) if o[0] is not None]
    if failed:
        raise ERRORS[failed[0][0]](failed[0][1])
