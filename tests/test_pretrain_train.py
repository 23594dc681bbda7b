"""main_pretrain / engine_pretrain in-process: accumulation, exact resume, refusals, the authors'
command line, non-finite losses, and the demo's pipeline on a tiny synthetic corpus."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import main_pretrain
import models_lvmae
from datasets.pretrain import PretrainWindows, StepBatchSampler, collate_windows
from datasets.store import EmbeddingStore, StoreError
from engine_pretrain import NonFiniteLossError, train_one_epoch
from pretrain_fixtures import TINY_MODEL, assert_optimizer_close, assert_params_close, write_store
from util.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, load_pretrained

LENGTHS = [int(n) for n in np.random.default_rng(0).integers(1, 60, size=40)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store"), LENGTHS)


def run(store, out, *extra, epochs=2):
    argv = ["--data_path", str(store), "--output_dir", str(out), *TINY_MODEL, "--epochs", str(epochs),
            "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "8", "--num_workers", "0", "--no_progress",
            "--duration_min", "10", "--duration_max", "200", *extra]
    return main_pretrain.main(argv)


@pytest.mark.parametrize("loss_norm", ["epoch", "step"])
def test_accumulation_equals_a_larger_batch(store, tmp_path, loss_norm):
    big = run(store, tmp_path / "big", "--batch_size", "8", "--loss_norm", loss_norm)
    acc = run(store, tmp_path / "acc", "--batch_size", "4", "--accum_iter", "2", "--loss_norm", loss_norm)
    ca, cb = (load_checkpoint(tmp_path / run / "checkpoint-last.pth") for run in ("big", "acc"))
    a = ca["model"]
    assert_params_close(a, cb["model"])
    assert_optimizer_close(ca, cb)
    assert acc["train_loss"] == pytest.approx(big["train_loss"], rel=1e-5)
    assert acc["val_loss"] == pytest.approx(big["val_loss"], rel=1e-4)
    # and the weights moved: the comparison is not between two untouched inits
    init = models_lvmae.LVMAE(**load_checkpoint(tmp_path / "big" / "checkpoint-last.pth")["model_config"])
    assert not torch.equal(init.state_dict()["blocks.0.attn.qkv.weight"], a["blocks.0.attn.qkv.weight"])


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(store, tmp_path):
    full = run(store, tmp_path / "full", "--keep_every", "1", epochs=3)
    # "killed" after epoch 0: only that epoch's checkpoint (and a torn log line) survive
    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "full" / "checkpoint-0.pth", tmp_path / "cut" / "checkpoint-last.pth")
    first = (tmp_path / "full" / "log.txt").read_text().splitlines()[0]
    (tmp_path / "cut" / "log.txt").write_text(first + "\n" + '{"epoch": 1, "train_lo')
    (tmp_path / "cut" / "checkpoint-last.pth.tmp-999").write_bytes(b"half a checkpoint")
    # resumed with data-loading workers: windows are keyed by (seed, epoch, index), not by worker
    resumed = run(store, tmp_path / "cut", "--num_workers", "1", epochs=3)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint-last.pth"), load_checkpoint(tmp_path / "cut" / "checkpoint-last.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (sa, sb) in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"][1:]]
    assert not list((tmp_path / "cut").glob("*.tmp-*"))
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    # a finished run resumed again trains nothing and reports the same validation numbers
    again = run(store, tmp_path / "cut", epochs=3)
    assert again["history"] == [] and again["val_loss"] == resumed["val_loss"]


def test_resume_refuses_another_model_config_and_non_checkpoints(store, tmp_path):
    run(store, tmp_path / "a", epochs=1)
    with pytest.raises(CheckpointError, match=r"depth: checkpoint 1 vs now 2") as e:
        run(store, tmp_path / "a", "--depth", "2", epochs=2)
    assert str(tmp_path / "a" / "checkpoint-last.pth") in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(junk)):
        run(store, tmp_path / "b", "--resume", str(junk))
    with pytest.raises(CheckpointError, match="does not exist"):
        run(store, tmp_path / "b", "--resume", str(tmp_path / "missing.pth"))


def test_resume_takes_unset_run_flags_from_the_checkpoint(store, tmp_path):
    """--input_scale, --loss_norm, --short_videos, --window_sampling and --lr_schedule left out on
    resume continue the checkpoint's run (a later default cannot change a run half-way); given and
    different, --input_scale is refused like any model change."""
    run(store, tmp_path / "a", "--input_scale", "none", "--loss_norm", "authors", "--short_videos", "authors",
        "--window_sampling", "segments", "--lr_schedule", "constant", epochs=1)
    run(store, tmp_path / "a", epochs=2)
    args = json.loads((tmp_path / "a" / "config.json").read_text())["args"]
    assert (args["input_scale"], args["loss_norm"], args["short_videos"]) == ("none", "authors", "authors")
    assert (args["window_sampling"], args["lr_schedule"]) == ("segments", "constant")
    log = [json.loads(line) for line in (tmp_path / "a" / "log.txt").read_text().splitlines()]
    assert log[-1]["lr"] == pytest.approx(args["lr"])  # constant after the warmup, even at the last step
    assert load_checkpoint(tmp_path / "a" / "checkpoint-last.pth")["model_config"]["input_scale"] == "none"
    with pytest.raises(CheckpointError, match=r"input_scale: checkpoint 'none' vs now 'sqrt_dim'"):
        run(store, tmp_path / "a", "--input_scale", "sqrt_dim", epochs=3)
    # a new run takes the defaults
    run(store, tmp_path / "b", epochs=1)
    args = json.loads((tmp_path / "b" / "config.json").read_text())["args"]
    assert (args["input_scale"], args["loss_norm"], args["short_videos"]) == (
        models_lvmae.DEFAULT_INPUT_SCALE, "epoch", "drop")
    assert (args["window_sampling"], args["lr_schedule"]) == ("duration", "cosine")


def test_checkpoints_written_before_format_version_load_and_resume(store, tmp_path):
    """A version-0 file (no format_version, model_config without input_scale, args without
    loss_norm) is what every earlier run wrote: it loads as the sqrt(D) model it was trained as and
    resumes with the per-step normalization it used. A newer version is refused naming the file."""
    run(store, tmp_path, "--input_scale", "sqrt_dim", "--loss_norm", "step", epochs=1)
    path = tmp_path / "checkpoint-last.pth"
    ckpt = torch.load(path, weights_only=True)
    model_before, _ = load_pretrained(path)
    legacy = {k: v for k, v in ckpt.items() if k != "format_version"}
    legacy["model_config"] = {k: v for k, v in ckpt["model_config"].items() if k != "input_scale"}
    legacy["args"] = {k: v for k, v in ckpt["args"].items() if k not in ("input_scale", "loss_norm", "short_videos")}
    legacy["data"] = {k: v for k, v in ckpt["data"].items() if k != "profile"}
    torch.save(legacy, path)
    model, loaded = load_pretrained(path)
    assert model.input_scale == "sqrt_dim" and loaded["data"]["profile"] == "legacy"
    x, lengths = torch.randn(2, 9, 8), torch.tensor([9, 4])
    torch.testing.assert_close(model.forward_features(x, lengths), model_before.forward_features(x, lengths))
    run(store, tmp_path, epochs=2)
    args = json.loads((tmp_path / "config.json").read_text())["args"]
    assert (args["input_scale"], args["loss_norm"]) == ("sqrt_dim", "step")
    future = {**torch.load(path, weights_only=True), "format_version": FORMAT_VERSION + 1}
    torch.save(future, tmp_path / "future.pth")
    with pytest.raises(CheckpointError, match=rf"future.pth has checkpoint format_version {FORMAT_VERSION + 1}"):
        load_pretrained(tmp_path / "future.pth")


def test_checkpoint_contents_are_the_design_dict(store, tmp_path):
    result = run(store, tmp_path, "--keep_every", "2", epochs=3)
    ckpt = torch.load(tmp_path / "checkpoint-last.pth", weights_only=True)  # the file as written
    assert set(ckpt) == {"format_version", "model", "optimizer", "scaler", "epoch", "args", "model_config", "data",
                         "rng", "objective"}
    assert ckpt["objective"] == ckpt["model_config"]["objective"] == "mae"
    assert ckpt["format_version"] == FORMAT_VERSION
    profile = EmbeddingStore(store).manifest.get("profile", "legacy")
    assert ckpt["epoch"] == 2 and ckpt["data"] == {"encoder": "test:tiny", "dim": 8, "normalized": False,
                                                   "profile": profile}
    assert (ckpt["args"]["loss_norm"], ckpt["args"]["short_videos"]) == ("epoch", "drop")
    json.dumps(ckpt["args"])
    assert ckpt["model_config"] == models_lvmae.preset_config(
        "lvmae_tiny", embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
        decoder_num_heads=2, input_dim=8)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pth")) == [
        "checkpoint-1.pth", "checkpoint-2.pth", "checkpoint-last.pth"]
    model, _ = load_pretrained(tmp_path / "checkpoint-last.pth", input_dim=8)
    assert torch.equal(model.state_dict()["norm.weight"], ckpt["model"]["norm.weight"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["args"]["blr"] == 5e-2 and config["effective_batch_size"] == 8 and "commit" in config["git"]
    assert config["args"]["lr"] == pytest.approx(5e-2 * 8 / 256)
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 3
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert result["checkpoint"] == str(tmp_path / "checkpoint-last.pth")


def test_bad_inputs_name_the_file(store, tmp_path):
    with pytest.raises(StoreError, match=str(tmp_path / "nowhere")):
        run(tmp_path / "nowhere", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="manifest.json is missing"):
        run(tmp_path / "empty", tmp_path / "o")
    other = write_store(tmp_path / "other", [5, 6], dim=4)
    with pytest.raises(StoreError, match="disagree on dim"):
        main_pretrain.main(["--data_path", str(store), str(other), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(main_pretrain.ConfigError, match=r"--input_size 1024 .* 8-d"):
        run(store, tmp_path / "o", "--input_size", "1024")
    with pytest.raises(SystemExit):
        main_pretrain.main(["--output_dir", str(tmp_path / "o")])  # --data_path is required
    # a stored vector that is not finite: the error names the video and the shard
    bad = write_store(tmp_path / "bad", [6] * 8)
    shard = next((bad / "shards").glob("*.npy"))
    arr = np.load(shard, mmap_mode="r+")
    arr[20, 3] = np.nan  # video v003, segment 2
    arr.flush()
    del arr
    with pytest.raises(StoreError, match=rf"v003.*segment 2.*{shard.name}.*not finite"):
        run(bad, tmp_path / "o2", "--val_fraction", "0", "--duration_min", "30", "--duration_max", "30")


def test_bf16_autocast_runs_on_cpu(store, tmp_path):
    result = run(store, tmp_path, "--amp", "bf16", epochs=1)
    assert np.isfinite(result["train_loss"]) and np.isfinite(result["val_loss"])
    assert json.loads((tmp_path / "config.json").read_text())["args"]["amp"] == "bf16"


def test_mask_ratio_is_validated_at_parse_time(capsys):
    with pytest.raises(SystemExit):
        main_pretrain.main(["--data_path", "x", "--mask_ratio", "1.5"])
    assert "--mask_ratio: must be in [0, 1)" in capsys.readouterr().err  # (0, 1) for mae: checked at start


def test_authors_command_line_builds_the_d32_model():
    argv = ("--batch_size 16 --dataset combined --decoder_depth 8 --decoder_embed_dim 512 --decoder_num_heads 16 "
            "--depth 32 --epochs 151 --input_size 1024 --mask_ratio .5 --num_heads 16 --num_patches 256 "
            "--distributed --world_size 8 --masking_strategy --data_path store").split()
    parser = main_pretrain.get_args_parser()
    args = parser.parse_args(argv)
    assert main_pretrain.resolve_masking(args) == "semantic"
    assert (args.batch_size, args.epochs, args.mask_ratio, args.dataset) == (16, 151, 0.5, "combined")
    cfg = main_pretrain.model_config(args, store_dim=1024, store_name="store")
    assert cfg == models_lvmae.preset_config("lvmae_d32", input_dim=1024, max_len=256)
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (1024, 32, 16)
    assert (cfg["decoder_embed_dim"], cfg["decoder_depth"], cfg["decoder_num_heads"]) == (512, 8, 16)
    with pytest.raises(main_pretrain.ConfigError, match="--masking_strategy"):
        main_pretrain.resolve_masking(parser.parse_args(argv + ["--masking", "random"]))
    # explicit flags override a preset
    small = parser.parse_args(["--data_path", "s", "--model", "lvmae_tiny", "--depth", "3"])
    assert main_pretrain.model_config(small, 8, "s")["depth"] == 3


def test_non_finite_loss_stops_with_the_step_and_videos(store):
    ds = PretrainWindows(EmbeddingStore(store), max_len=64)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(ds.window_lengths, len(ds), 4),
                                         collate_fn=collate_windows)
    model = models_lvmae.LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                               decoder_num_heads=2, max_len=64, input_dim=8)
    with torch.no_grad():
        model.decoder_pred.bias[0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = SimpleNamespace(accum_iter=1, mask_ratio=0.5, masking="random", cos_loss=False, loss_norm="epoch", amp="none",
                           lr=1e-3,
                           min_lr=0.0, warmup_epochs=0, epochs=1)
    first = next(iter(loader))["video_id"]
    with pytest.raises(NonFiniteLossError, match=rf"epoch 0, step 0.*{first[0]}.*{first[-1]}"):
        train_one_epoch(model, loader, optimizer, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"),
                        0, args, show_progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k], ) or torch.isnan(before[k]).any() for k in before)


def test_demo_pipeline_on_a_tiny_corpus(tmp_path):
    """The `make demo` commands at toy scale: synthetic corpus -> pretraining -> baselines."""
    from datasets import synthetic
    synthetic.main(["--out", str(tmp_path / "corpus"), "--num_videos", "10", "--num_pretrain", "60",
                    "--num_movies", "1", "--dim", "16"])
    result = main_pretrain.main([
        "--data_path", str(tmp_path / "corpus" / "pretrain"), "--output_dir", str(tmp_path / "run"), *TINY_MODEL,
        "--epochs", "2", "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "8", "--num_workers", "0",
        "--masking_strategy", "--no_progress", "--val_data_path", str(tmp_path / "corpus" / "benchmark")])
    keys = ("train_loss", "val_loss", "val_mse_lvmae", "val_mse_nearest_visible", "val_mse_mean_visible")
    assert all(np.isfinite(result[k]) for k in keys)
    assert len(result["history"]) == 2
    # every masked segment of the 10 held-out videos (fixed windows, semantic masks) is scored
    val = EmbeddingStore(tmp_path / "corpus" / "benchmark")
    ds = PretrainWindows(val, max_len=256)
    n = torch.as_tensor(ds.window_lengths(None))
    assert result["val_masked_tokens"] == int((n - models_lvmae.num_visible(n, 0.5)).sum()) > 0
    assert (tmp_path / "run" / "checkpoint-last.pth").is_file()
