"""Multiple-choice questions about videos, and their option texts embedded for zero-shot answering.

The question table (CSV), one row per option::

    question_id, video_id, option, text, correct[, question]

``option`` an integer, ``correct`` 1 for exactly one option of each question; ``question`` the
question's own text (optional; EgoSchema has one, the synthetic order questions do not). The
synthetic corpus writes one (``order_questions.csv``); ``datasets.egoschema`` turns EgoSchema's
JSON into one.

The build embeds every option with the store's encoder's text tower into a text database
(``datasets.texts``) with ids ``<question_id>#<option>`` (the option alone) and, where the
question has a text, ``<question_id>#<option>+q`` (``"<question> <option>"``), and writes the
table beside it as ``questions.csv`` (questions of videos not in the store are left out and
counted). ``eval_mcqa.py`` reads that directory.

    python -m datasets.questions --questions corpus/order_questions.csv --data_path corpus/benchmark \\
        --encoder clip --checkpoint CLIP_DIR --output_dir texts/order
    python -m datasets.questions --questions egoschema/questions.json --answers egoschema/subset_answers.json \\
        --data_path STORE --encoder clip --checkpoint CLIP_DIR --output_dir texts/egoschema
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.captions import add_text_tower_args
from util.cli import ArgumentParser, UserError, output_dir, resolve_device_flag, run_cli
from util.io import atomic_write_text

COLUMNS = ["question_id", "video_id", "option", "text", "correct", "question"]
TABLE = "questions.csv"


class QuestionError(UserError, ValueError):
    """A question table that cannot be used; the message names the file and the question."""


def option_id(question_id: str, option, with_question: bool = False) -> str:
    return f"{question_id}#{option}" + ("+q" if with_question else "")


def check_questions(df: pd.DataFrame, path) -> pd.DataFrame:
    """Validate a question table (columns, one video and exactly one correct option per question)."""
    missing = [c for c in COLUMNS[:5] if c not in df.columns]
    if missing:
        raise QuestionError(f"{path} needs the columns {COLUMNS[:5]} (+ optional question); it lacks {missing}")
    df = df.copy()
    if "question" not in df.columns:
        df["question"] = ""
    try:
        df["option"] = df["option"].astype(np.int64)
        df["correct"] = df["correct"].astype(np.int64)
    except (TypeError, ValueError):
        raise QuestionError(f"{path}: the option and correct columns must be integers") from None
    df["text"] = df["text"].astype(str).str.strip()
    df["question"] = df["question"].astype(str).str.strip()
    if (df["text"] == "").any():
        q = df.loc[df["text"] == "", "question_id"].iloc[0]
        raise QuestionError(f"{path}: question {q!r} has an empty option text")
    g = df.groupby("question_id", sort=False)
    checks = [(g["video_id"].nunique() != 1, "refers to several videos"),
              (g["correct"].sum() != 1, "does not have exactly one correct option"),
              (g["option"].nunique() != g.size(), "repeats an option number"),
              (g.size() < 2, "has fewer than 2 options"),
              (~g["correct"].apply(lambda c: c.isin([0, 1]).all()), "has a correct value other than 0 / 1")]
    for bad, what in checks:
        if bad.any():
            raise QuestionError(f"{path}: question {bad[bad].index[0]!r} {what}")
    return df[COLUMNS].sort_values(["question_id", "option"], kind="stable").reset_index(drop=True)


def read_questions(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise QuestionError(f"question table {path} does not exist")
    try:
        df = pd.read_csv(path, dtype={"question_id": str, "video_id": str, "text": str, "question": str},
                         keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise QuestionError(f"{path} is not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    return check_questions(df, path)


def option_texts(table: pd.DataFrame) -> pd.DataFrame:
    """``id, text`` rows to embed: every option alone, and after its question where there is one."""
    alone = pd.DataFrame({"id": [option_id(q, o) for q, o in zip(table.question_id, table.option)],
                          "text": table.text})
    has_q = table[table.question != ""]
    with_q = pd.DataFrame({"id": [option_id(q, o, True) for q, o in zip(has_q.question_id, has_q.option)],
                           "text": (has_q.question + " " + has_q.text).to_numpy()})
    return pd.concat([alone, with_q], ignore_index=True)


def load_questions(root: str | Path) -> pd.DataFrame:
    """The ``questions.csv`` of a built question database directory."""
    root = Path(root)
    if not (root / TABLE).is_file():
        raise QuestionError(f"{root / TABLE} is missing: {root} is not a question database "
                            "(build one with `python -m datasets.questions`)")
    return read_questions(root / TABLE)


# --- CLI --------------------------------------------------------------------------------------
def get_args_parser():
    p = argparse.ArgumentParser("Option texts of multiple-choice questions", add_help=False)
    p.add_argument("--questions", required=True,
                   help="question table CSV (see above), or EgoSchema's questions.json (with --answers)")
    p.add_argument("--answers", default=None, help="EgoSchema's subset_answers.json ({q_uid: index})")
    p.add_argument("--data_path", nargs="+", required=True, help="the embedding store(s) of the videos")
    p.add_argument("--output_dir", required=True, type=output_dir, help="directory of the question database")
    add_text_tower_args(p, overwrite=False)
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    from datasets.store import EmbeddingStore
    store = EmbeddingStore(args.data_path)
    if Path(args.questions).suffix == ".json":
        from datasets.egoschema import read_egoschema
        table, counts = read_egoschema(args.questions, args.answers)
    else:
        if args.answers:
            parser.error("--answers goes with EgoSchema's questions.json, not with a question table CSV")
        table, counts = read_questions(args.questions), {}
    inside = table.video_id.isin(set(store.video_ids))
    counts["questions_of_videos_not_in_store"] = int(table[~inside].question_id.nunique())
    table = table[inside].reset_index(drop=True)
    counts["questions_kept"] = int(table.question_id.nunique())
    if not len(table):
        raise QuestionError(f"{args.questions}: no question is about a video of the store "
                            f"{', '.join(map(str, store.roots))}")
    from preprocessing.encoders import build_encoder
    from datasets.texts import build_text_database
    from datasets.youcook2 import count_truncated
    tower = build_encoder(args.encoder, args.checkpoint, resolve_device_flag(args))
    texts = option_texts(table)
    counts.update(count_truncated(texts.assign(kind=np.where(texts.id.str.endswith("+q"), "question_option",
                                                            "option")), tower))
    build_text_database(texts, tower.encode_text, tower.name, store.manifest, args.output_dir,
                        store_name=", ".join(map(str, store.roots)), batch_size=args.batch_size,
                        source=str(args.questions))
    atomic_write_text(Path(args.output_dir) / TABLE, table.to_csv(index=False))
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
