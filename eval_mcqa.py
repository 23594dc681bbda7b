"""Zero-shot multiple choice: the option whose text embedding has the highest cosine with the video's
embedding (the whole video), optionally with the question before the option text.

Input: a question database (``python -m datasets.questions``: EgoSchema's JSON or a question
table such as the synthetic corpus's ``order_questions.csv``, the options embedded by the store
encoder's text tower). ``--splits`` / ``--split`` restrict the questions to the videos of one
split (the synthetic corpus: ``latents.csv``, test). The ridge baseline maps an MAE-only
encoder's pooled features to the text space with a ridge regression fitted on video-text pairs
(``--ridge_texts``, a text database, and its train / val split in ``--ridge_splits``): EgoSchema
has no training pairs of its own. Backbones, ties and tables: ``engine_retrieval``.

The synthetic order questions are built so that an order-blind model is at chance: every
option describes the same scenes, in different orders.

    python eval_mcqa.py --data_path corpus/benchmark --questions texts/order --splits corpus/latents.csv \\
        --backbone lvmae --checkpoint output/contrastive/checkpoint-last.pth --output_dir output/retrieval
    python eval_mcqa.py --data_path STORE --questions texts/egoschema --with_question --backbone raw --output_dir out
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import engine_retrieval as er
from datasets.questions import load_questions, option_id
from datasets.store import EmbeddingStore
from eval_retrieval import SPLITS, add_backbone_args, text_kinds
from util.cli import ArgumentParser, output_dir, run_cli
from util.probe_results import bootstrap_interval


def get_args_parser():
    p = argparse.ArgumentParser("Zero-shot multiple-choice answering", add_help=False)
    p.add_argument("--data_path", nargs="+", required=True, help="embedding store(s), or a .txt file listing them")
    p.add_argument("--questions", required=True, help="question database directory (python -m datasets.questions)")
    p.add_argument("--with_question", action="store_true", help="score \"<question> <option>\" instead of the option")
    p.add_argument("--splits", default=None, help="CSV video_id, split: answer only the questions of --split videos")
    p.add_argument("--split", default="test", choices=SPLITS, help="with --splits: the split answered")
    p.add_argument("--ridge_texts", default=None,
                   help="ridge head: text database of video texts whose train / val pairs fit the map")
    p.add_argument("--ridge_splits", default=None,
                   help="ridge head: split table of --ridge_texts (default: --splits, else <ridge_texts>/splits.csv)")
    p.add_argument("--dataset", default=None, help="name in the tables (default: the question directory's name)")
    add_backbone_args(p)
    p.add_argument("--output_dir", required=True, type=output_dir, help="mcqa.csv, runs/<run_id>.json, tables.md")
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    store = EmbeddingStore(args.data_path)
    store_name = er.store_name(store)
    db = er.open_texts(args.questions, store)
    table = load_questions(args.questions)
    table = table[table.video_id.isin(set(store.video_ids))]
    split_of = er.read_splits(args.splits) if args.splits else None
    if split_of is not None:
        table = table[table.video_id.map(split_of).fillna("").to_numpy() == args.split]
    if not len(table):
        raise er.EvalError(f"no question of {args.questions} is about a video of the store {store_name}"
                           + (f" in the {args.split!r} split of {args.splits}" if args.splits else ""))
    if args.with_question and (table.question == "").any():
        raise er.EvalError(f"--with_question: the questions of {args.questions} have no question text "
                           "(only options); drop the flag")
    backbone = er.load_backbone(args, store)

    groups = list(table.groupby("question_id", sort=False))
    K = max(len(g) for _, g in groups)
    dim = db.embeddings.shape[1]
    option_emb = np.zeros((len(groups), K, dim), dtype=np.float32)
    valid = np.zeros((len(groups), K), dtype=bool)
    correct = np.zeros(len(groups), dtype=np.int64)
    for q, (qid, g) in enumerate(groups):
        for k, r in enumerate(g.itertuples(index=False)):
            try:
                option_emb[q, k] = db.embeddings[db.index(option_id(qid, r.option, args.with_question))]
            except (KeyError, ValueError):
                raise er.EvalError(f"{args.questions}: option {r.option} of question {qid!r} has no embedding; "
                                   "rebuild the database with `python -m datasets.questions`") from None
            valid[q, k] = True
        correct[q] = int(np.flatnonzero(g.correct.to_numpy() == 1)[0])
    videos = [g.video_id.iloc[0] for _, g in groups]
    view = er.whole_videos(store, list(dict.fromkeys(videos)))
    keys = videos

    extra = {}
    if backbone.head == "ridge":
        if not args.ridge_texts:
            raise er.EvalError("--head ridge needs --ridge_texts (video-text pairs to fit the map on)")
        rdb = er.open_texts(args.ridge_texts, store)
        rsplits = er.read_splits(args.ridge_splits or args.splits or Path(args.ridge_texts) / "splits.csv")
        kinds = text_kinds(rdb, store, None)
        if "video" not in kinds:
            raise er.EvalError(f"--ridge_texts {args.ridge_texts} holds no text of a video of the store {store_name}")
        rows, windows = kinds["video"]
        rview = er.WindowView(store, windows)
        ids = [rdb.ids[i] for i in rows]
        sp = rsplits.reindex(ids).fillna("").to_numpy()
        pairs = {s: er.Pairs.make([ids[i] for i in np.flatnonzero(sp == s)], rdb.embeddings[rows][sp == s],
                                  [ids[i] for i in np.flatnonzero(sp == s)], rdb.text_ids[rows][sp == s])
                 for s in ("train", "val")}
        mapping, extra = er.choose_ridge(backbone, rview, pairs["train"], pairs["val"], args.ridge_lambdas)
        video_emb = mapping(backbone.features(view, keys))
        extra["ridge_lambda"] = mapping.lam
    else:
        video_emb = er.normalize(backbone.features(view, keys))
    if video_emb.shape[1] != dim:
        raise er.EvalError(f"the backbone gives {video_emb.shape[1]}-d vectors, the options are {dim}-d")
    scores = er.answer_scores(video_emb, option_emb, valid, correct)
    chance = float((1.0 / valid.sum(1)).mean())
    dataset = args.dataset or Path(args.questions).resolve().name
    config = {"dataset": dataset, "questions": str(Path(args.questions).resolve()), "with_question": args.with_question,
              "split": args.split if args.splits else "all", "backbone": backbone.name, "head": backbone.head,
              "pool": backbone.pool, "checkpoint_sha256": backbone.checkpoint_sha256,
              "ridge_texts": str(args.ridge_texts) if backbone.head == "ridge" else None,
              "ridge_lambdas": args.ridge_lambdas if backbone.head == "ridge" else None,
              "store": [str(r.resolve()) for r in store.roots]}
    rid = er.run_id(config)
    lo, hi = bootstrap_interval(scores)
    metrics = {"accuracy": float(scores.mean()), "ci_low": lo, "ci_high": hi, "chance": chance,
               "n_questions": len(groups), "num_options": K, **extra}
    out = Path(args.output_dir)
    path = er.save_run(out, rid, {"run_id": rid, "config": config, "label": backbone.label(), "metrics": metrics,
                                  "per_question": dict(zip([q for q, _ in groups], scores.tolist()))})
    row = {**er.base_row(backbone, store.manifest["encoder"]), "run_id": rid, "dataset": dataset,
           "questions": "question + option" if args.with_question else "option", "split": config["split"],
           "with_question": args.with_question, "result_json": str(path),
           **{k: v for k, v in metrics.items() if k in er.MCQA_COLUMNS}}
    er.write_row(out / "mcqa.csv", row, er.MCQA_COLUMNS, key=("run_id",))
    print(json.dumps({"run_id": rid, "label": backbone.label(), **{k: v for k, v in metrics.items()
                                                                    if not isinstance(v, dict)}}))
    print(er.write_tables(out))
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
