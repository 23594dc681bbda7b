"""torchrun (2 processes, gloo, with gradient accumulation) equals one process on the same global
batch: same items per optimizer step, the loss normalized by a count of the whole step or epoch
(never of one rank), DDP's mean undone. Both `--loss_norm epoch` and `step`; the `step` run also
pretrains on a weighted mix of two stores (--data_path A:3 B:1), whose draws are the same on
every rank."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main_pretrain
from pretrain_fixtures import TINY_MODEL, assert_optimizer_close, assert_params_close, write_store
from util.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("loss_norm,mix", [("epoch", False), ("step", True)])
def test_torchrun_two_ranks_equal_one_process(tmp_path, loss_norm, mix):
    store = write_store(tmp_path / "store", [int(n) for n in np.random.default_rng(5).integers(1, 60, size=40)])
    data = [str(store)]
    if mix:
        small = write_store(tmp_path / "small", [int(n) for n in np.random.default_rng(6).integers(2, 60, size=8)],
                            seed=1)
        data = [f"{small}:3", f"{store}:1"]
    common = ["--data_path", *data, *TINY_MODEL, "--epochs", "2", "--warmup_epochs", "1", "--blr", "5e-2",
              "--num_workers", "0", "--no_progress", "--duration_max", "200", "--val_fraction", "0.2",
              "--loss_norm", loss_norm]
    single = main_pretrain.main(common + ["--output_dir", str(tmp_path / "single"), "--batch_size", "8"])

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main_pretrain.py",
           *common, "--output_dir", str(tmp_path / "ddp"), "--batch_size", "2", "--accum_iter", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "effective batch size: 8 (= 2 x accum 2 x world 2)" in proc.stdout

    a, b = (load_checkpoint(tmp_path / run / "checkpoint-last.pth") for run in ("single", "ddp"))
    assert_params_close(a["model"], b["model"])
    assert_optimizer_close(a, b)
    ddp_log = [json.loads(line) for line in (tmp_path / "ddp" / "log.txt").read_text().splitlines()]
    for a, b in zip(single["history"], ddp_log, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["real_tokens"] == a["real_tokens"]  # the same windows, whatever the world size
        assert b["val_masked_tokens"] == a["val_masked_tokens"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b.get("mix_share") == a.get("mix_share")
        if mix:
            assert b["mix_share"][str(small)] > 0.5  # 8 of 48 videos, drawn with probability 3/4
