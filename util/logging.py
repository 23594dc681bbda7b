"""What a training run writes besides checkpoints: ``config.json`` (resolved arguments + git
revision, at start), ``log.txt`` (one JSON line per epoch, MAE style) and TensorBoard events
(``epoch_1000x`` x-axis, so runs with different batch sizes line up). Only rank 0 writes.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from util.io import atomic_write_text

REPO = Path(__file__).resolve().parent.parent


def git_revision(repo: Path = REPO) -> dict:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the code that runs."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def jsonable(value):
    """Arguments as plain JSON types (paths become strings), for config.json and checkpoints."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_run_config(output_dir: str | Path, config: dict) -> Path:
    path = Path(output_dir) / "config.json"
    atomic_write_text(path, json.dumps(jsonable(config), indent=2) + "\n")
    return path


class JsonLog:
    """``log.txt``: one JSON object per finished epoch.

    On resume the file is rewritten (atomically) without the lines of epochs after the
    checkpoint and without a torn last line, so it always describes the saved run exactly.
    """

    def __init__(self, path: str | Path, resume_epoch: int | None = None):
        self.path = Path(path)
        if self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if resume_epoch is not None and isinstance(row, dict) and row.get("epoch", -1) <= resume_epoch:
                    kept.append(line)
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(jsonable(row)) + "\n")


def emit_json_line(result: dict, path: str | Path | None = None) -> str:
    """Print ``result`` as one JSON line (a benchmark's output) and append it to ``path`` if given."""
    line = json.dumps(result, default=str)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return line


def tensorboard_writer(output_dir: str | Path, purge_step: int | None = None):
    """A SummaryWriter over ``output_dir`` (imported lazily: TensorBoard is slow to import).
    ``purge_step``: on resume, hide the events a killed run wrote at or after this step."""
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(output_dir), purge_step=purge_step)
