"""Every command fails cleanly on bad input: one table, one row per (command, bad input).

Each row runs a CLI in-process through ``util.cli.run_cli`` (what its ``__main__`` does) and
asserts: exit code 1; exactly one line on stderr, matching the row's pattern (which names the
file or the flag at fault); no traceback; and nothing new or changed on disk -- neither in the
row's own directory (where its output directory would go) nor in the shared fixtures.

To add a row for a new command: append a ``Row(name, main, argv, expect)`` to ``ROWS``.
``argv(fx, out)`` builds the command line from the fixtures ``fx`` (built once per module, see
``fx`` below; add what a new command needs there) and ``out``, a fresh path for the command's
output directory or file (``out_is_file=True`` makes it an existing regular file first).
"""
from __future__ import annotations

import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch

import engine_probe
import export_pretrained
import eval_mcqa
import eval_retrieval
import extract_features
import interpret
import main_pretrain
import reproduce_tables
import sweep_probes
from datasets import captions, questions, synthetic, texts, youcook2
from datasets.store import EmbeddingStore, StoreWriter, make_manifest
from models_lvmae import LVMAE
from pretrain_fixtures import TINY_MODEL, write_store
from preprocessing import extract, import_reference, make_tiny_encoder, stores, synthetic_videos
from util.checkpoint import save_checkpoint
from util.cli import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import pace_ceiling  # noqa: E402

