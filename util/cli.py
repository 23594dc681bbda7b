"""What every command-line script shares: errors the user can act on become one line
``error: <message>`` and exit code 1 (no traceback), and numeric flags are checked when parsed.

    from util.cli import ArgumentParser, positive_int, run_cli
    ...
    if __name__ == "__main__":
        sys.exit(run_cli(main, sys.argv[1:]))

- ``UserError``: base class of the project's own errors (a store, checkpoint, annotation file,
  flag ... that cannot be used as given; the message names it). Each module keeps its own
  subclass (``StoreError``, ``CheckpointError`` ...); ``run_cli`` catches them all.
- ``ArgumentParser``: ``argparse.ArgumentParser`` whose usage errors are one line and exit 1
  like every other refusal (``--help`` prints the usage).
- ``type=`` functions: ``positive_int``, ``nonneg_int``, ``positive_float``, ``nonneg_float``,
  ``open_fraction`` (0, 1), ``fraction`` [0, 1), and ``output_dir`` / ``output_file``, which
  refuse a path that cannot be created as that kind of file before anything runs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Sequence


class UserError(Exception):
    """An input or flag that cannot be used as given; the message names the file or flag and is
    shown to the user as is (one line, no traceback)."""


class UsageError(UserError, ValueError):
    """A flag value that cannot work (e.g. a device this machine lacks); the message names the flag."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line usage errors and exit code 1."""

    def error(self, message: str):
        self.exit(1, f"error: {one_line(message)} (see --help)\n")


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def error_message(e: BaseException) -> str:
    """The user's message of ``e`` on one line. Errors raised in a DataLoader worker arrive
    wrapped with the worker's traceback; only the original message is kept."""
    text = str(e)
    if "Original Traceback" in text:
        text = text.rsplit(f"{type(e).__name__}: ", 1)[-1]
    return one_line(text) or type(e).__name__


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` as a command: returns the exit code. A ``UserError`` or a
    ``SystemExit`` carrying a message prints ``error: <message>`` on stderr and gives 1; an
    integer returned by ``main`` is its exit code (anything else: 0); Ctrl-C gives 130. Any
    other exception is a bug and keeps its traceback."""
    try:
        result = main(argv)
    except UserError as e:
        return _fail(error_message(e))
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        return _fail(one_line(e.code))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _fail(message: str) -> int:
    sys.stdout.flush()
    print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr, flush=True)
    return 1


# --- type= functions of numeric flags and output paths ---------------------------------------------
def _number(kind, value: str, ok, requirement: str):
    try:
        x = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value!r}") from None
    if not (ok(x) and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
    return x


def positive_int(value: str) -> int:
    return _number(int, value, lambda x: x >= 1, "a positive integer")


def nonneg_int(value: str) -> int:
    return _number(int, value, lambda x: x >= 0, "an integer >= 0")


def positive_float(value: str) -> float:
    return _number(float, value, lambda x: x > 0, "a number > 0")


def nonneg_float(value: str) -> float:
    return _number(float, value, lambda x: x >= 0, "a number >= 0")


def open_fraction(value: str) -> float:
    return _number(float, value, lambda x: 0 < x < 1, "in (0, 1)")


def unit_fraction(value: str) -> float:
    return _number(float, value, lambda x: 0 < x <= 1, "in (0, 1]")


def fraction(value: str) -> float:
    return _number(float, value, lambda x: 0 <= x < 1, "in [0, 1)")


def _first_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def output_dir(value: str) -> str:
    """A directory to write into: existing, or creatable (no regular file in the way)."""
    path = Path(value)
    found = _first_existing(path)
    if not found.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file, not a directory" if found == path
                                         else f"{value}: {found} is a file, not a directory")
    return value


def output_file(value: str) -> str:
    """A file to write: not an existing directory, and its directory creatable."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory, not a file")
    output_dir(str(path.parent))
    return value


# --- --device ------------------------------------------------------------------------------------
DEVICE_HELP = "auto (default: CUDA when available, else CPU), cpu, cuda, cuda:1 ..."


def resolve_device_flag(args, flag: str = "device", local_rank: int = 0, say=print) -> str:
    """``args.<flag>`` with ``auto`` resolved (``util.dist.resolve_device``; a bare ``cuda`` is
    this process's GPU), stored back as a string and printed, so a log says where a run ran."""
    from util.dist import resolve_device  # util.dist imports this module
    asked = getattr(args, flag)
    device = str(resolve_device(asked, local_rank))
    setattr(args, flag, device)
    say(f"device: {device}" + (f" (--{flag} {asked})" if asked != device else ""))
    return device
