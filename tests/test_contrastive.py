"""Masked video-text contrastive pretraining (issue "Masked contrastive I"): the InfoNCE against
a hand computation, duplicates not negatives, masking of the encoder's tokens, the text head,
the text database, the synthetic texts, and the training entry point (paired data, --init,
--train_last_k, exact resume, checkpoint upgrade). The 2-process equality is in
tests/test_pretrain_ddp.py."""
import hashlib
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import extract_features
import main_pretrain
from datasets import synthetic
from datasets.store import EmbeddingStore
from datasets.captions import CaptionError
from datasets.texts import TextDatabase, TextError, build_text_database, read_text_table
from models_lvmae import LOGIT_SCALE_INIT, LVMAE
from pretrain_fixtures import TINY_MODEL, write_store
from util.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from util.contrastive import info_nce

DIM = 8


def fake_tower(dim=DIM):
    """A deterministic 'text tower': a unit vector seeded by the text's hash."""
    def encode(texts):
        out = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:12], 16)).standard_normal(dim)
               for t in texts]
        return np.stack(out).astype(np.float32)
    return encode


def hand_info_nce(v, t, scale, excluded=()):
    """Symmetric InfoNCE by loops over plain floats; ``excluded``: (i, j) pairs left out."""
    B = len(v)
    sim = [[scale * sum(a * b for a, b in zip(v[i], t[j])) for j in range(B)] for i in range(B)]
    total = 0.0
    for i in range(B):
        row = [sim[i][j] for j in range(B) if j == i or (i, j) not in excluded]
        col = [sim[j][i] for j in range(B) if j == i or (j, i) not in excluded]
        total += -sim[i][i] + math.log(sum(math.exp(s) for s in row))
        total += -sim[i][i] + math.log(sum(math.exp(s) for s in col))
    return total / (2 * B)


def unit(n, d, seed):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)))
    return x / x.norm(dim=1, keepdim=True)


def test_info_nce_matches_a_hand_computation():
    v, t = unit(5, 4, 0), unit(5, 4, 1)
    got = info_nce(v, t, torch.tensor(7.5, dtype=torch.float64))
    assert got.item() == pytest.approx(hand_info_nce(v.tolist(), t.tolist(), 7.5), rel=1e-6)


def test_pairs_sharing_a_video_or_a_text_are_not_negatives():
    v, t = unit(5, 4, 2), unit(5, 4, 3)
    video_keys = torch.tensor([0, 1, 0, 2, 3])  # items 0 and 2: the same video repeated by the sampler
    text_keys = torch.tensor([0, 1, 2, 3, 1])   # items 1 and 4: the same text
    got = info_nce(v, t, torch.tensor(5.0, dtype=torch.float64), video_keys, text_keys)
    excluded = {(0, 2), (2, 0), (1, 4), (4, 1)}
    assert got.item() == pytest.approx(hand_info_nce(v.tolist(), t.tolist(), 5.0, excluded), rel=1e-6)
    # moving the duplicate's text changes nothing for the other copy's row or column
    t2 = t.clone()
    t2[2] = unit(1, 4, 9)[0]
    a = info_nce(v, t, torch.tensor(5.0, dtype=torch.float64), video_keys, text_keys)
    assert got.item() != pytest.approx(info_nce(v, t, torch.tensor(5.0, dtype=torch.float64)).item())
    assert a.item() == pytest.approx(got.item())


def tiny(objective="contrastive", **kw):
    torch.manual_seed(0)
    return LVMAE(embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                 max_len=32, input_dim=DIM, objective=objective, text_dim=6 if objective != "mae" else None, **kw)


