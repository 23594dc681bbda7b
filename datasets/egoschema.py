"""EgoSchema (Mangalam et al., NeurIPS 2023): five-way multiple-choice questions about 3-minute
egocentric clips, as a ``datasets.questions`` table for zero-shot answering.

Files: ``questions.json``, a list of ``{"q_uid", "question", "option 0" ... "option 4", ...}``
(the clip's video id is the ``q_uid``), and ``subset_answers.json``, ``{q_uid: correct option
index}`` (the public 500-question subset; the other answers are held by the benchmark's
server). Questions without an answer are left out and counted.

    python -m datasets.questions --questions egoschema/questions.json \\
        --answers egoschema/subset_answers.json --data_path STORE --encoder clip --checkpoint DIR \\
        --output_dir texts/egoschema
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from util.cli import UserError
from util.io import read_json

OPTION_KEY = re.compile(r"^option (\d+)$")


class EgoSchemaError(UserError, ValueError):
    """An EgoSchema file that cannot be read; the message names the file and the question."""


def _load_json(path: Path, what: str):
    return read_json(path, EgoSchemaError, f"EgoSchema {what} file {path} does not exist")


def read_answers(path: str | Path) -> dict[str, int]:
    path = Path(path)
    data = _load_json(path, "answers")
    if not isinstance(data, dict):
        raise EgoSchemaError(f"{path}: expected {{q_uid: correct option index}}, found a {type(data).__name__}")
    for q, a in data.items():
        if isinstance(a, bool) or not isinstance(a, int) or a < 0:
            raise EgoSchemaError(f"{path}: the answer of {q!r} is {a!r}, not an option index")
    return data


def read_egoschema(questions: str | Path, answers: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """``(table, counts)``: the ``datasets.questions`` long table (``question_id, video_id,
    option, text, correct, question``) of every answered question, and how many were left out."""
    path = Path(questions)
    data = _load_json(path, "questions")
    if not isinstance(data, list):
        raise EgoSchemaError(f"{path}: expected a list of {{q_uid, question, option 0 ... option 4}}, "
                             f"found a {type(data).__name__}")
    key = read_answers(answers) if answers is not None else {}
    rows, seen, unanswered = [], set(), 0
    for i, q in enumerate(data):
        if not isinstance(q, dict) or not isinstance(q.get("q_uid"), str) or not q["q_uid"]:
            raise EgoSchemaError(f"{path}: entry {i} has no \"q_uid\" string")
        uid = q["q_uid"]
        where = f"{path}: question {uid!r}"
        if uid in seen:
            raise EgoSchemaError(f"{where} appears twice")
        seen.add(uid)
        question = q.get("question")
        if not isinstance(question, str) or not question.strip():
            raise EgoSchemaError(f"{where} has no \"question\" string")
        options = {int(m.group(1)): v for k, v in q.items() if (m := OPTION_KEY.match(k))}
        if sorted(options) != list(range(len(options))) or len(options) < 2:
            raise EgoSchemaError(f"{where}: options must be \"option 0\" ... \"option N-1\" with N >= 2, "
                                 f"found {sorted(options)}")
        bad = [k for k, v in options.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise EgoSchemaError(f"{where}: \"option {bad[0]}\" is not a non-empty string")
        if uid not in key:
            unanswered += 1
            continue
        if key[uid] >= len(options):
            raise EgoSchemaError(f"{Path(answers)}: the answer of {uid!r} is {key[uid]}, but it has "
                                 f"{len(options)} options")
        rows += [{"question_id": uid, "video_id": uid, "option": k, "text": options[k].strip(),
                  "correct": int(k == key[uid]), "question": question.strip()} for k in sorted(options)]
    missing = sorted(set(key) - seen)
    if not rows:
        raise EgoSchemaError(f"{path}: no question has an answer in {answers}" if answers is not None
                             else f"{path}: answers are needed (--answers subset_answers.json)")
    counts = {"questions": len(seen) - unanswered, "unanswered": unanswered, "answers_without_question": len(missing)}
    return pd.DataFrame(rows), counts
