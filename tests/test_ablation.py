"""benchmarks/ablation_pretrain.py: every row changes what it names, rows resume and are skipped
when complete, the table is written from the complete rows."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ablation_pretrain  # noqa: E402
import main_pretrain  # noqa: E402
from datasets import synthetic  # noqa: E402
from pretrain_fixtures import TINY_MODEL  # noqa: E402


def parsed(flags):
    return vars(main_pretrain.get_args_parser().parse_args(["--data_path", "x", *flags]))


@pytest.mark.parametrize("name,factor,flags", ablation_pretrain.ROWS)
def test_each_row_changes_one_factor_of_the_demo_recipe(name, factor, flags):
    base = parsed(ablation_pretrain.BASE_RECIPE)
    row = parsed(ablation_pretrain.BASE_RECIPE + flags)
    changed = {k for k in base if base[k] != row[k]}
    if name == "base":
        assert not changed
    elif name == "chosen":  # the demo's recipe: input scale and lr together
        assert changed == {"input_scale", "blr"} and row["input_scale"] == "none"
    else:
        assert changed and changed <= {"input_scale", "window_sampling", "loss_norm", "group_by_length",
                                       "mask_ratio", "lr_schedule", "blr", "epochs", "warmup_epochs", "masking",
                                       "decoder_depth", "embed_dim"}
        assert len(changed - {"warmup_epochs"}) == 1, changed


def test_rows_resume_skip_and_table(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    synthetic.main(["--out", str(corpus), "--num_videos", "40", "--num_pretrain", "30", "--num_movies", "0",
                    "--dim", "16", "--num_scenes", "6"])
    argv = ["--out", str(tmp_path / "abl"), "--corpus", str(corpus), "--epochs", "1", "--probe_seeds", "1",
            "--num_threads", "1", "--probes", "lp_grammar", "lp_pace", "--custom", "tiny=" + " ".join(TINY_MODEL),
            "--rows", "raw", "tiny"]
    assert ablation_pretrain.main(argv) == 0
    done = tmp_path / "abl" / "rows" / "tiny" / "result.json"
    result = json.loads(done.read_text())
    assert result["recipe"][-len(TINY_MODEL):] == TINY_MODEL and result["epochs"] == 1
    assert set(result["probes"]) == {"lp_grammar", "lp_pace"} and result["val_mse_lvmae"] > 0
    mtime = done.stat().st_mtime_ns
    capsys.readouterr()
    assert ablation_pretrain.main(argv) == 0
    assert "[tiny] complete, skipped" in capsys.readouterr().out and done.stat().st_mtime_ns == mtime
    table = (tmp_path / "abl" / "ablation.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["raw", "tiny"]
    csv_rows = (tmp_path / "abl" / "ablation.csv").read_text().splitlines()
    assert csv_rows[0].startswith("row,factor,flags") and len(csv_rows) == 3
    # a changed recipe reruns the row (the pretraining continues from its checkpoint: 2 epochs)
    argv[argv.index("--epochs") + 1] = "2"
    ablation_pretrain.main(argv)
    assert json.loads(done.read_text())["epochs"] == 2


def test_the_chosen_row_is_the_demo_recipe_and_the_default():
    import re

    import models_lvmae
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    demo = re.search(r"call stage,pretraining,(.*?)\)\n", makefile, re.S).group(1)
    flags = dict(ablation_pretrain.ROWS[-1][2][i:i + 2] for i in range(0, 4, 2))
    assert ablation_pretrain.ROWS[-1][0] == "chosen"
    assert re.search(r"--blr (\S+)", demo).group(1) == flags["--blr"]
    assert "--input_scale" not in demo and models_lvmae.DEFAULT_INPUT_SCALE == flags["--input_scale"]
    for flag in ("--epochs 16", "--warmup_epochs 2", "--batch_size 16", "--model lvmae_tiny"):
        assert flag in demo and flag.split()[1] == ablation_pretrain.BASE_RECIPE[
            ablation_pretrain.BASE_RECIPE.index(flag.split()[0]) + 1]
