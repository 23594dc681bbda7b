"""Reliability beyond bad inputs (tests/test_cli_errors.py holds those): a pretraining run killed
at any moment of an epoch's end resumes to exactly one log line per epoch and every kept
checkpoint; progress bars stay out of redirected output; ``util/`` is the ground floor; every
command's ``__main__`` goes through ``util.cli.run_cli``."""
from __future__ import annotations

import ast
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import main_pretrain
from pretrain_fixtures import TINY_MODEL, write_store
from util.checkpoint import load_checkpoint
from util.cli import run_cli
from util.logging import JsonLog

REPO = Path(__file__).resolve().parent.parent


# --- a kill at any moment of an epoch's end --------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so no `except Exception` clean-up runs."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store"), [int(n) for n in np.random.default_rng(0).integers(2, 40, 20)])


def pretrain(store, out):
    return main_pretrain.main([
        "--data_path", str(store), "--output_dir", str(out), *TINY_MODEL, "--epochs", "3", "--keep_every", "2",
        "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "8", "--num_workers", "0", "--no_progress",
        "--duration_min", "10", "--duration_max", "100"])


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    pretrain(store, out)
    return out


KILL_EPOCH = 1  # a kept epoch (--keep_every 2): its end writes checkpoint-1.pth, a log line, checkpoint-last.pth
MOMENTS = [(target, phase) for target in ("checkpoint-1.pth", "log.txt", "checkpoint-last.pth")
           for phase in ("during", "after")]


@pytest.mark.parametrize("target,phase", MOMENTS, ids=[f"{p} {t}" for t, p in MOMENTS])
def test_killed_at_an_epoch_end_resumes_to_matching_logs_and_checkpoints(store, uninterrupted, tmp_path,
                                                                          monkeypatch, target, phase):
    real_save, real_write = main_pretrain.save_checkpoint, JsonLog.write

    def save(obj, path):
        path = Path(path)
        if obj["epoch"] == KILL_EPOCH and path.name == target:
            if phase == "during":  # half of the temporary file written, not renamed
                buf = io.BytesIO()
                torch.save(obj, buf)
                path.with_name(f"{path.name}.tmp-{os.getpid()}").write_bytes(buf.getvalue()[:buf.tell() // 2])
                raise Killed
            real_save(obj, path)
            raise Killed
        real_save(obj, path)

    def write(log, row):
        if row["epoch"] == KILL_EPOCH and target == "log.txt":
            if phase == "during":  # a torn line
                with open(log.path, "a") as f:
                    f.write(json.dumps(row)[:20])
                raise Killed
            real_write(log, row)
            raise Killed
        real_write(log, row)

    monkeypatch.setattr(main_pretrain, "save_checkpoint", save)
    monkeypatch.setattr(JsonLog, "write", write)
    with pytest.raises(Killed):
        pretrain(store, tmp_path)
    monkeypatch.undo()
    pretrain(store, tmp_path)  # the rerun: the same command

    log = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pth")) == \
        ["checkpoint-1.pth", "checkpoint-2.pth", "checkpoint-last.pth"]
    for name in ("checkpoint-1.pth", "checkpoint-last.pth"):  # bitwise what the uninterrupted run saved
        a, b = load_checkpoint(uninterrupted / name), load_checkpoint(tmp_path / name)
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    full_log = [json.loads(line) for line in (uninterrupted / "log.txt").read_text().splitlines()]
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in full_log]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_nothing_left_on_error_only_clears_a_fresh_directory_without_a_result(tmp_path):
    from util.io import nothing_left_on_error

    def refused(directory, *files, error=ValueError):
        with pytest.raises(error):
            with nothing_left_on_error(directory, unless="result-*"):
                directory.mkdir(exist_ok=True)
                for f in files:
                    (directory / f).write_text("x")
                raise error("refused")

    refused(tmp_path / "fresh", "config.json", "log.txt")
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "config.json")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    refused(tmp_path / "used", "config.json")  # not fresh: nothing is touched
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["config.json", "notes.txt"]
    refused(tmp_path / "result", "config.json", "result-0")  # a result exists: everything stays
    assert sorted(p.name for p in (tmp_path / "result").iterdir()) == ["config.json", "result-0"]
    refused(tmp_path / "interrupted", "config.json", error=KeyboardInterrupt)
    assert (tmp_path / "interrupted" / "config.json").is_file()


