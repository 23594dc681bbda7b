"""export_pretrained.py and the Hub format: an exported directory gives bitwise the features and
predictions of its training checkpoint (``LVMAE.from_pretrained`` and every ``--checkpoint``),
loads strictly, keeps the data's encoder and is refused without it; the feature cache keys on the
exported files' contents; the model card lists the probe results of exactly this checkpoint."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import engine_probe
import export_pretrained
import extract_features
import main_pretrain
from models_lvmae import LVMAE
from pretrain_fixtures import TINY_MODEL, write_store
from util.checkpoint import FORMAT_VERSION, CheckpointError, checkpoint_digest, load_pretrained
from util.probe_results import write_row

LENGTHS = [int(n) for n in np.random.default_rng(3).integers(2, 40, size=24)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) pretraining run, its export, and probe results beside it."""
    root = tmp_path_factory.mktemp("export")
    store = write_store(root / "store", LENGTHS, encoder="test:tiny")
    main_pretrain.main(["--data_path", str(store), "--output_dir", str(root / "pretrain"), *TINY_MODEL,
                        "--epochs", "2", "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "8",
                        "--num_workers", "0", "--no_progress", "--duration_max", "200", "--num_patches", "32",
                        "--device", "cpu"])
    ckpt = root / "pretrain" / "checkpoint-last.pth"
    digest = checkpoint_digest(ckpt)
    mine = {"run_id": "a", "dataset": "synthetic", "task": "grammar", "probe": "ap", "backbone": "lvmae",
            "metric": "top1", "value": 61.5, "checkpoint_sha256": digest, "positions": "own", "solver": "adam"}
    write_row(root / "probe" / "results.csv", {**mine, "seed": 0})
    write_row(root / "probe" / "results.csv", {**mine, "seed": 1, "value": 63.5})
    write_row(root / "probe" / "results.csv", {**mine, "run_id": "b", "seed": 0, "task": "style", "value": 99.0,
                                               "checkpoint_sha256": "another checkpoint"})
    summary = export_pretrained.main([str(ckpt), "--out", str(root / "exported")])
    return dict(root=root, store=store, ckpt=ckpt, out=root / "exported", summary=summary)