MAX_LEN = 16


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> SimpleNamespace:
    """Small inputs, good and bad, shared by every row (nothing here is written by a row)."""
    root = tmp_path_factory.mktemp("cli_errors")
    corpus = root / "corpus"
    synthetic.main(["--out", str(corpus), "--num_videos", "12", "--num_pretrain", "0", "--num_movies", "0",
                    "--dim", "16", "--num_scenes", "6"])
    store = corpus / "benchmark"
    manifest = EmbeddingStore(store).manifest

    torch.manual_seed(0)
    model = LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                  max_len=MAX_LEN, input_dim=16)
    ckpt = root / "checkpoint-last.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {},
                     "data": {"encoder": manifest["encoder"], "dim": 16, "normalized": True}}, ckpt)

    table = captions.read_caption_table(corpus / "captions.csv", EmbeddingStore(store))
    rng = np.random.default_rng(0)
    captiondb = root / "captiondb"
    captions.build_database(table, lambda texts: rng.standard_normal((len(texts), 16)), manifest["encoder"],
                            manifest, captiondb, progress=False)
    text_table = pd.DataFrame({"video_id": EmbeddingStore(store).video_ids, "text": "a text"})
    textdb, other_textdb, ghost_textdb = root / "textdb", root / "other_textdb", root / "ghost_textdb"
    tower = lambda t: rng.standard_normal((len(t), 16))  # noqa: E731
    texts.build_text_database(text_table, tower, manifest["encoder"], manifest, textdb, progress=False)
    texts.build_text_database(text_table, tower, "other:enc", {**manifest, "encoder": "other:enc"}, other_textdb,
                              progress=False)
    texts.build_text_database(text_table.assign(video_id="ghost" + text_table.video_id), tower, manifest["encoder"],
                              manifest, ghost_textdb, progress=False)
    dup_texts, cols_texts = root / "dup_texts.csv", root / "cols_texts.csv"
    dup_texts.write_text("video_id,text\nsyn000000,a\nsyn000000,b\n")
    cols_texts.write_text("video,caption\nsyn000000,a\n")
    torch.manual_seed(0)
    contrastive = LVMAE(embed_dim=16, depth=1, num_heads=2, max_len=MAX_LEN, input_dim=16, objective="contrastive",
                        text_dim=16)
    contrastive_ckpt = root / "contrastive.pth"
    save_checkpoint({"model": contrastive.state_dict(), "model_config": contrastive.config, "epoch": 0, "args": {},
                     "data": {"encoder": manifest["encoder"], "dim": 16, "normalized": True}}, contrastive_ckpt)
    bad_db = root / "corrupt_captiondb"  # embeddings of random bytes
    shutil.copytree(captiondb, bad_db)
    (bad_db / "embeddings.npy").write_bytes(np.random.default_rng(4).bytes(1000))

    junk = root / "junk.pth"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    not_a_model = root / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("not an exported model\n")
    empty = root / "empty_store"
    empty.mkdir()
    corrupt = root / "corrupt_store"  # a shard of random bytes
    shutil.copytree(store, corrupt)
    for shard in (corrupt / "shards").glob("*.npy"):
        shard.write_bytes(np.random.default_rng(2).bytes(shard.stat().st_size))

    timed = root / "truncated_times"  # a store whose times shard was cut short
    with StoreWriter(timed, "t", make_manifest("test:tiny", 8)) as w:
        for i in range(4):
            w.add(f"v{i}", rng.standard_normal((6, 8)), 30.0, times=np.stack([np.arange(6) * 5.0,
                                                                              np.arange(1, 7) * 5.0], 1))
    times = next((timed / "shards").glob("*.times.npy"))
    times.write_bytes(times.read_bytes()[:times.stat().st_size // 2])

    nan = write_store(root / "nan_store", [6] * 8)  # one stored vector is NaN (video v003, segment 2)
    arr = np.load(next((nan / "shards").glob("*.npy")), mmap_mode="r+")
    arr[20, 3] = np.nan
    arr.flush()
    del arr

    no_data = root / "no_data.pth"  # a checkpoint that does not say which encoder made its inputs
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {}}, no_data)
    weighted_list = root / "mix.txt"
    weighted_list.write_text(f"{store} -2\n")
    bare_export = root / "bare_export"  # a Hub-format directory whose config.json lacks the data's encoder
    model.save_pretrained(bare_export)
    questiondb = root / "questiondb"
    qtable = questions.read_questions(corpus / "order_questions.csv")
    texts.build_text_database(questions.option_texts(qtable), lambda t: rng.standard_normal((len(t), 16)),
                              manifest["encoder"], manifest, questiondb, progress=False)
    (questiondb / "questions.csv").write_text(qtable.to_csv(index=False))
    (root / "torn.json").write_text('{"database": {"v": ')

    bad_results = root / "bad_results"
    bad_results.mkdir()
    (bad_results / "results.csv").write_bytes(b"\xff\xfe\x00" + np.random.default_rng(3).bytes(500))
    return SimpleNamespace(root=root, corpus=corpus, store=store, tasks=corpus / "tasks", ckpt=ckpt,
                           captiondb=captiondb, bad_db=bad_db, junk=junk, not_a_model=not_a_model, empty=empty, corrupt=corrupt,
                           truncated_times=timed, nan=nan, bad_results=bad_results, missing=root / "nowhere",
                           no_data=no_data, bare_export=bare_export, weighted_list=weighted_list,
                           textdb=textdb, other_textdb=other_textdb, ghost_textdb=ghost_textdb, dup_texts=dup_texts,
                           cols_texts=cols_texts, contrastive_ckpt=contrastive_ckpt,
                           questiondb=questiondb, torn=root / "torn.json")


@dataclass(frozen=True)
class Row:
    name: str
    main: Callable
    argv: Callable[[SimpleNamespace, Path], list]
    expect: str  # regex searched in the one line on stderr: it names the file or the flag
    out_is_file: bool = False


def s(*parts) -> list[str]:
    return [str(p) for p in parts]


def interpret_argv(fx, out, store=None, ckpt=None, *extra, db=None):
    return s("--data_path", store or fx.store, "--captions", db or fx.captiondb, "--checkpoint", ckpt or fx.ckpt,
             "--output_dir", out, "--num_videos", 2, "--no_thumbnails", "--device", "cpu", *extra)


def features_argv(fx, out, store=None, ckpt=None, *extra):
    return s("--data_path", store or fx.store, "--checkpoint", ckpt or fx.ckpt, "--output_dir", out, "--device", "cpu",
             *extra)


