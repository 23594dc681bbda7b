"""``main_pretrain.py --compile``: training through torch.compile saves the uncompiled module's
keys (the checkpoint loads strictly into a plain LVMAE and resumes without --compile) and, with
the graph-capture-only ``eager`` backend, trains exactly like the uncompiled model."""
import numpy as np
import pytest
import torch

import main_pretrain
import models_lvmae
from pretrain_fixtures import TINY_MODEL, write_store
from util.checkpoint import load_checkpoint


@pytest.mark.slow
def test_compiled_training_saves_uncompiled_keys(tmp_path):
    store = write_store(tmp_path / "store", [int(n) for n in np.random.default_rng(3).integers(2, 30, size=12)])
    common = ["--data_path", str(store), *TINY_MODEL, "--epochs", "1", "--warmup_epochs", "1", "--num_workers", "0",
              "--no_progress", "--val_fraction", "0", "--batch_size", "6", "--keep_every", "0"]
    plain = main_pretrain.main(common + ["--output_dir", str(tmp_path / "plain")])
    compiled = main_pretrain.main(common + ["--output_dir", str(tmp_path / "compiled"), "--compile", "eager"])
    ckpt = load_checkpoint(tmp_path / "compiled" / "checkpoint-last.pth")
    model = models_lvmae.LVMAE(**ckpt["model_config"])
    assert list(ckpt["model"]) == list(model.state_dict())  # no _orig_mod. prefix
    model.load_state_dict(ckpt["model"], strict=True)
    assert compiled["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    reference = load_checkpoint(tmp_path / "plain" / "checkpoint-last.pth")["model"]
    for k, v in reference.items():
        torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # a compiled run's checkpoint resumes in a plain run (and vice versa: the keys are the same)
    resumed = main_pretrain.main(common + ["--epochs", "2", "--output_dir", str(tmp_path / "compiled")])
    assert len(resumed["history"]) == 1 and resumed["history"][0]["epoch"] == 1