def test_masking_reduces_the_encoders_tokens_and_ratio_0_is_the_unmasked_encoder():
    model = tiny().eval()
    lengths = torch.tensor([12, 4, 1])
    x = torch.randn(3, 12, DIM)
    seen = []
    hook = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with torch.no_grad():
        _, _, mask, _, _ = model(x, lengths, mask_ratio=0.75, with_embedding=True)
        # int(n * 0.25), at least 1: 3, 1, 1 visible -> the encoder sees [CLS] + 3 tokens
        assert mask.sum(1).tolist() == [9, 3, 0] and seen[-1] == 1 + 3
        _, _, mask0, emb0, scale = model(x, lengths, mask_ratio=0.0, with_embedding=True)
        assert not mask0.any() and seen[-1] == 1 + 12
        pad = torch.arange(12)[None] >= lengths[:, None]
        torch.testing.assert_close(emb0, model.text_space_embedding(x, pad), rtol=0, atol=0)
    hook.remove()
    assert scale.item() == pytest.approx(1 / 0.07)
    # the embedding ignores padding and is unit norm; [CLS] pooling is another function
    with torch.no_grad():
        short = model.text_space_embedding(x[1:2, :4], torch.zeros(1, 4, dtype=torch.bool))
        torch.testing.assert_close(short[0], emb0[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(emb0.norm(dim=1), torch.ones(3))
        cls = tiny(pooling="cls").eval().text_space_embedding(x, pad)
    assert not torch.allclose(cls, emb0)


def test_contrastive_model_has_no_decoder_and_every_parameter_gets_a_gradient():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.startswith(("decoder", "mask_token"))]
    assert model.config["objective"] == "contrastive" and model.logit_scale.item() == pytest.approx(LOGIT_SCALE_INIT)
    _, _, _, emb, scale = model(torch.randn(4, 6, DIM), torch.tensor([6, 5, 2, 1]), mask_ratio=0.5,
                                with_embedding=True)
    info_nce(emb, unit(4, 6, 0).float(), scale).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n != "cls_token"), [n for n, p in model.named_parameters() if p.grad is None]
    # the scale is clamped at 100
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(torch.randn(2, 3, DIM), torch.tensor([3, 2]), with_embedding=True)[4].item() == 100.0
    both = tiny("mae+contrastive")
    assert {"decoder_embed.weight", "text_proj.weight", "logit_scale"} <= set(dict(both.named_parameters()))


# --- the text database ------------------------------------------------------------------------
def write_texts(path, rows):
    pd.DataFrame(rows, columns=["video_id", "text"]).to_csv(path, index=False)
    return path


def test_text_database_round_trip_truncation_and_refusals(tmp_path):
    store = write_store(tmp_path / "store", [3, 1, 5], dim=DIM)
    manifest = EmbeddingStore(store).manifest
    table = read_text_table(write_texts(tmp_path / "t.csv", [("v000", "a dog"), ("v001", " a cat "),
                                                               ("v002", "a dog"), ("v000", "a dog"),
                                                               ("nope", "a very long text indeed")]))
    assert table["text"].tolist() == ["a dog", "a cat", "a dog", "a very long text indeed"]
    meta = build_text_database(table, fake_tower(), manifest["encoder"], manifest, tmp_path / "db",
                               count_tokens=lambda ts: [len(t.split()) for t in ts], max_length=3,
                               unknown_ids=["nope"], progress=False)
    assert meta["num_truncated"] == 1 and meta["num_texts"] == 3 and meta["num_ids"] == 4
    db = TextDatabase(tmp_path / "db")
    assert db.ids == ["v000", "v001", "v002", "nope"] and db.texts[db.index("v002")] == "a dog"
    assert db.text_ids[0] == db.text_ids[2] != db.text_ids[1]
    want = fake_tower()(["a cat"])[0]
    np.testing.assert_allclose(db.embeddings[db.index("v001")], want / np.linalg.norm(want), rtol=1e-6)
    assert db.embeddings.dtype == np.float32 and db.num_truncated == 1
    assert (tmp_path / "db" / "unknown_ids.txt").read_text() == "nope\n"
    db.check_store(manifest, "S")
    # a tower other than the store's, by name or by dim, is refused naming both
    with pytest.raises(CaptionError, match=r"encoder 'test:tiny', but the store S was made by 'other:enc'"):
        db.check_store({**manifest, "encoder": "other:enc"}, "S")
    with pytest.raises(CaptionError, match=r"gives 8-d text embeddings \('test:tiny'\), but the store S holds 4-d"):
        db.check_store({**manifest, "dim": 4}, "S")
    with pytest.raises(CaptionError, match=r"text tower 'x:y' embeds text with encoder 'x:y', but .* 'test:tiny'"):
        build_text_database(table, fake_tower(), "x:y", manifest, tmp_path / "db2")
    with pytest.raises(CaptionError, match=r"gives 5-d text embeddings"):
        build_text_database(table, fake_tower(5), manifest["encoder"], manifest, tmp_path / "db3", progress=False)
    with pytest.raises(TextError, match=r"id 'v000' has several different texts"):
        read_text_table(write_texts(tmp_path / "d.csv", [("v000", "a"), ("v000", "b")]))


# --- synthetic texts --------------------------------------------------------------------------
# sha256[:16] of every output of `datasets.synthetic` (SMALL flags) as main wrote them before
# the texts existed: the texts must not move a single byte of them.
SMALL = ["--num_videos", "12", "--num_pretrain", "3", "--num_movies", "1", "--dim", "16", "--num_scenes", "6",
         "--extra_videos", "4"]
