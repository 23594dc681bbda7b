"""torchrun (2 processes, gloo, with gradient accumulation) equals one process on the same global
batch: same items per optimizer step, the loss normalized by a count of the whole step or epoch
(never of one rank), DDP's mean undone. Both `--loss_norm epoch` and `step`; a `step` run
pretrains on a weighted mix of two stores (--data_path A:3 B:1), whose draws are the same on
every rank, and another trains `--objective mae+contrastive`, whose InfoNCE takes its negatives
from both ranks (features gathered with their gradients): it equals one process on the doubled
micro-batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import main_pretrain
from datasets.store import EmbeddingStore
from datasets.texts import build_text_database
from pretrain_fixtures import TINY_MODEL, assert_optimizer_close, assert_params_close, write_store
from util.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent


def text_database(store, out, dim=8):
    """Texts for every video (a few shared) embedded by a seeded random 'tower'."""
    manifest = EmbeddingStore(store).manifest
    ids = EmbeddingStore(store).video_ids
    table = pd.DataFrame({"video_id": ids, "text": [f"text {i % 30}" for i in range(len(ids))]})
    vecs = {t: np.random.default_rng(int(t.split()[1])).standard_normal(dim) for t in table["text"]}
    build_text_database(table, lambda ts: np.stack([vecs[t] for t in ts]), manifest["encoder"], manifest, out,
                        progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("loss_norm,objective,mix", [("epoch", "mae", False), ("step", "mae", True),
                                                     ("step", "mae+contrastive", False)])
def test_torchrun_two_ranks_equal_one_process(tmp_path, loss_norm, objective, mix):
    store = write_store(tmp_path / "store", [int(n) for n in np.random.default_rng(5).integers(1, 60, size=40)])
    data = [str(store)]
    if mix:
        small = write_store(tmp_path / "small", [int(n) for n in np.random.default_rng(6).integers(2, 60, size=8)],
                            seed=1)
        data = [f"{small}:3", f"{store}:1"]
    common = ["--data_path", *data, *TINY_MODEL, "--epochs", "2", "--warmup_epochs", "1", "--blr", "5e-2",
              "--num_workers", "0", "--no_progress", "--duration_max", "200", "--val_fraction", "0.2",
              "--loss_norm", loss_norm, "--objective", objective]
    if objective != "mae":
        common += ["--texts", str(text_database(store, tmp_path / "texts")), "--contrastive_weight", "0.5"]
        # negatives are those of one micro-batch x world: one process on the doubled micro-batch
        single_batch = ["--batch_size", "4", "--accum_iter", "2"]
    else:
        single_batch = ["--batch_size", "8"]
    single = main_pretrain.main(common + ["--output_dir", str(tmp_path / "single"), *single_batch])

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
        if objective != "mae":
            assert b["train_contrastive"] == pytest.approx(a["train_contrastive"], rel=1e-5)
            assert b["logit_scale"] == pytest.approx(a["logit_scale"], rel=1e-6)
            assert b["val_t2v_r1"] == a["val_t2v_r1"]