def pretrain_argv(fx, out, store=None, *extra):
    return s("--data_path", store or fx.store, "--output_dir", out, *TINY_MODEL, "--epochs", 1, "--warmup_epochs", 0,
             "--batch_size", 4, "--num_workers", 0, "--no_progress", "--device", "cpu", *extra)


def contrastive_argv(fx, out, *extra, db=None):
    return pretrain_argv(fx, out, None, "--objective", "contrastive", "--texts", db or fx.textdb, *extra)


def texts_argv(fx, out, table, *extra):
    return s("--texts", table, "--data_path", fx.store, "--encoder", "clip", "--checkpoint", fx.not_a_model,
             "--output_dir", out, *extra)


def probe_argv(fx, out, *extra):
    return s("--dataset", "synthetic", "--annotations", fx.tasks, "--task", "grammar", "--data_path", fx.store,
             "--backbone", "none", "--epochs", 1, "--output_dir", out, "--device", "cpu", *extra)


def extract_argv(fx, out, *extra):
    return s(fx.root, "--encoder", "clip", "--checkpoint", fx.not_a_model, "--out", out, "--device", "cpu", *extra)


def sweep_argv(fx, out, *extra):
    return s("--checkpoint", fx.ckpt, "--output_dir", out, "--synthetic", fx.store, "--synthetic_annotations",
             fx.tasks, "--seeds", 1, "--device", "cpu", *extra)


def videos_argv(fx, out, *extra):
    return s("--videos", fx.root, "--checkpoint", fx.ckpt, "--output_dir", out, "--device", "cpu", *extra)


def retrieval_argv(fx, out, *extra, texts=None):
    return s("--data_path", fx.store, "--texts", texts or fx.textdb, "--splits", fx.corpus / "latents.csv",
             "--output_dir", out, "--device", "cpu", *extra)


def mcqa_argv(fx, out, *extra, questions=None):
    return s("--data_path", fx.store, "--questions", questions or fx.questiondb, "--output_dir", out,
             "--device", "cpu", *extra)


def tower_argv(fx, out, *extra):
    return s("--data_path", fx.store, "--encoder", "clip", "--checkpoint", fx.not_a_model, "--output_dir", out, *extra)


def ap(argv):
    return engine_probe.main(argv, "ap")


def lp(argv):
    return engine_probe.main(argv, "lp")