def reference_model(ckpt_path):
    """The checkpoint read without our loader: torch.load + the constructor + a strict load."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = LVMAE(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval(), ckpt


def batch(dim=8, B=3, L=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(B, L, dim, generator=g), dim=-1)
    return x, torch.tensor([L, 11, 5]), torch.rand(B, L, generator=g)


def test_export_files_and_config(run):
    out, ckpt = run["out"], torch.load(run["ckpt"], weights_only=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert {k: cfg[k] for k in ckpt["model_config"]} == ckpt["model_config"]
    assert cfg["objective"] == "mae" and cfg["format_version"] == FORMAT_VERSION
    assert cfg["data"] == {"encoder": "test:tiny", "dim": 8, "normalized": False, "profile": "legacy"}
    assert cfg["training"]["epoch"] == 1 and cfg["training"]["args"]["epochs"] == 2
    # the checkpoint's whole model state dict, every key, bit for bit (read without our code)
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == ckpt["model"].keys()
    assert all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)
    assert not list(run["root"].glob(".exported*")), "a temporary directory was left behind"


def test_from_pretrained_gives_bitwise_equal_features_and_predictions(run):
    ref, _ = reference_model(run["ckpt"])
    hub = LVMAE.from_pretrained(run["out"])
    loaded, ckpt = load_pretrained(run["out"])
    assert ckpt["objective"] == "mae" and ckpt["epoch"] == 1 and ckpt["data"]["encoder"] == "test:tiny"
    x, lengths, noise = batch()
    with torch.no_grad():
        want_tokens, want_pad = ref.forward_features(x, lengths)
        want_loss, want_pred, want_mask = ref(x, lengths, noise=noise)
        for model in (hub, loaded):
            tokens, pad = model.forward_features(x, lengths)
            assert torch.equal(tokens, want_tokens) and torch.equal(pad, want_pad)
            loss, pred, mask = model(x, lengths, noise=noise)
            assert torch.equal(pred, want_pred) and torch.equal(mask, want_mask) and torch.equal(loss, want_loss)
    assert not hub.training and all(p.requires_grad for p in hub.parameters())  # ready to fine-tune
    assert LVMAE.from_pretrained(run["out"], max_len=64).max_len == 64  # positions recomputed


def test_save_pretrained_of_a_loaded_model_round_trips(run, tmp_path):
    model, _ = load_pretrained(run["ckpt"])
    model.save_pretrained(tmp_path / "again")
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["data"]["encoder"] == "test:tiny" and cfg["objective"] == "mae"
    back = LVMAE.from_pretrained(tmp_path / "again")
    back.save_pretrained(tmp_path / "third")  # the loaded model keeps the whole config
    assert json.loads((tmp_path / "third" / "config.json").read_text()) == cfg
    x, lengths, _ = batch()
    with torch.no_grad():
        assert torch.equal(back.forward_features(x, lengths)[0], model.forward_features(x, lengths)[0])


def test_extract_features_from_checkpoint_and_export_are_identical(run, tmp_path):
    for name, source in (("ckpt", run["ckpt"]), ("dir", run["out"])):
        extract_features.main(["--data_path", str(run["store"]), "--checkpoint", str(source), "--output_dir",
                               str(tmp_path / name), "--all_tokens", "--device", "cpu"])
    for array in ("cls", "mean", "tokens"):
        a, b = (np.load(tmp_path / name / f"{array}.npy") for name in ("ckpt", "dir"))
        assert np.array_equal(a, b), array


def test_loading_is_strict_and_names_the_directory(run, tmp_path):
    weights = load_file(run["out"] / "model.safetensors")
    extra, missing = tmp_path / "extra", tmp_path / "missing"
    for d in (extra, missing):
        shutil.copytree(run["out"], d)
    save_file({**weights, "surprise.weight": torch.zeros(2)}, extra / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "norm.weight"}, missing / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"extra.*unexpected \['surprise\.weight'\]"):
        LVMAE.from_pretrained(extra)
    with pytest.raises(CheckpointError, match=r"missing.*missing \['norm\.weight'\]"):
        load_pretrained(missing)
    wrong = tmp_path / "wrong_shape"
    shutil.copytree(run["out"], wrong)
    save_file({**weights, "norm.weight": torch.zeros(3)}, wrong / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong_shape.*weights do not match"):
        LVMAE.from_pretrained(wrong)
    assert LVMAE.from_pretrained(extra, strict=False) is not None  # only when asked


def test_config_without_the_data_encoder_is_refused(run, tmp_path):
    d = tmp_path / "no_data"
    shutil.copytree(run["out"], d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["data"]["encoder"]
    (d / "config.json").write_text(json.dumps(cfg))
    for load in (LVMAE.from_pretrained, load_pretrained):
        with pytest.raises(CheckpointError, match=r"no_data/config\.json lacks data\.encoder"):
            load(d)
    # a bare model saved without its data is refused the same way
    LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
          input_dim=8).save_pretrained(tmp_path / "bare")
    with pytest.raises(CheckpointError, match="lacks data.encoder"):
        LVMAE.from_pretrained(tmp_path / "bare")


def test_store_of_another_encoder_is_refused_for_an_export(run, tmp_path):
    other = write_store(tmp_path / "other", [5, 6], encoder="test:other")
    with pytest.raises(CheckpointError, match=r"exported was pretrained on 'test:tiny' embeddings.*'test:other'"):
        extract_features.main(["--data_path", str(other), "--checkpoint", str(run["out"]), "--output_dir",
                               str(tmp_path / "f"), "--device", "cpu"])
    assert not (tmp_path / "f").exists()


def test_feature_cache_key_covers_the_exported_files(run, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(run["out"], d)
    before = checkpoint_digest(d)
    assert before == checkpoint_digest(run["out"])  # contents, not the path
    weights = load_file(d / "model.safetensors")
    weights["norm.bias"] = weights["norm.bias"] + 1.0
    save_file(weights, d / "model.safetensors")
    after_weights = checkpoint_digest(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "input_scale": "none"}))
    assert len({before, after_weights, checkpoint_digest(d)}) == 3
    # the probe engine keys its feature cache on that digest (None would share one entry)
    from datasets.store import EmbeddingStore
    args = engine_probe.parse_args(["--dataset", "synthetic", "--task", "grammar", "--data_path", str(run["store"]),
                                    "--backbone", "lvmae", "--checkpoint", str(run["out"]), "--device", "cpu"])
    encoder = engine_probe.load_encoder(args, EmbeddingStore(run["store"]))
    assert encoder["sha256"] == checkpoint_digest(run["out"])


def test_model_card_lists_this_checkpoints_probe_results(run):
    card = (run["out"] / "README.md").read_text()
    assert "library_name: lvmae" in card and "test:tiny" in card
    row = [line for line in card.splitlines() if line.startswith("| synthetic | grammar")]
    assert len(row) == 1 and "| 62.50 |" in row[0] and row[0].endswith("| 2 |")  # mean of the two seeds
    assert "style" not in card  # another checkpoint's row
    assert run["summary"]["probe_rows"] == 2


def test_export_over_a_previous_export_replaces_it(run, tmp_path):
    out = tmp_path / "exp"
    export_pretrained.main([str(run["ckpt"]), "--out", str(out)])
    (out / "stale.txt").write_text("from before")
    export_pretrained.main([str(run["out"]), "--out", str(out)])  # an exported directory re-exports too
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert load_file(out / "model.safetensors").keys() == load_file(run["out"] / "model.safetensors").keys()