GOLDEN = {
    "benchmark/index-synthetic-000000.csv": "49ce80a326b80d57", "benchmark/manifest.json": "e643368ccd03157f",
    "benchmark/shards/synthetic-000000.npy": "0d2a3c9d0b9bb5ba", "captions.csv": "34ea3636dd3b1934",
    "grammars.npy": "1a638aeba2d87164", "latents.csv": "966ac368510dcf9b",
    "pretrain/index-synthetic-000000.csv": "3319b65836a56452", "pretrain/manifest.json": "e643368ccd03157f",
    "pretrain/shards/synthetic-000000.npy": "10599c31c23064ef", "prototypes.npy": "d227bdf08bb8991d",
    "scene_captions.txt": "e16cde1828dceebd", "tasks/grammar/test.csv": "944cdf5a693d512e",
    "tasks/grammar/train.csv": "f9a37013ccc410ea", "tasks/grammar/val.csv": "d63f6188c2f4f7da",
    "tasks/pace/test.csv": "66aba92a64f514a1", "tasks/pace/train.csv": "477313d54fa575ac",
    "tasks/pace/val.csv": "9a2193ba30d19572", "tasks/style/test.csv": "6ded8c949c8be1ee",
    "tasks/style/train.csv": "1f84078e7b20aa89", "tasks/style/val.csv": "a29d281e11a463a1",
    "tasks/tasks.json": "13a46d3057bba362",
}


def test_synthetic_texts_leave_every_other_output_byte_identical(tmp_path):
    synthetic.main(["--out", str(tmp_path / "c"), *SMALL])
    got = {str(p.relative_to(tmp_path / "c")): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
           for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert {k: got[k] for k in GOLDEN} == GOLDEN
    assert set(got) - set(GOLDEN) == {"corpus.json", "texts.csv", "order_questions.csv"}


def test_synthetic_descriptions_follow_the_scene_order(tmp_path):
    out = tmp_path / "c"
    synthetic.main(["--out", str(out), "--num_videos", "60", "--num_pretrain", "10", "--num_movies", "0"])
    texts = pd.read_csv(out / "texts.csv")
    latents = pd.read_csv(out / "latents.csv")
    assert texts["video_id"].tolist() == latents["video_id"].tolist()
    captions = pd.read_csv(out / "captions.csv")
    name_of = dict(zip(synthetic.SCENE_CAPTIONS, synthetic.SCENE_NAMES))
    for vid, rows in captions.groupby("video_id"):
        shots = rows["caption"].to_numpy()
        shots = shots[np.r_[True, shots[1:] != shots[:-1]]][:synthetic.DESCRIPTION_SHOTS]  # first shots, in order
        assert texts.set_index("video_id").loc[vid, "text"] == ", then ".join(name_of[c] for c in shots)
    # short enough for the tiny CLIP (one token per character, 77 with start / end tokens)
    assert texts["text"].str.len().max() <= 70
    q = pd.read_csv(out / "order_questions.csv")
    assert list(q.columns) == ["video_id", "question_id", "option", "text", "correct"]
    assert set(q["video_id"]) <= set(latents.loc[latents.kind == "benchmark", "video_id"])
    for qid, opts in q.groupby("question_id"):
        assert len(opts) == synthetic.ORDER_OPTIONS and opts["correct"].sum() == 1
        assert opts["option"].tolist() == list(range(synthetic.ORDER_OPTIONS)) and opts["text"].is_unique
        bags = {tuple(sorted(t.split(", then "))) for t in opts["text"]}  # same scenes, other orders
        assert len(bags) == 1
        vid = opts["video_id"].iloc[0]
        assert opts.loc[opts.correct == 1, "text"].item() == texts.set_index("video_id").loc[vid, "text"]
    # the correct option is not always at the same place
    assert q.loc[q.correct == 1, "option"].nunique() > 1


# --- training ---------------------------------------------------------------------------------
LENGTHS = [1, 1] + [int(n) for n in np.random.default_rng(1).integers(2, 40, size=22)]


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """A store of 24 videos (two of one segment), texts for 22 of them (two sharing a text) and
    for 2 videos that are not in the store."""
    root = tmp_path_factory.mktemp("paired")
    store = write_store(root / "store", LENGTHS, dim=DIM)
    rows = [(f"v{i:03d}", f"text {i % 20}") for i in range(22)] + [("ghost1", "x"), ("ghost2", "y")]
    manifest = EmbeddingStore(store).manifest
    build_text_database(pd.DataFrame(rows, columns=["video_id", "text"]), fake_tower(), manifest["encoder"],
                        manifest, root / "texts", progress=False)
    return store, root / "texts"


def run(paired, out, *extra, epochs=2):
    store, texts = paired
    argv = ["--data_path", str(store), "--output_dir", str(out), *TINY_MODEL, "--epochs", str(epochs),
            "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "4", "--num_workers", "0", "--no_progress",
            "--objective", "contrastive", "--texts", str(texts), "--val_fraction", "0.2", *extra]
    return main_pretrain.main(argv)


def test_contrastive_run_pairs_counts_and_resumes_exactly(paired, tmp_path):
    full = run(paired, tmp_path / "full", "--keep_every", "1", "--mask_ratio", "0.6", epochs=3)
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["args"]["mask_ratio"] == 0.6
    assert cfg["texts_videos_without_text"] == 2 and cfg["texts_unknown_videos"] == 2
    assert (tmp_path / "full" / main_pretrain.TEXTS_UNKNOWN).read_text() == "ghost1\nghost2\n"
    # 22 videos with a text, the one-segment ones included
    assert cfg["train_videos"] + cfg["val_videos"] == 22
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoint-last.pth")
    assert ckpt["model_config"]["objective"] == ckpt["objective"] == "contrastive" and "logit_scale" in ckpt["model"]
    assert not [k for k in ckpt["model"] if k.startswith("decoder")]
    assert ckpt["data"]["texts"] == str(paired[1])
    assert all(math.isfinite(h["train_contrastive"]) and h["logit_scale"] > 0 for h in full["history"])
    model, _ = load_pretrained(tmp_path / "full" / "checkpoint-last.pth")
    assert model.config["objective"] == "contrastive"
    # the encoder's features are read as for any checkpoint
    extract_features.main(["--data_path", str(paired[0]), "--checkpoint",
                           str(tmp_path / "full" / "checkpoint-last.pth"), "--output_dir", str(tmp_path / "features")])
    assert np.load(tmp_path / "features" / "mean.npy").shape == (len(LENGTHS), 16)

    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "full" / "checkpoint-0.pth", tmp_path / "cut" / "checkpoint-last.pth")
    (tmp_path / "cut" / "log.txt").write_text((tmp_path / "full" / "log.txt").read_text().splitlines()[0] + "\n")
    resumed = main_pretrain.main(["--data_path", str(paired[0]), "--output_dir", str(tmp_path / "cut"), *TINY_MODEL,
                                  "--epochs", "3", "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "4",
                                  "--num_workers", "0", "--no_progress", "--texts", str(paired[1]),
                                  "--val_fraction", "0.2"])  # --objective and --mask_ratio from the checkpoint
    b = load_checkpoint(tmp_path / "cut" / "checkpoint-last.pth")
    for k in ckpt["model"]:
        assert torch.equal(ckpt["model"][k], b["model"][k]), k
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["args"]["mask_ratio"] == 0.6
    # a new run's default is the objective's
    assert run(paired, tmp_path / "new", epochs=1)["history"] and \
        json.loads((tmp_path / "new" / "config.json").read_text())["args"]["mask_ratio"] == 0.75
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"][1:]]


