"""YouCook2 (Zhou et al., AAAI 2018) captions as video-text pairs for retrieval (the second
paper's zero-shot benchmark: text->video R@1 20.4 unmasked, 20.5 at 75% masking, ViT-L).

Annotation file: the official ``youcookii_annotations_trainval.json``::

    {"database": {"<youtube id>": {"subset": "training" | "validation" | ..., "duration": <s>,
                                   "annotations": [{"segment": [start_s, end_s],
                                                    "sentence": "..."}, ...], ...}, ...}}

Two kinds of text, both written to one text database (``datasets.texts``'s format):

- **video text** (id = the video id): the video's sentences in time order (by start, then end,
  then file order), each stripped of a trailing period and joined as ``"s1. s2. s3."``;
- **span text** (id = ``<video id>@<k>``, ``k`` the sentence's index in time order): the
  sentence alone, paired with the store segments of its span, not with the whole video. A
  segment belongs to a span when its midpoint lies in ``[start, end]``; a span shorter than
  every segment's midpoint spacing takes the one segment overlapping it most. Spans beyond the
  video's last segment are dropped and counted.

``spans.csv`` (``text_id, video_id, sentence, start_s, end_s, start_segment, stop_segment``,
stop exclusive) and ``splits.csv`` (``video_id, split``) go beside the database:
``validation`` is the test split (YouCook2's test annotations are not public), ``training``
is split into train and a seeded ``--val_fraction`` of val (for choosing the ridge baseline's
regularization, never the test videos). Videos without annotations, or not in the store, are
skipped and counted.

Texts longer than the text tower's ``model_max_length`` (in its own tokens) are truncated by
the tower; the build counts them per kind and prints the counts (paragraphs of many steps do
exceed CLIP's 77 tokens).

    python -m datasets.youcook2 --annotations youcookii_annotations_trainval.json \\
        --data_path stores/youcook2_clip --encoder clip --checkpoint CLIP_DIR --output_dir texts/youcook2
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.captions import add_text_tower_args
from util.cli import ArgumentParser, UserError, fraction, output_dir, resolve_device_flag, run_cli
from util.io import atomic_write_text, read_json

SPLIT_OF_SUBSET = {"training": "train", "validation": "test"}
VAL_FRACTION = 0.1
SPAN_COLUMNS = ["text_id", "video_id", "sentence", "start_s", "end_s", "start_segment", "stop_segment"]


class YouCook2Error(UserError, ValueError):
    """A YouCook2 annotation file that cannot be read; the message names the file and the video."""


@dataclass
class YouCook2:
    """``videos``: ``video_id, subset, duration, text`` (one row per annotated video);
    ``sentences``: ``text_id, video_id, sentence, start_s, end_s`` in time order per video;
    ``skipped``: ``{reason: count}``."""
    videos: pd.DataFrame
    sentences: pd.DataFrame
    skipped: dict


def paragraph(sentences: list[str]) -> str:
    """``"s1. s2."``: each sentence stripped of surrounding space and trailing periods."""
    parts = [s.strip().rstrip(".").strip() for s in sentences]
    return " ".join(f"{p}." for p in parts if p)


def read_annotations(path: str | Path, subsets=tuple(SPLIT_OF_SUBSET)) -> YouCook2:
    """Parse and validate the annotation JSON (see the module docstring)."""
    path = Path(path)
    data = read_json(path, YouCook2Error, f"YouCook2 annotation file {path} does not exist")
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise YouCook2Error(f"{path}: expected {{\"database\": {{video_id: {{subset, duration, annotations}}}}}}")
    videos, sentences = [], []
    skipped = {"other subset": 0, "no annotations": 0}
    for vid, entry in db.items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise YouCook2Error(f"{where} is not an object")
        subset = entry.get("subset")
        if not isinstance(subset, str):
            raise YouCook2Error(f"{where} has no \"subset\" string (got {subset!r})")
        if subset not in subsets:
            skipped["other subset"] += 1
            continue
        duration = entry.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
                or duration <= 0:
            raise YouCook2Error(f"{where}: \"duration\" = {duration!r} is not a positive number of seconds")
        anns = entry.get("annotations")
        if anns is None or anns == []:
            skipped["no annotations"] += 1
            continue
        if not isinstance(anns, list):
            raise YouCook2Error(f"{where}: \"annotations\" is not a list")
        spans = []
        for i, a in enumerate(anns):
            seg = a.get("segment") if isinstance(a, dict) else None
            sentence = a.get("sentence") if isinstance(a, dict) else None
            if not (isinstance(seg, list) and len(seg) == 2 and all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in seg)):
                raise YouCook2Error(f"{where} annotation {i}: \"segment\" = {seg!r} is not [start, end] in seconds")
            if seg[1] < seg[0] or seg[0] < 0:
                raise YouCook2Error(f"{where} annotation {i}: segment {seg} ends before it starts or starts below 0")
            if not isinstance(sentence, str) or not sentence.strip():
                raise YouCook2Error(f"{where} annotation {i}: \"sentence\" is not a non-empty string")
            spans.append((float(seg[0]), float(seg[1]), i, sentence.strip()))
        spans.sort()  # time order: start, end, then file order
        videos.append({"video_id": vid, "subset": subset, "duration": float(duration),
                       "text": paragraph([s[3] for s in spans])})
        sentences += [{"text_id": f"{vid}@{k}", "video_id": vid, "sentence": s, "start_s": a, "end_s": b}
                      for k, (a, b, _, s) in enumerate(spans)]
    if not videos:
        raise YouCook2Error(f"{path}: no annotated video in the subsets {list(subsets)}")
    return YouCook2(pd.DataFrame(videos), pd.DataFrame(sentences), skipped)


def span_segments(times: np.ndarray, start: float, end: float) -> tuple[int, int] | None:
    """``[a, b)`` store segments of the span ``[start, end]`` seconds: the segments whose midpoint
    lies in the span, or else the one overlapping it most (the earlier on ties); ``None`` when
    no segment overlaps it. ``times``: ``[n, 2]`` start / end seconds (``EmbeddingStore.times``)."""
    mid = times.mean(1)
    inside = np.flatnonzero((mid >= start) & (mid <= end))
    if len(inside):
        return int(inside[0]), int(inside[-1]) + 1
    overlap = np.minimum(times[:, 1], end) - np.maximum(times[:, 0], start)
    best = int(overlap.argmax())
    point = start == end and times[best, 0] <= start <= times[best, 1]  # a zero-length span inside a segment
    return (best, best + 1) if overlap[best] > 0 or point else None


def pair_with_store(yc: YouCook2, store, val_fraction: float = VAL_FRACTION, seed: int = 0):
    """``(texts, spans, splits, counts)`` for the videos of ``store``: ``texts`` (``id, text,
    kind``: video / span), ``spans`` (``SPAN_COLUMNS``), ``splits`` (``video_id, split``)."""
    inside = yc.videos["video_id"].isin(set(store.video_ids))
    videos = yc.videos[inside].reset_index(drop=True)
    counts = {"videos": int(len(videos)), "videos_not_in_store": int((~inside).sum()), **{
        f"videos_{k.replace(' ', '_')}": v for k, v in yc.skipped.items()}}
    rows = []
    sent = yc.sentences[yc.sentences["video_id"].isin(set(videos["video_id"]))]
    for vid, g in sent.groupby("video_id", sort=False):
        times = store.times(vid)
        for r in g.itertuples(index=False):
            ab = span_segments(times, r.start_s, r.end_s)
            if ab is not None:
                rows.append({**r._asdict(), "start_segment": ab[0], "stop_segment": ab[1]})
    spans = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    counts["spans"] = int(len(spans))
    counts["spans_outside_store_segments"] = int(len(sent) - len(spans))
    texts = pd.concat([pd.DataFrame({"id": videos["video_id"], "text": videos["text"], "kind": "video"}),
                       pd.DataFrame({"id": spans["text_id"], "text": spans["sentence"], "kind": "span"})],
                      ignore_index=True)
    split = videos["subset"].map(SPLIT_OF_SUBSET).fillna("test").to_numpy(dtype=object)
    train = np.flatnonzero(split == "train")
    rng = np.random.default_rng(seed)
    val = rng.permutation(train)[:int(round(val_fraction * len(train)))]
    split[val] = "val"
    splits = pd.DataFrame({"video_id": videos["video_id"], "split": split})
    counts.update({f"{s}_videos": int((split == s).sum()) for s in ("train", "val", "test")})
    return texts, spans, splits, counts


def count_truncated(texts: pd.DataFrame, tower) -> dict:
    """``{"max_tokens": n, "<kind>_truncated": count}`` for each ``kind`` of ``texts`` (``text,
    kind``) longer than the tower's limit (``datasets.texts.tower_token_counter``); empty when
    the tower does not expose its tokenizer."""
    from datasets.texts import tower_token_counter
    count, limit = tower_token_counter(tower)
    if count is None:
        return {}
    over = np.asarray(count(texts["text"].tolist())) > limit
    kinds = texts["kind"].to_numpy()
    return {"max_tokens": limit, **{f"{k}_truncated": int(over[kinds == k].sum()) for k in pd.unique(kinds)}}


# --- CLI --------------------------------------------------------------------------------------
def get_args_parser():
    p = argparse.ArgumentParser("YouCook2 texts for retrieval", add_help=False)
    p.add_argument("--annotations", required=True, help="youcookii_annotations_trainval.json")
    p.add_argument("--data_path", nargs="+", required=True, help="the embedding store(s) of the YouCook2 videos")
    p.add_argument("--output_dir", required=True, type=output_dir, help="directory of the text database")
    p.add_argument("--val_fraction", type=fraction, default=VAL_FRACTION,
                   help="share of the training videos held out as val (ridge selection)")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the val split")
    add_text_tower_args(p)
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    from datasets.store import EmbeddingStore
    store = EmbeddingStore(args.data_path)
    yc = read_annotations(args.annotations)
    texts, spans, splits, counts = pair_with_store(yc, store, args.val_fraction, args.split_seed)
    if not len(texts):
        raise YouCook2Error(f"{args.annotations}: none of its videos is in the store "
                            f"{', '.join(map(str, store.roots))}")
    from preprocessing.encoders import build_encoder
    from datasets.texts import build_text_database
    tower = build_encoder(args.encoder, args.checkpoint, resolve_device_flag(args))
    counts.update(count_truncated(texts, tower))
    meta = build_text_database(texts[["id", "text"]], tower.encode_text, tower.name, store.manifest,
                               args.output_dir, store_name=", ".join(map(str, store.roots)),
                               batch_size=args.batch_size, source=str(args.annotations), overwrite=args.overwrite)
    out = Path(args.output_dir)
    atomic_write_text(out / "spans.csv", spans.to_csv(index=False))
    atomic_write_text(out / "splits.csv", splits.to_csv(index=False))
    atomic_write_text(out / "youcook2.json", json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts))
    return {"counts": counts, "meta": meta}


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
