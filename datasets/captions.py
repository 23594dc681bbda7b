"""Caption database: segment captions embedded by the text tower of the store's encoder (Sec. 3.4).

Input: a CSV with columns ``video_id, caption`` and either ``segment`` (0-based segment index)
or ``start, end`` (seconds; a segment takes the caption overlapping it longest, ties to the
earlier caption, via ``EmbeddingStore.times``). Output directory::

    meta.json        format, encoder, dim, num_captions, num_rows, texts_sha256, source
    captions.csv     caption_id, caption       (de-duplicated texts, in first-seen order)
    segments.csv     video_id, segment, caption_id
    embeddings.npy   float32 [num_captions, dim], L2-normalized
    parts/           chunks of embeddings while building (removed when done)

The text tower must be the one paired with the video encoder that made the store: its encoder
string and output dim must equal the store manifest's ``encoder`` / ``dim`` (checked before and
after embedding). Embedding runs in chunks of ``--chunk_size`` texts, each committed
atomically to ``parts/``; a rerun after a kill embeds only the missing chunks. ``meta.json`` is
written last: it is the commit point of the database.

    python -m datasets.captions --captions captions.csv --data_path STORE \\
        --encoder clip --checkpoint ENCODER_DIR --output_dir CAPTION_DB
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from datasets.store import EmbeddingStore
from util.cli import DEVICE_HELP, ArgumentParser, UserError, output_dir, positive_int, resolve_device_flag, run_cli
from util.io import atomic_write_bytes, atomic_write_text

FORMAT = "lvmae-captions/1"


class CaptionError(UserError, ValueError):
    """A caption table or database that cannot be used as asked; the message names the file."""


# --- the caption table ------------------------------------------------------------------------
def read_caption_table(path: str | Path, store: EmbeddingStore | None = None) -> pd.DataFrame:
    """``video_id, segment, caption`` rows from a caption CSV (see the module docstring).

    ``start, end`` columns need ``store`` for the segment times. Refuses a segment outside its
    video, and two different captions for one segment, naming the video.
    """
    path = Path(path)
    if not path.is_file():
        raise CaptionError(f"caption table {path} does not exist")
    df = pd.read_csv(path, dtype={"video_id": str, "caption": str}, keep_default_na=False, na_values=[])
    missing = [c for c in ("video_id", "caption") if c not in df.columns]
    if missing or not ("segment" in df.columns or {"start", "end"} <= set(df.columns)):
        raise CaptionError(f"{path} needs columns video_id, caption and either segment or start, end "
                           f"(has {list(df.columns)})")
    df["caption"] = df["caption"].str.strip()
    df = df[df["caption"] != ""]
    if "segment" in df.columns:
        table = df[["video_id", "segment", "caption"]].astype({"segment": np.int64})
    else:
        if store is None:
            raise CaptionError(f"{path} gives start/end seconds: the store is needed to map them to segments")
        table = _times_to_segments(df, store, path)
    if store is not None:
        n = table["video_id"].map(pd.Series(store.lengths(), index=store.video_ids))  # NaN: not in the store
        bad = n.notna() & ((table["segment"] < 0) | (table["segment"] >= n))
        if bad.any():
            r = table[bad].iloc[0]
            raise CaptionError(f"{path}: video {r.video_id!r} has no segment {r.segment} "
                               f"(the store has {store.num_segments(r.video_id)} segments); wrong store or table?")
    table = table.drop_duplicates()
    dup = table.duplicated(["video_id", "segment"], keep=False)
    if dup.any():
        r = table[dup].iloc[0]
        raise CaptionError(f"{path}: video {r.video_id!r} segment {r.segment} has several different captions")
    return table.sort_values(["video_id", "segment"], kind="stable").reset_index(drop=True)


def _times_to_segments(df: pd.DataFrame, store: EmbeddingStore, path: Path) -> pd.DataFrame:
    """Each segment of a captioned video takes the caption overlapping it longest."""
    out = []
    for vid, rows in df.groupby("video_id", sort=False):
        if vid not in store:
            continue  # nothing to map onto; counted by the caller as a video outside the store
        seg = store.times(vid)  # [n, 2]
        cap = rows[["start", "end"]].to_numpy(np.float64)  # [m, 2]
        if not np.isfinite(cap).all() or (cap[:, 1] < cap[:, 0]).any():
            raise CaptionError(f"{path}: video {vid!r} has a caption with invalid start/end seconds")
        overlap = np.minimum(seg[:, None, 1], cap[None, :, 1]) - np.maximum(seg[:, None, 0], cap[None, :, 0])
        best = overlap.argmax(1)  # first maximum = the earlier caption on ties
        has = overlap[np.arange(len(seg)), best] > 0
        out.append(pd.DataFrame({"video_id": vid, "segment": np.flatnonzero(has),
                                 "caption": rows["caption"].to_numpy()[best[has]]}))
    if not out:
        return pd.DataFrame({"video_id": pd.Series(dtype=str), "segment": pd.Series(dtype=np.int64),
                             "caption": pd.Series(dtype=str)})
    return pd.concat(out, ignore_index=True)


# --- building ---------------------------------------------------------------------------------
def check_tower(encoder: str, dim: int | None, manifest: dict, store_name: str, what: str) -> None:
    """Refuse text embeddings outside the store's video-text space, naming both sides.
    ``what`` names the text side (a tower's flags, a caption database)."""
    if encoder != manifest["encoder"]:
        raise CaptionError(f"{what} embeds text with encoder {encoder!r}, but the store {store_name} was made by "
                           f"{manifest['encoder']!r}; texts must be embedded by the text tower paired with "
                           "the store's video encoder")
    if dim is not None and int(dim) != int(manifest["dim"]):
        raise CaptionError(f"{what} gives {dim}-d text embeddings ({encoder!r}), but the store {store_name} "
                           f"holds {manifest['dim']}-d ones")


def texts_hash(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write_bytes(path, lambda f: np.save(f, arr, allow_pickle=False))


def existing_database(out: Path, digest: str, encoder: str, overwrite: bool, kind: str = "caption") -> dict | None:
    """The meta of a complete database at ``out`` built from the same texts and tower (nothing to
    do), else None; refuses to replace another database unless ``overwrite``."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("texts_sha256") == digest and meta.get("encoder") == encoder and not overwrite:
        return meta
    if not overwrite:
        raise CaptionError(f"{out} already holds another {kind} database (other {kind}s or encoder); "
                           "pass --overwrite to replace it")
    meta_path.unlink()
    return None


def embed_texts(texts: list[str], encode_text, encoder: str, manifest: dict, out: Path, digest: str,
                store_name: str = "the store", batch_size: int = 256, chunk_size: int = 4096,
                progress: bool = True, kind: str = "caption") -> np.ndarray:
    """``[len(texts), D]`` float32 L2-normalized embeddings of ``texts`` by the text tower
    ``encode_text(list[str]) -> [N, D]`` (``encoder``: its manifest string), checked against the
    store's space. Chunks of ``chunk_size`` are committed to ``out/parts`` (resumed on a rerun);
    the caller removes ``parts`` once its database is written."""
    what = f"text tower {encoder!r}"
    check_tower(encoder, None, manifest, store_name, what)
    parts = out / "parts"
    state = {"texts_sha256": digest, "encoder": encoder, "chunk_size": chunk_size}
    state_path = parts / "state.json"
    if parts.is_dir() and (not state_path.is_file() or json.loads(state_path.read_text()) != state):
        shutil.rmtree(parts)  # chunks of another text list / tower / chunking: not reusable
    parts.mkdir(parents=True, exist_ok=True)
    if not state_path.is_file():
        atomic_write_text(state_path, json.dumps(state) + "\n")

    chunks = range(0, len(texts), chunk_size)
    todo = [c for c in chunks if not (parts / f"part-{c // chunk_size:06d}.npy").is_file()]
    if len(todo) < len(chunks):
        print(f"resuming: {len(chunks) - len(todo)} of {len(chunks)} chunks already embedded in {parts}")
    bar = tqdm(total=sum(min(chunk_size, len(texts) - c) for c in todo), desc=f"embedding {kind}s",
               unit=kind, disable=None if progress else True)
    for c in todo:
        chunk = texts[c:c + chunk_size]
        vecs = []
        for b in range(0, len(chunk), batch_size):
            v = np.asarray(_to_numpy(encode_text(chunk[b:b + batch_size])), dtype=np.float32)
            if v.ndim != 2 or v.shape[0] != len(chunk[b:b + batch_size]):
                raise CaptionError(f"text tower {encoder!r} returned shape {v.shape} for "
                                   f"{len(chunk[b:b + batch_size])} {kind}s")
            check_tower(encoder, v.shape[1], manifest, store_name, what)
            vecs.append(v)
            bar.update(len(v))
        _save_npy(parts / f"part-{c // chunk_size:06d}.npy", np.concatenate(vecs))
    bar.close()

    emb = np.concatenate([np.load(parts / f"part-{c // chunk_size:06d}.npy", allow_pickle=False) for c in chunks])
    check_tower(encoder, emb.shape[1], manifest, store_name, what)
    if emb.shape[0] != len(texts) or not np.isfinite(emb).all():
        raise CaptionError(f"{parts}: the committed chunks hold {emb.shape[0]} finite rows for {len(texts)} "
                           f"{kind}s; delete the directory and rerun")
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def build_database(table: pd.DataFrame, encode_text, encoder: str, manifest: dict, out: str | Path,
                   store_name: str = "the store", batch_size: int = 256, chunk_size: int = 4096,
                   source: str = "", overwrite: bool = False, progress: bool = True) -> dict:
    """Embed the de-duplicated captions of ``table`` and write the database to ``out``.

    ``encode_text(list[str]) -> [N, D]`` is the text tower; ``encoder`` its manifest string.
    Returns the meta dict. Resumes from committed chunks in ``out/parts``.
    """
    out = Path(out)
    check_tower(encoder, None, manifest, store_name, f"text tower {encoder!r}")
    texts = pd.unique(table["caption"]).tolist()
    if not texts:
        raise CaptionError(f"no caption left to embed from {source or 'the table'} "
                           "(no row for a video of the store?)")
    digest = texts_hash(texts)
    meta = existing_database(out, digest, encoder, overwrite)
    if meta is not None:
        print(f"caption database {out} is complete ({meta['num_captions']} captions); nothing to do")
        return meta
    emb = embed_texts(texts, encode_text, encoder, manifest, out, digest, store_name=store_name,
                      batch_size=batch_size, chunk_size=chunk_size, progress=progress)
    ids = pd.Series(np.arange(len(texts)), index=texts)
    segments = table.assign(caption_id=table["caption"].map(ids).to_numpy())[["video_id", "segment", "caption_id"]]
    _save_npy(out / "embeddings.npy", emb)
    atomic_write_text(out / "captions.csv", pd.DataFrame({"caption_id": ids.to_numpy(), "caption": texts})
                      .to_csv(index=False))
    atomic_write_text(out / "segments.csv", segments.to_csv(index=False))
    meta = {"format": FORMAT, "encoder": encoder, "dim": int(emb.shape[1]), "num_captions": len(texts),
            "num_rows": len(segments), "num_videos": int(segments["video_id"].nunique()),
            "texts_sha256": digest, "source": str(source)}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out / "parts")
    return meta


def _to_numpy(x):
    """A tower may return a torch tensor (any device / dtype) or an array."""
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else x


# --- reading ----------------------------------------------------------------------------------
class CaptionDB:
    """A built caption database: ``texts`` (list), ``embeddings`` float32 ``[C, D]`` (unit rows),
    ``meta``; ``caption_ids(vid, n)`` -> int64 ``[n]`` caption id per segment (-1 = none)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            hint = " (the build did not finish: rerun it to resume)" if (self.root / "parts").is_dir() else ""
            raise CaptionError(f"{meta_path} is missing: {self.root} is not a caption database{hint}; "
                               "build one with `python -m datasets.captions`")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.embeddings = np.load(self.root / "embeddings.npy", allow_pickle=False)
            captions = pd.read_csv(self.root / "captions.csv", dtype={"caption": str}, keep_default_na=False,
                                   na_values=[])
            segments = pd.read_csv(self.root / "segments.csv", dtype={"video_id": str}, keep_default_na=False,
                                   na_values=[])
        except (OSError, ValueError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise CaptionError(f"caption database {self.root} cannot be read ({' '.join(str(e).split())[:200]}); "
                               "rebuild it with `python -m datasets.captions`") from None
        fmt = self.meta.get("format") if isinstance(self.meta, dict) else None
        if fmt != FORMAT:
            raise CaptionError(f"{meta_path}: format {fmt!r} is not {FORMAT!r}")
        self.texts: list[str] = captions.sort_values("caption_id")["caption"].tolist()
        if self.embeddings.shape != (len(self.texts), self.meta["dim"]):
            raise CaptionError(f"{self.root}: embeddings.npy is {self.embeddings.shape}, expected "
                               f"[{len(self.texts)}, {self.meta['dim']}]; rebuild the database")
        self._segments = {vid: (g["segment"].to_numpy(np.int64), g["caption_id"].to_numpy(np.int64))
                          for vid, g in segments.groupby("video_id", sort=False)}

    @property
    def encoder(self) -> str:
        return self.meta["encoder"]

    @property
    def video_ids(self) -> list[str]:
        return list(self._segments)

    def check_store(self, manifest: dict, store_name: str) -> None:
        """Refuse a store from another encoder / dim than the one the captions were embedded for."""
        check_tower(self.encoder, self.meta["dim"], manifest, store_name, f"the caption database {self.root}")

    def caption_ids(self, vid: str, n: int) -> np.ndarray:
        ids = np.full(n, -1, dtype=np.int64)
        if vid in self._segments:
            seg, cap = self._segments[vid]
            keep = seg < n
            ids[seg[keep]] = cap[keep]
        return ids


# --- CLI --------------------------------------------------------------------------------------
def add_text_tower_args(p, unit: str = "texts", chunked: bool = False, overwrite: bool = True) -> None:
    """The text tower's flags, shared by every CLI that builds a text database (captions, video
    texts, YouCook2, questions): ``--encoder``, ``--checkpoint``, ``--batch_size``, ``--device``,
    with ``chunked`` ``--chunk_size`` and with ``overwrite`` ``--overwrite``."""
    p.add_argument("--encoder", required=True,
                   help="text tower backend: the store's encoder (a preprocessing encoder name: languagebind, clip, "
                        "internvideo2)")
    p.add_argument("--checkpoint", required=True,
                   help="local directory of that encoder (the one given to preprocessing.extract)")
    p.add_argument("--batch_size", type=positive_int, default=256, help=f"{unit} per text-tower forward pass")
    if chunked:
        p.add_argument("--chunk_size", type=positive_int, default=4096,
                       help=f"{unit} per committed chunk (the unit a rerun resumes from)")
    p.add_argument("--device", default="auto", help=f"device of the text tower: {DEVICE_HELP}")
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace an existing, different database")


def get_args_parser():
    p = argparse.ArgumentParser("Caption database for interpretable predictions", add_help=False)
    p.add_argument("--captions", required=True,
                   help="CSV with video_id, caption and either segment or start,end (seconds)")
    p.add_argument("--data_path", nargs="+", required=True,
                   help="the embedding store(s) the captions describe (encoder, dim and segment times)")
    p.add_argument("--output_dir", required=True, type=output_dir, help="directory of the caption database")
    add_text_tower_args(p, unit="captions", chunked=True)
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    resolve_device_flag(args)
    store = EmbeddingStore(args.data_path)
    store_name = ", ".join(map(str, store.roots))
    table = read_caption_table(args.captions, store)
    inside = table["video_id"].isin(set(store.video_ids))
    print(f"{len(table)} captioned segments of {table['video_id'].nunique()} videos "
          f"({int((~inside).sum())} rows of videos not in the store are kept); "
          f"{table['caption'].nunique()} distinct captions")
    from preprocessing.encoders import build_encoder  # imports transformers: only when embedding
    tower = build_encoder(args.encoder, args.checkpoint, args.device)
    if not tower.has_text:
        raise CaptionError(f"--encoder {args.encoder} ({tower.name}) has no text tower to embed captions with")
    check_tower(tower.name, tower.dim, store.manifest, store_name, f"--encoder {args.encoder} --checkpoint "
                f"{args.checkpoint}")
    meta = build_database(table, tower.encode_text, tower.name, store.manifest, args.output_dir,
                          store_name=store_name, batch_size=args.batch_size, chunk_size=args.chunk_size,
                          source=args.captions, overwrite=args.overwrite)
    print(json.dumps(meta))
    return meta


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
