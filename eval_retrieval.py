"""Zero-shot text->video and video->text retrieval on a held-out split (R@1/5/10, median rank).

Inputs: the store, a text database (``datasets.texts``; ``datasets.youcook2`` writes one with
span texts), and a split table (``video_id, split``: train / val / test; the synthetic corpus's
``latents.csv``, or the ``splits.csv`` ``datasets.youcook2`` writes beside its database, the
default). A text whose id is a video of the store is a *video text* (paired with the whole
video); a text listed in ``spans.csv`` (beside the database, or ``--spans``) is a *span text*
(paired with the segments of its span). Each kind is evaluated on its own: the queries are the
texts of the ``--split`` videos, the gallery their videos (or spans). Backbones and metrics:
``engine_retrieval``.

    python eval_retrieval.py --data_path corpus/benchmark --texts texts/synthetic \\
        --splits corpus/latents.csv --backbone raw --output_dir output/retrieval
    python eval_retrieval.py ... --backbone lvmae --checkpoint output/mae/checkpoint-last.pth   # ridge map
    python eval_retrieval.py ... --backbone lvmae --checkpoint output/contrastive/checkpoint-last.pth
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import engine_retrieval as er
from datasets.store import EmbeddingStore
from util.cli import ArgumentParser, output_dir, positive_float, positive_int, run_cli

SPLITS = ("train", "val", "test")


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``eval_mcqa.py``."""
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default="raw", choices=("raw", "lvmae"),
                   help="raw: the mean of the raw segment embeddings (no training); lvmae: the encoder of --checkpoint")
    g.add_argument("--checkpoint", default=None, help="LV-MAE (MAE-only) or contrastive checkpoint (--backbone lvmae)")
    g.add_argument("--head", default="auto", choices=er.HEADS,
                   help="how windows reach the text space: auto = the checkpoint's projection if it has one, else "
                        "ridge; the raw backbone's own vectors (none), or a ridge map fitted on the train pairs")
    g.add_argument("--pool", default="mean", choices=er.POOLS,
                   help="ridge: the features it maps (the mean of the encoder's output tokens, or [CLS])")
    g.add_argument("--ridge_lambdas", type=positive_float, nargs="+", default=er.RIDGE_LAMBDAS,
                   help="ridge strengths (in units of the mean eigenvalue of the centred X^T X); the best val "
                        "text->video R@1 is kept")
    g.add_argument("--batch_size", type=positive_int, default=64, help="windows per encoder forward")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")


def get_args_parser():
    p = argparse.ArgumentParser("Zero-shot video-text retrieval", add_help=False)
    p.add_argument("--data_path", nargs="+", required=True, help="embedding store(s), or a .txt file listing them")
    p.add_argument("--texts", required=True, help="text database directory (datasets.texts / datasets.youcook2)")
    p.add_argument("--splits", default=None, help="CSV video_id, split (default: <texts>/splits.csv)")
    p.add_argument("--spans", default=None, help="span table (default: <texts>/spans.csv when it exists)")
    p.add_argument("--split", default="test", choices=SPLITS, help="the held-out split evaluated")
    p.add_argument("--dataset", default=None, help="name in the tables (default: the texts directory's name)")
    add_backbone_args(p)
    p.add_argument("--output_dir", required=True, type=output_dir,
                   help="retrieval.csv, runs/<run_id>.json and tables.md go here")
    return p


def text_kinds(db, store, spans: pd.DataFrame | None) -> dict[str, tuple[list[int], dict]]:
    """``{kind: (rows of the database, windows)}``: video texts (ids of store videos) and span
    texts (ids of ``spans``, whose video is in the store)."""
    kinds = {}
    in_store = set(store.video_ids)
    rows = [i for i, t in enumerate(db.ids) if t in in_store]
    if rows:
        kinds["video"] = (rows, {db.ids[i]: (db.ids[i], 0, store.num_segments(db.ids[i])) for i in rows})
    if spans is not None and len(spans):
        win = {r.text_id: (r.video_id, int(r.start_segment), int(r.stop_segment))
               for r in spans.itertuples(index=False) if r.video_id in in_store}
        rows = [i for i, t in enumerate(db.ids) if t in win]
        if rows:
            kinds["span"] = (rows, {db.ids[i]: win[db.ids[i]] for i in rows})
    return kinds