def test_init_from_lvmae_and_train_last_k_leave_the_rest_bitwise_unchanged(paired, tmp_path):
    store, _ = paired
    mae = main_pretrain.main(["--data_path", str(store), "--output_dir", str(tmp_path / "mae"), *TINY_MODEL,
                              "--depth", "2", "--epochs", "1", "--warmup_epochs", "1", "--batch_size", "4",
                              "--num_workers", "0", "--no_progress"])
    init = load_checkpoint(mae["checkpoint"])["model"]
    run(paired, tmp_path / "c", "--depth", "2", "--init", mae["checkpoint"], "--train_last_k", "1",
        "--objective", "mae+contrastive", epochs=1)
    after = load_checkpoint(tmp_path / "c" / "checkpoint-last.pth")
    assert after["model_config"]["depth"] == 2 and after["model_config"]["objective"] == "mae+contrastive"
    for k, v in init.items():
        frozen = k.startswith(("blocks.0.", "input_proj", "cls_token"))
        assert torch.equal(after["model"][k], v) == frozen, k
    assert "text_proj.weight" in after["model"]


def test_old_checkpoints_read_as_objective_mae(tmp_path):
    model = tiny("mae")
    cfg = {k: v for k, v in model.config.items() if k not in ("objective", "text_dim", "pooling")}
    save_checkpoint({"format_version": 1, "model": model.state_dict(), "model_config": cfg}, tmp_path / "v1.pth")
    ckpt = load_checkpoint(tmp_path / "v1.pth")
    assert ckpt["model_config"]["objective"] == "mae" and ckpt["model_config"]["text_dim"] is None
    assert ckpt["objective"] == "mae" and ckpt["format_version"] == 2
    loaded, _ = load_pretrained(tmp_path / "v1.pth")
    assert loaded.objective == "mae" and hasattr(loaded, "decoder_embed")
