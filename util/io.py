"""Atomic file writes, and clearing what they leave behind when a process dies mid-write.

Every file this project writes that something else reads (store shards and indexes, manifests,
configs, logs rewritten on resume, results, reports) goes through ``<path>.tmp-<pid>`` + fsync +
``os.replace``: a reader, or a rerun after a kill, sees the whole new file or the old one (or
none), never half of one. A kill between the write and the rename leaves only the ``.tmp-<pid>``
file, which no reader opens and ``remove_orphans`` clears on the next run.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def tmp_path(path: str | Path) -> Path:
    """The temporary name ``path`` is written under by this process."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | Path, write: Callable) -> None:
    """Call ``write(f)`` on a binary file object, then fsync and rename it to ``path``, so ``path``
    is whole or absent."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)  # an error, unlike a kill, can clean up after itself
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def remove_orphans(directory: str | Path, prefix: str = "") -> list[Path]:
    """Delete the ``<prefix>*.tmp-<pid>`` files of writes cut short by a kill in ``directory``;
    returns them. ``prefix`` limits this to one writer's files when several write one directory
    concurrently (another live writer's temporary files must not be touched)."""
    removed = []
    for orphan in sorted(Path(directory).glob(f"{prefix}*.tmp-*")):
        if orphan.is_file() and orphan.name.rsplit(".tmp-", 1)[1].isdigit():
            orphan.unlink(missing_ok=True)
            removed.append(orphan)
    return removed


@contextmanager
def nothing_left_on_error(directory: str | Path, unless: str) -> Iterator[None]:
    """A run refused before it produced anything leaves its fresh output ``directory`` as it
    found it: absent or empty.

    If ``directory`` is absent or empty when the block starts, and the block is refused (an
    ``Exception``, or ``SystemExit`` with a message) while ``directory`` holds no file matching
    the glob ``unless`` (the run's result, e.g. ``checkpoint-*.pth``), everything in it is
    removed, and ``directory`` itself if the block created it. Ctrl-C (and of course a kill)
    leaves everything, and so does a directory that held anything before: those files may be
    someone else's. Only for directories that one process writes.
    """
    directory = Path(directory)
    existed = directory.is_dir()
    fresh = not existed or not any(directory.iterdir())
    try:
        yield
    except (Exception, SystemExit) as e:
        refused = not isinstance(e, SystemExit) or e.code not in (None, 0)
        if fresh and refused and directory.is_dir() and not any(directory.glob(unless)):
            for entry in list(directory.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed:
                try:
                    directory.rmdir()
                except OSError:
                    pass  # something else is writing there too
        raise


def atomic_save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """``fig.savefig`` under a temporary name, then renamed into place (a matplotlib figure;
    the format follows ``path``'s suffix); the figure is closed."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def read_json(path: str | Path, error: type[Exception] = ValueError, missing: str | None = None):
    """The JSON value in ``path``. A missing file (message ``missing``, default "<path> does not
    exist"), invalid JSON (its line and column) or non-UTF-8 bytes raise ``error`` with a
    one-line message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text ({e})") from None
