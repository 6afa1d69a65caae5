"""Usage errors: bad input that must end a CLI with exit code 2 and one line.

docs/design.md, Contract: an unknown key, a wrong type, a missing recipe or data set
exits 2 with a single stderr line starting with ``error:`` - never a traceback.
Library code raises :class:`UsageError`; only the CLI entry points turn it into
the exit, so the library stays usable (and testable) from Python.
"""
from __future__ import annotations

import difflib
import functools
import os
import sys
from typing import Callable, Iterable, TypeVar

R = TypeVar("R")

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad user input (config, paths, data). The message is one line, no prefix."""

    exit_code = EXIT_USAGE


class TrainingFailed(Exception):
    """A run that cannot go on (a non-finite loss); exit 1, one `error:` line."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def exit_on_usage_error(main: Callable[..., R]) -> Callable[..., R]:
    """Decorate a CLI main: a UsageError becomes `error: ...` on stderr and exit 2
    (a TrainingFailed: exit 1)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UsageError, TrainingFailed) as err:
            line = f"error: {one_line(str(err))}"
            if not report_status(err.exit_code, line):
                print(line, file=sys.stderr, flush=True)
            raise SystemExit(err.exit_code) from None

    return wrapped


def report_status(code: int, line: str) -> bool:
    """Under launch.sh (SSL_BF_STATUS_FILE set): the exit status and the error line go to that
    file, and launch.sh prints the line after accelerate's own output, so the user reads the
    cause last, with its status. False when there is no such file to write."""
    path = os.environ.get("SSL_BF_STATUS_FILE")
    if not path:
        return False
    try:
        with open(path, "w") as f:
            f.write(f"{code} {line}\n")
    except OSError:
        return False
    return True


def one_line(message: str) -> str:
    """The message on one line. An error re-raised from a DataLoader worker carries
    the worker's traceback; its last line holds the original message."""
    if "Traceback (most recent call last)" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split())