# --- progress bars on a terminal only ----------------------------------------------------------------
def test_progress_bars_stay_out_of_redirected_output(tmp_path, capsys):
    """The CLIs with bars, run with stderr redirected (as in a log file): no bar is written."""
    from datasets import captions, synthetic
    from datasets.store import EmbeddingStore
    from models_lvmae import LVMAE
    from util.checkpoint import save_checkpoint

    import engine_probe
    import extract_features
    import interpret

    corpus = tmp_path / "corpus"
    synthetic.main(["--out", str(corpus), "--num_videos", "12", "--num_pretrain", "0", "--num_movies", "0",
                    "--dim", "16", "--num_scenes", "6"])
    store = EmbeddingStore(corpus / "benchmark")
    model = LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                  max_len=16, input_dim=16)
    ckpt = tmp_path / "ckpt.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {},
                     "data": {"encoder": store.manifest["encoder"], "dim": 16, "normalized": True}}, ckpt)
    table = captions.read_caption_table(corpus / "captions.csv", store)
    captions.build_database(table, lambda texts: np.random.default_rng(0).standard_normal((len(texts), 16)),
                            store.manifest["encoder"], store.manifest, tmp_path / "db")
    capsys.readouterr()
    for main, argv in [
        (lambda a: engine_probe.main(a, "ap"), ["--dataset", "synthetic", "--annotations", str(corpus / "tasks"),
                                                "--task", "grammar", "--data_path", str(corpus / "benchmark"),
                                                "--checkpoint", str(ckpt), "--epochs", "2",
                                                "--output_dir", str(tmp_path / "probe")]),
        (interpret.main, ["--data_path", str(corpus / "benchmark"), "--captions", str(tmp_path / "db"),
                          "--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "interpret"), "--num_videos", "4",
                          "--batch_size", "2", "--no_thumbnails", "--device", "cpu"]),
        (extract_features.main, ["--data_path", str(corpus / "benchmark"), "--checkpoint", str(ckpt),
                                 "--output_dir", str(tmp_path / "features"), "--chunk_videos", "4", "--device", "cpu"]),
        (synthetic.main, ["--out", str(tmp_path / "corpus2"), "--num_videos", "4", "--num_pretrain", "0",
                          "--num_movies", "0", "--dim", "8", "--num_scenes", "4", "--num_grammars", "2"]),
    ]:
        assert run_cli(main, argv) == 0
        err = capsys.readouterr().err
        assert "\r" not in err and "it/s" not in err and "%|" not in err, err[-500:]


# --- structure ---------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports, anywhere in the file (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _project_file(module: str) -> Path | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:n])
        for f in (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file() and ".venv" not in f.parts:
                return f
    return None


def test_util_is_the_ground_floor():
    """No util module imports datasets/, preprocessing/ or a script, directly or through another
    project module: util may use only util and the model definitions (models_*.py)."""
    util_files = sorted((REPO / "util").glob("*.py"))
    assert len(util_files) > 5
    for start in util_files:
        seen, todo = {start}, [start]
        while todo:
            f = todo.pop()
            for module in _imports(f):
                dep = _project_file(module)
                if dep is None or dep in seen:
                    continue
                rel = dep.relative_to(REPO)
                assert rel.parts[0] == "util" or (len(rel.parts) == 1 and rel.name.startswith("models_")), \
                    f"{start.relative_to(REPO)} imports {module} ({rel}) via {f.relative_to(REPO)}"
                seen.add(dep)
                todo.append(dep)


def _main_blocks():
    for f in sorted(REPO.glob("*.py")) + sorted(REPO.glob("datasets/*.py")) + sorted(REPO.glob("preprocessing/*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                yield f, ast.unparse(node)


def test_every_command_goes_through_run_cli():
    blocks = list(_main_blocks())
    assert len(blocks) >= 14
    engine_cli = ast.unparse(next(n for n in ast.parse((REPO / "engine_probe.py").read_text()).body
                                  if isinstance(n, ast.FunctionDef) and n.name == "cli"))
    assert "run_cli(" in engine_cli
    for f, block in blocks:
        assert "sys.exit(run_cli(" in block or block.strip().endswith(("cli('ap')", "cli('lp')")), \
            f"{f.relative_to(REPO)}: {block}"