ROWS = [
    # --- a truncated shards/<part>.times.npy --------------------------------------------------
    Row("stores list: truncated times shard", stores.main, lambda fx, out: s("list", fx.truncated_times),
        r"INVALID .*times\.npy"),
    Row("pretrain: truncated times shard", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, fx.truncated_times), r"^error: times shard .*\.times\.npy"),
    # --- interpret.py / extract_features.py on bad stores and checkpoints -----------------------
    Row("interpret: missing store", interpret.main, lambda fx, out: interpret_argv(fx, out, fx.missing), r"nowhere"),
    Row("interpret: empty store directory", interpret.main, lambda fx, out: interpret_argv(fx, out, fx.empty),
        r"empty_store.*manifest\.json is missing"),
    Row("interpret: corrupt store", interpret.main, lambda fx, out: interpret_argv(fx, out, fx.corrupt),
        r"corrupt_store/shards/.*\.npy"),
    Row("interpret: random-bytes checkpoint", interpret.main,
        lambda fx, out: interpret_argv(fx, out, None, fx.junk), r"junk\.pth is not a checkpoint"),
    Row("interpret: corrupt caption database", interpret.main,
        lambda fx, out: interpret_argv(fx, out, db=fx.bad_db), r"caption database .*corrupt_captiondb cannot be read"),
    Row("captions: missing caption table", captions.main,
        lambda fx, out: s("--captions", fx.missing, "--data_path", fx.store, "--encoder", "clip", "--checkpoint",
                          fx.not_a_model, "--output_dir", out), r"caption table .*nowhere does not exist"),
    Row("extract_features: missing store", extract_features.main,
        lambda fx, out: features_argv(fx, out, fx.missing), r"nowhere"),
    Row("extract_features: empty store directory", extract_features.main,
        lambda fx, out: features_argv(fx, out, fx.empty), r"empty_store.*manifest\.json is missing"),
    Row("extract_features: corrupt store", extract_features.main,
        lambda fx, out: features_argv(fx, out, fx.corrupt), r"corrupt_store/shards/.*\.npy"),
    Row("extract_features: random-bytes checkpoint", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, fx.junk), r"junk\.pth is not a checkpoint"),
    # --- numeric flags refused when parsed -----------------------------------------------------
    *[Row(f"interpret: --mask_ratio {r}", interpret.main,
          lambda fx, out, r=r: interpret_argv(fx, out, None, None, "--mask_ratio", r), rf"--mask_ratio.*{r}")
      for r in ("0", "1", "1.5", "-0.1")],
    Row("interpret: --num_videos 0", interpret.main,
        lambda fx, out: interpret_argv(fx, out, None, None, "--num_videos", "0"), r"--num_videos.*got 0"),
    Row("interpret: --batch_size 0", interpret.main,
        lambda fx, out: interpret_argv(fx, out, None, None, "--batch_size", "0"), r"--batch_size.*got 0"),
    Row("extract_features: --batch_size 0", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--batch_size", "0"), r"--batch_size.*got 0"),
    Row("extract_features: --chunk_videos 0", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--chunk_videos", "0"), r"--chunk_videos.*got 0"),
    Row("extract: --batch_size 0", extract.main, lambda fx, out: extract_argv(fx, out, "--batch_size", "0"),
        r"--batch_size.*got 0"),
    Row("extract: --stride_seconds 0", extract.main, lambda fx, out: extract_argv(fx, out, "--stride_seconds", "0"),
        r"--stride_seconds.*got 0"),
    Row("extract: --frames_per_segment 0", extract.main,
        lambda fx, out: extract_argv(fx, out, "--frames_per_segment", "0"), r"--frames_per_segment.*got 0"),
    Row("extract_features: --num_patches below the checkpoint's max_len", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--num_patches", "8"),
        rf"--num_patches 8 is below the max_len {MAX_LEN} of .*checkpoint-last\.pth"),
    Row("interpret: --num_patches below the checkpoint's max_len", interpret.main,
        lambda fx, out: interpret_argv(fx, out, None, None, "--num_patches", "8"), r"--num_patches 8 is below"),
    # --- an output directory that is an existing regular file ----------------------------------
    Row("extract: --out is a file", extract.main, lambda fx, out: extract_argv(fx, out), r"--out: .*out is a file",
        out_is_file=True),
    Row("pretrain: --output_dir is a file", main_pretrain.main, lambda fx, out: pretrain_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("test_ap: --output_dir is a file", ap, lambda fx, out: probe_argv(fx, out), r"--output_dir: .*out is a file",
        out_is_file=True),
    Row("test_lp: --output_dir is a file", lp, lambda fx, out: probe_argv(fx, out), r"--output_dir: .*out is a file",
        out_is_file=True),
    Row("sweep_probes: --output_dir is a file", sweep_probes.main, lambda fx, out: sweep_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("interpret: --output_dir is a file", interpret.main, lambda fx, out: interpret_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("extract_features: --output_dir is a file", extract_features.main, lambda fx, out: features_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("captions: --output_dir is a file", captions.main,
        lambda fx, out: s("--captions", fx.corpus / "captions.csv", "--data_path", fx.store, "--encoder", "clip",
                          "--checkpoint", fx.not_a_model, "--output_dir", out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("synthetic: --out is a file", synthetic.main, lambda fx, out: s("--out", out), r"--out: .*out is a file",
        out_is_file=True),
    Row("synthetic_videos: --out below a file", synthetic_videos.main, lambda fx, out: s("--out", out / "videos"),
        r"--out: .*out is a file", out_is_file=True),
    Row("make_tiny_encoder: --out is a file", make_tiny_encoder.main,
        lambda fx, out: s("--backend", "clip", "--out", out), r"--out: .*out is a file", out_is_file=True),
    Row("import_reference cache: --out is a file", import_reference.main,
        lambda fx, out: s("cache", fx.root, "--out", out), r"--out: .*out is a file", out_is_file=True),
    Row("stores combine: --out is a directory", stores.main,
        lambda fx, out: s("combine", fx.store, "--out", fx.root), r"--out: .* is a directory"),
    # --- misleading or missing messages --------------------------------------------------------
    Row("import_reference checkpoint: one of our own checkpoints", import_reference.main,
        lambda fx, out: s("checkpoint", fx.ckpt, "--out", out),
        r"checkpoint-last\.pth is already a checkpoint of this project .*needs no import"),
    Row("reproduce_tables: undecodable results.csv", reproduce_tables.main,
        lambda fx, out: s(fx.bad_results, "--out", out), r"bad_results/results\.csv is not a readable"),
    Row("sweep_probes: --tasks nope", sweep_probes.main, lambda fx, out: sweep_argv(fx, out, "--tasks", "nope"),
        r"--tasks nope: unknown task .*grammar style pace"),
    Row("test_ap: --checkpoint a directory that is not an exported model", ap,
        lambda fx, out: probe_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.not_a_model),
        r"not_a_model is a directory.*lacks config\.json and model\.safetensors"),
    Row("test_lp: --checkpoint missing", lp,
        lambda fx, out: probe_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.missing),
        r"checkpoint .*nowhere does not exist"),
    # --- a run refused before its first checkpoint leaves nothing in --output_dir ---------------
    Row("pretrain: NaN vector in a DataLoader worker, fresh --output_dir", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, fx.nan, "--num_workers", "1", "--val_fraction", "0",
                                      "--duration_min", "30", "--duration_max", "30"),
        r"^error: video 'v003': segment 2 in .*nan_store/shards/.*not finite"),
    Row("pretrain: missing store", main_pretrain.main, lambda fx, out: pretrain_argv(fx, out, fx.missing),
        r"nowhere does not exist"),
    Row("pretrain: --mask_ratio 1", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--mask_ratio", "1"), r"--mask_ratio: must be in \[0, 1\)"),
    Row("pretrain: --window_sampling frames", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--window_sampling", "frames"),
        r"--window_sampling: invalid choice: 'frames'"),
    Row("pretrain: --lr_schedule linear", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--lr_schedule", "linear"),
        r"--lr_schedule: invalid choice: 'linear'"),
    Row("pretrain: --device nope", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--device", "nope"), r"--device nope is not a device"),
    # --- export_pretrained.py, exported directories -----------------------------------------------
    Row("export_pretrained: missing checkpoint", export_pretrained.main,
        lambda fx, out: s(fx.missing, "--out", out), r"checkpoint .*nowhere does not exist"),
    Row("export_pretrained: junk checkpoint", export_pretrained.main,
        lambda fx, out: s(fx.junk, "--out", out), r"junk\.pth is not a checkpoint"),
    Row("export_pretrained: checkpoint without its data's encoder", export_pretrained.main,
        lambda fx, out: s(fx.no_data, "--out", out), r"no_data\.pth does not record its data's encoder"),
    Row("export_pretrained: --out an existing directory that is not an export", export_pretrained.main,
        lambda fx, out: s(fx.ckpt, "--out", fx.not_a_model), r"--out: .*not_a_model exists and is not an LV-MAE export"),
    Row("export_pretrained: --out is a file", export_pretrained.main, lambda fx, out: s(fx.ckpt, "--out", out),
        r"--out: .*out is a file", out_is_file=True),
    Row("export_pretrained: --probe_results missing", export_pretrained.main,
        lambda fx, out: s(fx.ckpt, "--out", out, "--probe_results", fx.missing), r"--probe_results .*nowhere"),
    Row("test_ap: --checkpoint an exported directory without data.encoder", ap,
        lambda fx, out: probe_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.bare_export),
        r"bare_export/config\.json lacks data\.encoder"),
    Row("extract_features: --checkpoint an exported directory without data.encoder", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, fx.bare_export), r"bare_export/config\.json lacks data\.encoder"),
    # --- extract_features.py --videos ------------------------------------------------------------
    Row("extract_features: --videos without --encoder", extract_features.main,
        lambda fx, out: videos_argv(fx, out), r"--videos needs --encoder and --encoder_checkpoint"),
    Row("extract_features: --encoder without --videos", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--encoder", "clip", "--encoder_checkpoint", fx.root),
        r"--encoder / --encoder_checkpoint go with --videos"),
    Row("extract_features: --videos and --data_path", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--videos", fx.root),
        r"--videos: not allowed with argument --data_path"),
    Row("extract_features: --videos with another encoder than the checkpoint's", extract_features.main,
        lambda fx, out: videos_argv(fx, out, "--encoder", "clip", "--encoder_checkpoint", fx.not_a_model),
        r"checkpoint-last\.pth was pretrained on .* embeddings; --encoder clip .*makes 'clip:not_a_model' ones"),
    Row("extract_features: --extract_batch_size 0", extract_features.main,
        lambda fx, out: videos_argv(fx, out, "--encoder", "clip", "--encoder_checkpoint", fx.root,
                                    "--extract_batch_size", "0"), r"--extract_batch_size.*got 0"),
    Row("extract_features: --device nope", extract_features.main,
        lambda fx, out: features_argv(fx, out, None, None, "--device", "nope"), r"--device nope is not a device"),
    # --- weighted mixes -----------------------------------------------------------------------------
    Row("pretrain: --data_path STORE:0", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, f"{fx.store}:0"), r"store weight '0' of .*benchmark must be a number > 0"),
    Row("pretrain: --data_path STORE:-2 in a .txt list", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, fx.weighted_list), r"store weight '-2' of .*benchmark must be"),
    Row("extract_features: a weighted --data_path", extract_features.main,
        lambda fx, out: features_argv(fx, out, f"{fx.store}:2"), r"--data_path .*benchmark:2: store weights .* apply to "
        r"pretraining"),
    # --- the contrastive objectives (docs/contrastive.md) ------------------------------------------
    Row("pretrain: --mask_ratio 0 with --objective mae", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--mask_ratio", "0"),
        r"--mask_ratio 0.0: --objective mae reconstructs masked segments and needs a ratio in \(0, 1\)"),
    Row("pretrain: --objective nope", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--objective", "nope"), r"--objective: invalid choice: 'nope'"),
    Row("pretrain: --pooling nope", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--pooling", "nope"), r"--pooling: invalid choice: 'nope'"),
    Row("pretrain: --objective contrastive without --texts", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--objective", "contrastive"),
        r"--objective contrastive needs --texts"),
    Row("pretrain: --texts with --objective mae", main_pretrain.main,
        lambda fx, out: pretrain_argv(fx, out, None, "--texts", fx.textdb),
        r"--texts pairs videos with texts .*--objective mae does not use it"),
    Row("pretrain: global micro-batch of one pair", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--batch_size", "1"),
        r"--batch_size 1 x world size 1 gives 1 pair per micro-batch: InfoNCE needs at least 2"),
    Row("pretrain: --contrastive_weight without mae+contrastive", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--contrastive_weight", "2"),
        r"--contrastive_weight weighs the InfoNCE of --objective mae\+contrastive, not of --objective contrastive"),
    Row("pretrain: --contrastive_weight 0", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--objective", "mae+contrastive", "--contrastive_weight", "0"),
        r"--contrastive_weight.*got 0"),
    Row("pretrain: --train_last_k -1", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--train_last_k", "-1"), r"--train_last_k.*got -1"),
    Row("pretrain: --train_last_k above --depth", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--train_last_k", "3"),
        r"--train_last_k 3 exceeds the encoder's 1 blocks \(--depth\)"),
    Row("pretrain: --texts missing", main_pretrain.main, lambda fx, out: contrastive_argv(fx, out, db=fx.missing),
        r"nowhere/meta\.json is missing: .*nowhere is not a text database"),
    Row("pretrain: --texts of another encoder", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, db=fx.other_textdb),
        r"other_textdb embeds text with encoder 'other:enc', but the store .*benchmark was made by 'synthetic:seed0'"),
    Row("pretrain: --texts for no video of the store", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, db=fx.ghost_textdb),
        r"--texts .*ghost_textdb has a text for none of the training videos"),
    Row("pretrain: --init missing", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--init", fx.missing), r"checkpoint .*nowhere does not exist"),
    Row("pretrain: --init with another --depth", main_pretrain.main,
        lambda fx, out: contrastive_argv(fx, out, "--init", fx.ckpt, "--depth", "2"),
        r"--depth 2 but --init .*checkpoint-last\.pth has depth 1; drop --depth"),
    Row("interpret: a contrastive-only checkpoint", interpret.main,
        lambda fx, out: interpret_argv(fx, out, None, fx.contrastive_ckpt),
        r"contrastive\.pth was trained with --objective contrastive: it has no decoder"),
    Row("texts: missing text table", texts.main, lambda fx, out: texts_argv(fx, out, fx.missing),
        r"text table .*nowhere does not exist"),
    Row("texts: table without video_id, text", texts.main, lambda fx, out: texts_argv(fx, out, fx.cols_texts),
        r"cols_texts\.csv needs columns video_id, text"),
    Row("texts: two texts for one video", texts.main, lambda fx, out: texts_argv(fx, out, fx.dup_texts),
        r"dup_texts\.csv: id 'syn000000' has several different texts"),
    Row("texts: --batch_size 0", texts.main,
        lambda fx, out: texts_argv(fx, out, fx.dup_texts, "--batch_size", "0"), r"--batch_size.*got 0"),
    Row("texts: --output_dir is a file", texts.main, lambda fx, out: texts_argv(fx, out, fx.dup_texts),
        r"--output_dir: .*out is a file", out_is_file=True),
    # --- retrieval and zero-shot QA --------------------------------------------------------------
    Row("eval_retrieval: --texts not a text database", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, texts=fx.missing), r"nowhere/meta\.json is missing.*not a text database"),
    Row("eval_retrieval: --splits missing", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--splits", fx.missing), r"split table .*nowhere does not exist"),
    Row("eval_retrieval: --backbone lvmae without --checkpoint", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--backbone", "lvmae"), r"--backbone lvmae needs --checkpoint"),
    Row("eval_retrieval: --head projection of an MAE checkpoint", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.ckpt, "--head", "projection"),
        r"--head projection: .*objective 'mae' and has no text projection"),
    Row("eval_retrieval: random-bytes checkpoint", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.junk),
        r"junk\.pth is not a checkpoint"),
    Row("eval_retrieval: --ridge_lambdas 0", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--ridge_lambdas", "0"), r"--ridge_lambdas.*got 0"),
    Row("eval_retrieval: --device nope", eval_retrieval.main,
        lambda fx, out: retrieval_argv(fx, out, "--device", "nope"), r"--device nope is not a device"),
    Row("eval_retrieval: --output_dir is a file", eval_retrieval.main, lambda fx, out: retrieval_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("eval_mcqa: --questions a text database without questions.csv", eval_mcqa.main,
        lambda fx, out: mcqa_argv(fx, out, questions=fx.textdb), r"textdb/questions\.csv is missing"),
    Row("eval_mcqa: --with_question on option-only questions", eval_mcqa.main,
        lambda fx, out: mcqa_argv(fx, out, "--with_question"), r"--with_question: .*have no question text"),
    Row("eval_mcqa: ridge head without --ridge_texts", eval_mcqa.main,
        lambda fx, out: mcqa_argv(fx, out, "--backbone", "lvmae", "--checkpoint", fx.ckpt),
        r"--head ridge needs --ridge_texts"),
    Row("eval_mcqa: --output_dir is a file", eval_mcqa.main, lambda fx, out: mcqa_argv(fx, out),
        r"--output_dir: .*out is a file", out_is_file=True),
    Row("youcook2: missing annotation file", youcook2.main,
        lambda fx, out: tower_argv(fx, out, "--annotations", fx.missing), r"YouCook2 annotation file .*nowhere"),
    Row("youcook2: torn annotation JSON", youcook2.main,
        lambda fx, out: tower_argv(fx, out, "--annotations", fx.torn), r"torn\.json line 1 column \d+: not valid JSON"),
    Row("youcook2: --val_fraction 1", youcook2.main,
        lambda fx, out: tower_argv(fx, out, "--annotations", fx.torn, "--val_fraction", "1"), r"--val_fraction.*1"),
    Row("questions: missing question table", questions.main,
        lambda fx, out: tower_argv(fx, out, "--questions", fx.missing), r"question table .*nowhere does not exist"),
    Row("questions: torn EgoSchema questions.json", questions.main,
        lambda fx, out: tower_argv(fx, out, "--questions", fx.torn, "--answers", fx.missing),
        r"torn\.json line 1"),
    Row("questions: --answers with a question table", questions.main,
        lambda fx, out: tower_argv(fx, out, "--questions", fx.corpus / "order_questions.csv", "--answers", fx.torn),
        r"--answers goes with EgoSchema's questions\.json"),
    # --- test tools ------------------------------------------------------------------------------
    Row("synthetic_videos: --seconds 0", synthetic_videos.main, lambda fx, out: s("--out", out, "--seconds", "0"),
        r"--seconds.*got 0"),
    Row("synthetic_videos: --seconds -3", synthetic_videos.main, lambda fx, out: s("--out", out, "--seconds", "-3"),
        r"--seconds.*got -3"),
    Row("synthetic_videos: --fps 0", synthetic_videos.main, lambda fx, out: s("--out", out, "--fps", "0"),
        r"--fps.*got 0"),
    Row("synthetic_videos: less than a frame", synthetic_videos.main,
        lambda fx, out: s("--out", out, "--seconds", "0.01"), r"--seconds 0.01 at --fps 25.0 is not one frame"),
    Row("synthetic: --dim 0", synthetic.main, lambda fx, out: s("--out", out, "--dim", "0"), r"--dim.*got 0"),
    Row("synthetic: too few scenes for the grammars", synthetic.main,
        lambda fx, out: s("--out", out, "--num_scenes", "3", "--num_grammars", "4"), r"--num_grammars 4"),
    # --- benchmarks/pace_ceiling.py ----------------------------------------------------------------
    Row("pace_ceiling: not a synthetic corpus", pace_ceiling.main,
        lambda fx, out: s("--corpus", fx.store, "--out", out), r"--corpus .*benchmark: no latents.csv"),
    Row("pace_ceiling: missing corpus", pace_ceiling.main,
        lambda fx, out: s("--corpus", fx.missing, "--out", out), r"--corpus .*nowhere: no latents.csv"),
    Row("pace_ceiling: --splits nope", pace_ceiling.main,
        lambda fx, out: s("--corpus", fx.corpus, "--splits", "nope"), r"--splits: invalid choice: 'nope'"),
]


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its size and mtime (files) -- what a row must not change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in root.rglob("*")}


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_fails_cleanly(row, fx, tmp_path, capsys):
    out = tmp_path / "out"
    if row.out_is_file:
        out.write_text("a regular file\n")
    argv = row.argv(fx, out)
    before, fixtures = snapshot(tmp_path), snapshot(fx.root)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a warning would be a second line, in every row alike
        code = run_cli(row.main, argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert re.search(row.expect, lines[0]), lines[0]
    assert snapshot(tmp_path) == before, "the refused run wrote into its output location"
    assert snapshot(fx.root) == fixtures, "the refused run changed its inputs"