def read_spans(path: Path, store) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"text_id": str, "video_id": str}, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise er.EvalError(f"span table {path} cannot be read ({' '.join(str(e).split())[:200]})") from None
    need = ["text_id", "video_id", "start_segment", "stop_segment"]
    if not set(need) <= set(df.columns):
        raise er.EvalError(f"span table {path} needs the columns {need} (has {list(df.columns)})")
    df = df[df.video_id.isin(set(store.video_ids))]
    n = df.video_id.map(pd.Series(store.lengths(), index=store.video_ids))
    bad = (df.start_segment < 0) | (df.stop_segment <= df.start_segment) | (df.stop_segment > n)
    if bad.any():
        r = df[bad].iloc[0]
        raise er.EvalError(f"span table {path}: span {r.text_id!r} [{r.start_segment}, {r.stop_segment}) is not "
                           f"inside video {r.video_id!r} ({store.num_segments(r.video_id)} segments); wrong store?")
    return df


def evaluate_kind(backbone: er.Backbone, db, store, rows, windows, split_of: pd.Series, split: str,
                  lambdas) -> dict:
    """Metrics of one kind of text on ``split`` (and the ridge fit on train / val)."""
    view = er.WindowView(store, windows)
    ids = [db.ids[i] for i in rows]
    emb = db.embeddings[rows]
    text_keys = db.text_ids[rows]  # equal for identical texts
    video_of = np.array([windows[t][0] for t in ids], dtype=object)
    splits = split_of.reindex(video_of).fillna("").to_numpy()

    def pairs(name):
        sel = np.flatnonzero(splits == name)
        keys = [ids[i] for i in sel]  # a text's window is keyed by its id (several texts of a video share it)
        return er.Pairs.make(keys, emb[sel], keys, text_keys[sel])

    test = pairs(split)
    if not len(test.texts):
        raise er.EvalError(f"no text of a {split!r} video (see --splits); nothing to evaluate")
    extra = {}
    if backbone.head == "ridge":
        mapping, extra = er.choose_ridge(backbone, view, pairs("train"), pairs("val"), lambdas)
        video_emb = mapping(backbone.features(view, test.videos))
        extra["ridge_lambda"] = mapping.lam
    else:
        video_emb = er.normalize(backbone.features(view, test.videos))
    if video_emb.shape[1] != test.embeddings.shape[1]:
        raise er.EvalError(f"the backbone gives {video_emb.shape[1]}-d vectors, the texts are "
                           f"{test.embeddings.shape[1]}-d (another text tower?)")
    return {**er.retrieval_metrics(test.embeddings, video_emb, test.text_video, test.keys), **extra}


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    store = EmbeddingStore(args.data_path)
    store_name = er.store_name(store)
    db = er.open_texts(args.texts, store)
    texts_dir = Path(args.texts)
    split_of = er.read_splits(args.splits or texts_dir / "splits.csv")
    spans_path = Path(args.spans) if args.spans else texts_dir / "spans.csv"
    if args.spans and not spans_path.is_file():
        raise er.EvalError(f"span table {spans_path} does not exist (--spans)")
    spans = read_spans(spans_path, store) if spans_path.is_file() else None
    kinds = text_kinds(db, store, spans)
    if not kinds:
        raise er.EvalError(f"no text of {args.texts} is about a video of the store {store_name} (wrong store?)")
    backbone = er.load_backbone(args, store)
    dataset = args.dataset or texts_dir.resolve().name
    out = Path(args.output_dir)
    config = {"dataset": dataset, "texts": str(texts_dir.resolve()), "split": args.split, "backbone": backbone.name,
              "head": backbone.head, "pool": backbone.pool, "checkpoint_sha256": backbone.checkpoint_sha256,
              "ridge_lambdas": args.ridge_lambdas if backbone.head == "ridge" else None,
              "store": [str(r.resolve()) for r in store.roots]}
    rid = er.run_id(config)
    result = {"run_id": rid, "config": config, "label": backbone.label(), "metrics": {}}
    for kind, (rows, windows) in kinds.items():
        result["metrics"][kind] = evaluate_kind(backbone, db, store, rows, windows, split_of, args.split,
                                                args.ridge_lambdas)
    path = er.save_run(out, rid, result)
    for kind, m in result["metrics"].items():
        row = {**er.base_row(backbone, store.manifest["encoder"]), "run_id": rid, "dataset": dataset, "texts": kind,
               "split": args.split, "result_json": str(path),
               **{k: v for k, v in m.items() if k in er.RETRIEVAL_COLUMNS}}
        er.write_row(out / "retrieval.csv", row, er.RETRIEVAL_COLUMNS, key=("run_id", "texts"))
    print(json.dumps({"run_id": rid, "label": backbone.label(), **{
        kind: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items() if not isinstance(v, dict)}
        for kind, m in result["metrics"].items()}}))
    print(er.write_tables(out))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
