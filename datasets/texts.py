"""Text database: one text per id (a video, or an evaluation's option / span), embedded once by the
text tower of the store's encoder, for the contrastive objective (docs/contrastive.md) and the
retrieval / QA evaluations. Built with the caption database's builder
(``datasets.captions.embed_texts``: chunked, resumable, the tower checked against the store).

Input: a CSV with columns ``video_id, text`` (an ``id`` column may stand for ``video_id``; ids
need not be videos: ``q_uid#3``, ``vid@17-25`` with ``--no_store_check``). An id with two
different texts is refused, naming it; empty texts are dropped. Output directory::

    meta.json        format, encoder, dim, num_ids, num_texts, num_truncated, max_length,
                     texts_sha256, source (written last: the commit point)
    texts.csv        text_id, text            (de-duplicated texts, in first-seen order)
    rows.csv         id, text_id               (one row per id, in the table's order)
    embeddings.npy   float32 [num_texts, dim], L2-normalized
    unknown_ids.txt  the ids that are not videos of the store (only when there are any)

Truncation: a text longer than the tower's ``max_length`` tokens is cut by the tower; the texts
that were are counted (``num_truncated``), printed and recorded in ``meta.json`` (and a
training run's config.json / log). ``TextDatabase.embeddings`` has one row per id.

    python -m datasets.texts --texts texts.csv --data_path STORE --encoder clip \\
        --checkpoint ENCODER_DIR --output_dir TEXT_DB
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.captions import (CaptionError, _save_npy, add_text_tower_args, check_tower, embed_texts,
                               existing_database, texts_hash)
from datasets.store import EmbeddingStore
from util.cli import ArgumentParser, output_dir, resolve_device_flag, run_cli
from util.io import atomic_write_text

FORMAT = "lvmae-texts/1"
UNKNOWN_IDS = "unknown_ids.txt"


class TextError(CaptionError):
    """A text table or database that cannot be used as asked; the message names the file."""


# --- the text table ---------------------------------------------------------------------------
def read_text_table(path: str | Path) -> pd.DataFrame:
    """``id, text`` rows of a ``video_id,text`` (or ``id,text``) CSV: stripped, empty texts and
    exact duplicate rows dropped; an id with two different texts refused."""
    path = Path(path)
    if not path.is_file():
        raise TextError(f"text table {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TextError(f"text table {path} cannot be read ({' '.join(str(e).split())[:200]})") from None
    id_col = "video_id" if "video_id" in df.columns else "id" if "id" in df.columns else None
    if id_col is None or "text" not in df.columns:
        raise TextError(f"{path} needs columns video_id, text (has {list(df.columns)})")
    return clean_table(df.rename(columns={id_col: "id"})[["id", "text"]], str(path))


def clean_table(table: pd.DataFrame, source: str = "the table") -> pd.DataFrame:
    """``id, text`` (``video_id`` accepted for ``id``): stripped, empty texts dropped, identical
    rows merged; an id with several different texts refused, naming it."""
    if "id" not in table.columns and "video_id" in table.columns:
        table = table.rename(columns={"video_id": "id"})
    missing = [c for c in ("id", "text") if c not in table.columns]
    if missing:
        raise TextError(f"{source} lacks columns {missing} (has {list(table.columns)})")
    table = table[["id", "text"]].astype(str).assign(text=lambda t: t["text"].str.strip())
    table = table[table["text"] != ""].drop_duplicates()
    dup = table.duplicated("id", keep=False)
    if dup.any():
        raise TextError(f"{source}: id {table[dup].iloc[0]['id']!r} has several different texts "
                        "(one text per id; give the others their own ids)")
    return table.reset_index(drop=True)


# --- building ---------------------------------------------------------------------------------
def tower_token_counter(tower):
    """``(count(list[str]) -> int array, max_length)`` of a preprocessing text tower: the token
    counts its tokenizer gives (special tokens included) and the length it truncates to; ``(None,
    None)`` when the tower does not expose its tokenizer."""
    tokenizer = getattr(tower, "tokenizer", None)
    max_length = getattr(tower, "context_length", None)
    model = getattr(tower, "model", None)
    if tokenizer is None and model is not None:  # InternVideo2: tokenizer and length on the model
        tokenizer = getattr(model, "tokenizer", None)
        max_length = getattr(getattr(model, "config", None), "max_txt_l", None)
    if tokenizer is None or max_length is None:
        return None, None

    def count(texts):
        return np.asarray([len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]])
    return count, int(max_length)


def build_text_database(table: pd.DataFrame, encode_text, encoder: str, manifest: dict, out: str | Path,
                        *, count_tokens=None, max_length: int | None = None, store_name: str = "the store",
                        unknown_ids=(), batch_size: int = 256, chunk_size: int = 4096, source: str = "",
                        overwrite: bool = False, progress: bool = True) -> dict:
    """Embed the texts of ``table`` (``id, text``; ``video_id`` accepted for ``id``) and write the
    database to ``out``; returns its meta.

    ``encode_text(list[str]) -> [N, D]`` is the text tower, ``encoder`` its manifest string,
    refused unless it is the store's (``manifest``) encoder and dim. ``count_tokens`` /
    ``max_length`` (``tower_token_counter``) count the truncated texts; ``unknown_ids`` (ids
    that are no video of the store) are listed in ``unknown_ids.txt``. Resumes from committed
    chunks in ``out/parts``.
    """
    out = Path(out)
    table = clean_table(table, source or "the table")
    check_tower(encoder, None, manifest, store_name, f"text tower {encoder!r}")
    texts = pd.unique(table["text"]).tolist()
    if not texts:
        raise TextError(f"no text to embed in {source or 'the table'}")
    digest = texts_hash([f"{i}\0{t}" for i, t in zip(table["id"], table["text"])])
    meta = existing_database(out, digest, encoder, overwrite, kind="text")
    if meta is not None:
        print(f"text database {out} is complete ({meta['num_ids']} ids, {meta['num_texts']} texts); nothing to do")
        return meta
    num_truncated = None
    if count_tokens is not None and max_length is not None:
        num_truncated = int((np.asarray(count_tokens(texts)) > max_length).sum())
    emb = embed_texts(texts, encode_text, encoder, manifest, out, digest, store_name=store_name,
                      batch_size=batch_size, chunk_size=chunk_size, progress=progress, kind="text")
    text_ids = pd.Series(np.arange(len(texts)), index=texts)
    rows = pd.DataFrame({"id": table["id"], "text_id": table["text"].map(text_ids).to_numpy()})
    _save_npy(out / "embeddings.npy", emb)
    atomic_write_text(out / "texts.csv", pd.DataFrame({"text_id": text_ids.to_numpy(), "text": texts})
                      .to_csv(index=False))
    atomic_write_text(out / "rows.csv", rows.to_csv(index=False))
    unknown = sorted(set(map(str, unknown_ids)))
    if unknown:
        atomic_write_text(out / UNKNOWN_IDS, "\n".join(unknown) + "\n")
    meta = {"format": FORMAT, "encoder": encoder, "dim": int(emb.shape[1]), "num_ids": len(rows),
            "num_texts": len(texts), "num_truncated": num_truncated, "max_length": max_length,
            "num_unknown_ids": len(unknown), "texts_sha256": digest, "source": str(source)}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out / "parts")
    return meta


# --- reading ----------------------------------------------------------------------------------
class TextDatabase:
    """A built text database: ``ids`` / ``texts`` (one per id), ``text_ids`` (int64, equal for
    identical texts), ``embeddings`` float32 ``[len(ids), dim]`` (unit rows), ``meta``,
    ``num_truncated`` (None when the tower's tokenizer was not available), ``index(id)``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            hint = " (the build did not finish: rerun it to resume)" if (self.root / "parts").is_dir() else ""
            raise TextError(f"{meta_path} is missing: {self.root} is not a text database{hint}; "
                            "build one with `python -m datasets.texts`")
        try:
            self.meta = json.loads(meta_path.read_text())
            unique = np.load(self.root / "embeddings.npy", allow_pickle=False)
            texts = pd.read_csv(self.root / "texts.csv", dtype={"text": str}, keep_default_na=False, na_values=[])
            rows = pd.read_csv(self.root / "rows.csv", dtype={"id": str}, keep_default_na=False, na_values=[])
        except (OSError, ValueError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise TextError(f"text database {self.root} cannot be read ({' '.join(str(e).split())[:200]}); "
                            "rebuild it with `python -m datasets.texts`") from None
        fmt = self.meta.get("format") if isinstance(self.meta, dict) else None
        if fmt != FORMAT:
            raise TextError(f"{meta_path}: format {fmt!r} is not {FORMAT!r}")
        unique_texts = texts.sort_values("text_id")["text"].tolist()
        if unique.shape != (len(unique_texts), self.meta["dim"]):
            raise TextError(f"{self.root}: embeddings.npy is {unique.shape}, expected "
                            f"[{len(unique_texts)}, {self.meta['dim']}]; rebuild the database")
        self.ids: list[str] = rows["id"].tolist()
        self.text_ids = rows["text_id"].to_numpy(np.int64)
        self.texts: list[str] = [unique_texts[i] for i in self.text_ids]
        self.embeddings: np.ndarray = unique[self.text_ids]
        self._index = {v: i for i, v in enumerate(self.ids)}

    @property
    def encoder(self) -> str:
        return self.meta["encoder"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def num_truncated(self) -> int | None:
        return self.meta.get("num_truncated")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._index

    def index(self, id_: str) -> int:
        """Row of ``id_`` in ``ids`` / ``texts`` / ``embeddings``."""
        try:
            return self._index[id_]
        except KeyError:
            raise TextError(f"id {id_!r} is not in the text database {self.root}") from None

    def check_store(self, manifest: dict, store_name: str) -> None:
        """Refuse a store from another encoder / dim than the one the texts were embedded for."""
        check_tower(self.encoder, self.dim, manifest, store_name, f"the text database {self.root}")


# --- CLI --------------------------------------------------------------------------------------
def get_args_parser():
    p = argparse.ArgumentParser("Text database for contrastive pretraining and retrieval", add_help=False)
    p.add_argument("--texts", required=True, help="CSV with columns video_id (or id), text")
    p.add_argument("--data_path", nargs="+", required=True,
                   help="the embedding store(s) the texts belong to (its encoder and dim fix the text tower)")
    p.add_argument("--output_dir", required=True, type=output_dir, help="directory of the text database")
    p.add_argument("--no_store_check", dest="store_check", action="store_false",
                   help="the ids are not videos of the store (options, spans): do not count or list unknown ones")
    add_text_tower_args(p, unit="texts", chunked=True)
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    store = EmbeddingStore(args.data_path)
    store_name = ", ".join(map(str, store.roots))
    table = read_text_table(args.texts)
    unknown = sorted(set(table["id"]) - set(store.video_ids)) if args.store_check else []
    print(f"{len(table)} texts for {len(table) - len(unknown)} videos of the store"
          + (f"; {len(unknown)} ids are not videos of the store (listed in {Path(args.output_dir) / UNKNOWN_IDS})"
             if unknown else ""))
    from preprocessing.encoders import build_encoder  # imports transformers: only when embedding
    tower = build_encoder(args.encoder, args.checkpoint, resolve_device_flag(args))
    if not tower.has_text:
        raise TextError(f"--encoder {args.encoder} ({tower.name}) has no text tower to embed texts with")
    check_tower(tower.name, tower.dim, store.manifest, store_name, f"--encoder {args.encoder} --checkpoint "
                f"{args.checkpoint}")
    count, max_length = tower_token_counter(tower)
    meta = build_text_database(table, tower.encode_text, tower.name, store.manifest, args.output_dir,
                               count_tokens=count, max_length=max_length, store_name=store_name,
                               unknown_ids=unknown, batch_size=args.batch_size, chunk_size=args.chunk_size,
                               source=args.texts, overwrite=args.overwrite)
    if meta.get("num_truncated") is not None:
        print(f"{meta['num_truncated']} of {meta['num_texts']} distinct texts exceed the tower's "
              f"{meta['max_length']} tokens and were truncated")
    print(json.dumps(meta))
    return meta


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
