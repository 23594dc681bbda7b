"""On-disk embedding store: per-segment vectors of long videos, written once, memory-mapped.

Layout of one store directory (one dataset x one short-video encoder)::

    manifest.json              format, encoder, dim, dtype, segment_seconds, stride_seconds,
                               min_last_seconds, frames_per_segment, normalized
                               (+ optional keys, read with their defaults: profile)
    shards/<part>.npy          float [rows, dim]; rows of consecutive videos back to back
    shards/<part>.times.npy    optional float [rows, 2]: start / end seconds of each segment
    index-<part>.csv           video_id, shard, offset, num_segments, duration_s, source
    failures-<part>.csv        video_id, source, reason

``<part>`` is ``<writer>-<sequence>``. A commit writes the shard (and times) under temporary
names, renames them, and renames the index into place last: the index is the commit point,
so a writer killed at any moment leaves either a whole commit or nothing a reader sees
(orphan shards without an index are ignored). The reader is the union of every
``index-*.csv`` of every store it is given.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from util.cli import UserError
from util.io import atomic_write_bytes, atomic_write_text, remove_orphans

FORMAT = "lvmae-store/1"
INDEX_COLUMNS = ["video_id", "shard", "offset", "num_segments", "duration_s", "source"]
FAILURE_COLUMNS = ["video_id", "source", "reason"]
MANIFEST_KEYS = ("format", "encoder", "dim", "dtype", "segment_seconds", "stride_seconds",
                 "min_last_seconds", "frames_per_segment", "normalized")
# Keys a manifest may lack (stores written before the key existed) and the value they are read
# as. ``profile``: how extraction sampled and transformed frames (preprocessing.profiles); stores
# made before profiles existed are ``legacy``.
MANIFEST_DEFAULTS = {"profile": "legacy"}
# Stores are refused together when these differ: their vectors would not mean the same thing.
MATCH_KEYS = ("encoder", "dim", "segment_seconds", "stride_seconds", "profile")
_CSV_READ = dict(dtype={"video_id": str, "shard": str, "source": str, "reason": str},
                 keep_default_na=False, na_values=[])


class StoreError(UserError, ValueError):
    """A store that cannot be read or written as asked; the message names the file."""


def make_manifest(encoder: str, dim: int, *, dtype: str = "float16", segment_seconds: float = 5.0,
                  stride_seconds: float | None = None, min_last_seconds: float | None = None,
                  frames_per_segment: int = 8, normalized: bool = False, **extra) -> dict:
    """A complete manifest dict; ``extra`` keys (e.g. the reader, the crop) are recorded too."""
    if np.dtype(dtype) not in (np.float16, np.float32):
        raise StoreError(f"store dtype must be float16 or float32, got {dtype!r}")
    manifest = {
        "format": FORMAT, "encoder": str(encoder), "dim": int(dim), "dtype": str(np.dtype(dtype)),
        "segment_seconds": float(segment_seconds),
        "stride_seconds": float(segment_seconds if stride_seconds is None else stride_seconds),
        "min_last_seconds": float(segment_seconds if min_last_seconds is None else min_last_seconds),
        "frames_per_segment": int(frames_per_segment), "normalized": bool(normalized),
    }
    manifest.update(extra)
    return manifest


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not Path(root).is_dir():
        raise StoreError(f"embedding store {root} does not exist (or is not a directory)")
    if not path.is_file():
        raise StoreError(f"{path} is missing: {root} is not an embedding store "
                         "(write one with `python -m preprocessing.extract` or `python -m datasets.synthetic`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{path} is not a store manifest (a JSON object), it holds a {type(manifest).__name__}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise StoreError(f"{path} lacks the keys {missing}")
    if manifest["format"] != FORMAT:
        raise StoreError(f"{path}: format {manifest['format']!r} is not {FORMAT!r}")
    return with_defaults(manifest)


def with_defaults(manifest: dict) -> dict:
    """``manifest`` with every optional key it lacks set to its default (``MANIFEST_DEFAULTS``)."""
    return {**MANIFEST_DEFAULTS, **manifest}


def expand_data_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """``--data_path`` values -> store directories. A ``.txt`` file lists stores, one per line
    (``#`` comments and blank lines ignored; relative paths are relative to the list file).
    Store weights (``weighted_data_paths``) are refused here: they mean something to pretraining only."""
    roots, weights = weighted_data_paths(paths)
    if weights is not None:
        given = " ".join(map(str, [paths] if isinstance(paths, (str, os.PathLike)) else paths))
        raise StoreError(f"--data_path {given}: store weights (STORE:WEIGHT, or a weight column in a .txt list) apply to pretraining "
                         "(main_pretrain.py) only; give the stores without weights")
    return roots


def _split_weight(text: str, sep: str | None) -> tuple[str, float | None]:
    """``"path<sep>weight"`` (``sep=None``: whitespace) -> ``(path, weight)``; ``(text, None)``
    when there is no separator or the tail is not a number."""
    parts = text.rsplit(sep, 1)
    if len(parts) != 2 or not parts[0].strip():
        return text, None
    try:
        weight = float(parts[1])
    except ValueError:
        return text, None
    if not (np.isfinite(weight) and weight > 0):
        raise StoreError(f"store weight {parts[1]!r} of {parts[0].strip()} must be a number > 0")
    return parts[0].strip(), weight


def weighted_data_paths(paths) -> tuple[list[Path], list[float] | None]:
    """``--data_path`` values with optional weights -> ``(store directories, weights)``; weights
    are ``None`` when none is given, else one per store (1 where a store has none).

    A value ``STORE:WEIGHT`` (``stores/movies:2``) weighs a store, unless ``STORE:WEIGHT`` is
    itself an existing path. A ``.txt`` list line is ``STORE``, ``STORE WEIGHT`` (a weight column,
    whitespace-separated) or ``STORE:WEIGHT``; a weight on the ``.txt`` itself multiplies its lines'."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[tuple[Path, float | None]] = []
    for value in paths:
        text, weight = str(value), None
        if not Path(text).exists():
            text, weight = _split_weight(text, ":")
        p = Path(text)
        if p.suffix == ".txt" and not p.is_dir():
            if not p.is_file():
                raise StoreError(f"store list file {p} does not exist")
            for line in p.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                entry, w = line, None
                if not (p.parent / line).exists():  # (an absolute line replaces p.parent)
                    entry, w = _split_weight(line, None)
                    if w is None:
                        entry, w = _split_weight(line, ":")
                q = Path(entry)
                w = w if weight is None else (w or 1.0) * weight
                out.append((q if q.is_absolute() else p.parent / q, w))
        else:
            out.append((p, weight))
    if not out:
        raise StoreError(f"no embedding store given (--data_path {list(map(str, paths))!r} is empty)")
    roots = [p for p, _ in out]
    weights = None if all(w is None for _, w in out) else [1.0 if w is None else w for _, w in out]
    return roots, weights


def check_compatible(manifests: Sequence[dict], names: Sequence[str]) -> None:
    """Refuse stores whose vectors are not interchangeable, naming both stores and the key."""
    first = manifests[0]
    for m, name in zip(manifests[1:], names[1:]):
        for key in MATCH_KEYS:
            if m[key] != first[key]:
                raise StoreError(f"stores disagree on {key}: {names[0]} has {first[key]!r}, "
                                 f"{name} has {m[key]!r}; they cannot be mixed in one run")


@dataclass(frozen=True)
class _Entry:
    store: int
    video_id: str
    shard: str
    offset: int
    num_segments: int
    duration_s: float
    source: str


class EmbeddingStore:
    """Union reader over one or several stores.

    ``get(vid, start, stop)`` returns float32 ``[n, D]``, L2-normalized unless the manifest says
    the vectors already are. Shards are memory-mapped, so opening a store touches only the
    index files and the ``.npy`` headers.

    Keys: a ``video_id`` is unique within a store. When several stores hold the same id, those
    entries are keyed ``"<store dir name>/<video_id>"`` (``.key_of`` maps back), so nothing is
    silently dropped.
    """

    def __init__(self, paths, check_finite: bool = True):
        self.roots = expand_data_paths(paths)
        self.manifests = [read_manifest(r) for r in self.roots]
        check_compatible(self.manifests, [str(r) for r in self.roots])
        self.manifest = dict(self.manifests[0])
        self.check_finite = check_finite
        self._shards: dict[tuple[int, str], np.ndarray] = {}
        self._times: dict[tuple[int, str], np.ndarray | None] = {}
        entries: list[_Entry] = []
        self.failures = pd.DataFrame(columns=["store"] + FAILURE_COLUMNS)  # videos that gave no vector
        failures = []
        for s, root in enumerate(self.roots):
            entries.extend(self._read_indexes(s, root))
            for f in sorted(root.glob("failures-*.csv")):
                df = _read_csv(f, FAILURE_COLUMNS)
                df.insert(0, "store", str(root))
                failures.append(df)
        if failures:
            self.failures = pd.concat(failures, ignore_index=True)
        # A failure later extracted with --retry_failed keeps its old row; the index wins.
        done = {(str(self.roots[e.store]), e.video_id) for e in entries}
        if len(self.failures):
            still = [(s, v) not in done for s, v in zip(self.failures["store"], self.failures["video_id"])]
            self.failures = self.failures[still].reset_index(drop=True)
        if not entries:
            raise StoreError(f"embedding store {', '.join(map(str, self.roots))} holds no video "
                             "(no committed index-*.csv)")
        counts = pd.Series([e.video_id for e in entries]).value_counts()
        dup = set(counts.index[counts > 1])
        self._entries: dict[str, _Entry] = {}
        for e in entries:
            key = f"{self.roots[e.store].name}/{e.video_id}" if e.video_id in dup else e.video_id
            if key in self._entries:
                raise StoreError(f"video {e.video_id!r} appears twice in {self.roots[e.store]} "
                                 "(two committed index rows); remove one of the index files")
            self._entries[key] = e
        self.video_ids: list[str] = list(self._entries)

    # -- opening ---------------------------------------------------------------------------
    def _read_indexes(self, s: int, root: Path) -> list[_Entry]:
        dim = self.manifests[s]["dim"]
        out = []
        for index_file in sorted(root.glob("index-*.csv")):
            df = _read_csv(index_file, INDEX_COLUMNS)
            for shard in df["shard"].unique():
                arr = self._open_shard(s, shard, index_file)
                if arr.ndim != 2 or arr.shape[1] != dim:
                    raise StoreError(f"shard {root / 'shards' / shard} has shape {arr.shape}, "
                                     f"the manifest says [rows, {dim}]")
            for line, row in enumerate(df.itertuples(index=False), start=2):
                try:
                    offset, n = int(row.offset), int(row.num_segments)
                    duration = float(row.duration_s)
                except (TypeError, ValueError):
                    raise StoreError(f"{index_file} line {line}: offset / num_segments / duration_s "
                                     f"are not numbers ({row})") from None
                rows = self._shards[(s, row.shard)].shape[0]
                if n < 1 or offset < 0 or offset + n > rows:
                    raise StoreError(f"{index_file} line {line}: video {row.video_id!r} claims rows "
                                     f"[{offset}, {offset + n}) of {row.shard}, which has {rows} rows")
                out.append(_Entry(s, row.video_id, row.shard, offset, n, duration, row.source))
        return out

    def _open_shard(self, s: int, shard: str, index_file: Path) -> np.ndarray:
        key = (s, shard)
        if key not in self._shards:
            path = self.roots[s] / "shards" / shard
            if not path.is_file():
                raise StoreError(f"{index_file} refers to {path}, which does not exist")
            try:
                self._shards[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise StoreError(f"shard {path} is corrupt or not an .npy array: {e}") from None
            tpath = path.with_name(path.name[:-4] + ".times.npy")
            self._times[key] = self._open_times(tpath, self._shards[key].shape[0]) if tpath.is_file() else None
        return self._shards[key]

    @staticmethod
    def _open_times(path: Path, rows: int) -> np.ndarray:
        try:
            times = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"times shard {path} is corrupt or not an .npy array: {e}") from None
        if times.shape != (rows, 2):
            raise StoreError(f"times shard {path} has shape {times.shape}, its shard has {rows} rows: "
                             f"expected [{rows}, 2]")
        return times

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.video_ids)

    def __contains__(self, vid: str) -> bool:
        return vid in self._entries

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def entry(self, vid: str) -> _Entry:
        try:
            return self._entries[vid]
        except KeyError:
            raise KeyError(f"video {vid!r} is not in the store {', '.join(map(str, self.roots))}") from None

    def num_segments(self, vid: str) -> int:
        return self.entry(vid).num_segments

    def lengths(self, vids: Sequence[str] | None = None) -> np.ndarray:
        vids = self.video_ids if vids is None else vids
        return np.array([self._entries[v].num_segments for v in vids], dtype=np.int64)

    def duration(self, vid: str) -> float:
        return self.entry(vid).duration_s

    def source(self, vid: str) -> str:
        return self.entry(vid).source

    def store_of(self, vid: str) -> Path:
        return self.roots[self.entry(vid).store]

    def get(self, vid: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Segments ``[start, stop)`` of ``vid`` as float32 ``[n, D]``."""
        e = self.entry(vid)
        stop = e.num_segments if stop is None else min(stop, e.num_segments)
        start = max(0, start)
        raw = self._shards[(e.store, e.shard)][e.offset + start:e.offset + stop]
        x = np.asarray(raw, dtype=np.float32)
        if self.check_finite and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0]) + start
            raise StoreError(f"video {e.video_id!r}: segment {bad} in "
                             f"{self.roots[e.store] / 'shards' / e.shard} is not finite (NaN/inf); "
                             "re-extract this video")
        if not self.manifests[e.store]["normalized"]:
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(norm, 1e-12)
        return x

    def times(self, vid: str) -> np.ndarray:
        """float64 ``[n, 2]`` start / end seconds of every segment of ``vid``."""
        e = self.entry(vid)
        t = self._times[(e.store, e.shard)]
        if t is not None:
            t = np.asarray(t[e.offset:e.offset + e.num_segments], dtype=np.float64)
            if np.isfinite(t).all():
                return t
        m = self.manifests[e.store]
        start = np.arange(e.num_segments) * m["stride_seconds"]
        end = np.minimum(start + m["segment_seconds"], max(e.duration_s, start[-1] + 1e-9))
        return np.stack([start, end], axis=1)

    def summary(self) -> dict:
        lengths = self.lengths()
        return {"stores": [str(r) for r in self.roots], "encoder": self.manifest["encoder"],
                "profile": self.manifest["profile"], "dim": self.dim, "videos": len(self), "segments": int(lengths.sum()),
                "hours": float(sum(e.duration_s for e in self._entries.values()) / 3600),
                "failures": len(self.failures)}


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, **_CSV_READ)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is not a readable CSV: {e}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StoreError(f"{path} lacks the columns {missing} (has {list(df.columns)})")
    return df


def committed_ids(root: str | Path, include_failures: bool = True) -> set[str]:
    """Video ids a rerun must skip: every committed index row, and (unless retrying) every
    recorded failure."""
    root = Path(root)
    done: set[str] = set()
    for f in root.glob("index-*.csv"):
        done.update(_read_csv(f, INDEX_COLUMNS)["video_id"])
    if include_failures:
        for f in root.glob("failures-*.csv"):
            done.update(_read_csv(f, FAILURE_COLUMNS)["video_id"])
    return done


class StoreWriter:
    """Buffered, atomic writer of one store part sequence ``<writer_id>-NNNNNN``.

    Several writers (ranks, job-array tasks, reruns) may write one store concurrently as long as
    their ``writer_id`` differ. ``add`` buffers a video's vectors; every ``shard_rows`` rows (and
    at ``commit()``) the buffer becomes one commit. ``fail`` records a video that produced no
    vector. Nothing is visible to readers before its index file is renamed into place.
    """

    def __init__(self, root: str | Path, writer_id: str, manifest: dict, shard_rows: int = 65536):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", writer_id):
            raise StoreError(f"writer id {writer_id!r} may only use letters, digits, '_' and '.'")
        self.root = Path(root)
        self.writer_id = writer_id
        self.shard_rows = shard_rows
        self.manifest = make_manifest(**{k: v for k, v in manifest.items() if k != "format"})
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        # A commit of this writer cut short by a kill left temporary files; no other process
        # writes under this writer id, so they are debris.
        for directory, prefix in ((self.root / "shards", f"{writer_id}-"), (self.root, f"index-{writer_id}-"),
                                  (self.root, f"failures-{writer_id}-")):
            remove_orphans(directory, prefix)
        mpath = self.root / "manifest.json"
        ours = with_defaults(self.manifest)  # compared as read; written as given
        if mpath.exists():
            existing = read_manifest(self.root)
            for key in MATCH_KEYS + ("dtype", "normalized"):
                if existing[key] != ours[key]:
                    raise StoreError(f"{mpath} has {key}={existing[key]!r} but this writer would write "
                                     f"{key}={ours[key]!r}; use another --out directory")
            self.manifest = existing
        else:
            # link() refuses an existing target: of two writers starting together exactly one
            # publishes its (whole) manifest; the other then checks it like any existing one.
            tmp = mpath.with_name(f"manifest.json.tmp-{os.getpid()}")
            atomic_write_text(tmp, json.dumps(self.manifest, indent=2) + "\n")
            try:
                os.link(tmp, mpath)
            except FileExistsError:
                existing = read_manifest(self.root)
                if any(existing[k] != ours[k] for k in MATCH_KEYS):
                    raise StoreError(f"{mpath} was just written by another writer with a different "
                                     "encoder / dim / segment length / profile") from None
                self.manifest = existing
            finally:
                tmp.unlink(missing_ok=True)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.dim = int(self.manifest["dim"])
        self._seq = self._next_sequence()
        self._vectors: list[np.ndarray] = []
        self._times: list[np.ndarray | None] = []
        self._rows: list[dict] = []
        self._failures: list[dict] = []
        self._buffered = 0
        self.num_committed = 0

    def _next_sequence(self) -> int:
        seqs = [-1]
        for p in list(self.root.glob(f"index-{self.writer_id}-*.csv")) + \
                list((self.root / "shards").glob(f"{self.writer_id}-*")) + \
                list(self.root.glob(f"failures-{self.writer_id}-*.csv")):
            m = re.search(rf"{re.escape(self.writer_id)}-(\d{{6}})", p.name)
            if m:
                seqs.append(int(m.group(1)))
        return max(seqs) + 1

    def add(self, vid: str, vectors, duration_s: float, source: str = "", times=None) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] < 1:
            raise StoreError(f"video {vid!r}: vectors of shape {vectors.shape}, expected [n >= 1, {self.dim}]")
        with np.errstate(over="ignore"):  # overflow is reported below, naming the video
            stored = vectors.astype(self.dtype)
        if not np.isfinite(stored).all():
            raise StoreError(f"video {vid!r}: non-finite vector (NaN/inf{' after the cast to float16' if self.dtype == np.float16 else ''}); "
                             "not written")
        if times is not None:
            times = np.asarray(times, dtype=np.float32)
            if times.shape != (vectors.shape[0], 2):
                raise StoreError(f"video {vid!r}: times of shape {times.shape}, expected [{vectors.shape[0]}, 2]")
        if any(r["video_id"] == vid for r in self._rows):
            raise StoreError(f"video {vid!r} added twice to one commit")
        self._rows.append({"video_id": vid, "offset": self._buffered, "num_segments": len(stored),
                           "duration_s": float(duration_s), "source": str(source)})
        self._vectors.append(stored)
        self._times.append(times)
        self._buffered += len(stored)
        if self._buffered >= self.shard_rows:
            self.commit()

    def fail(self, vid: str, source: str, reason: str) -> None:
        self._failures.append({"video_id": vid, "source": str(source),
                               "reason": " ".join(str(reason).split())})

    def commit(self) -> str | None:
        """Make everything buffered visible; returns the part name (None if nothing buffered)."""
        if not self._rows and not self._failures:
            return None
        part = f"{self.writer_id}-{self._seq:06d}"
        self._seq += 1
        if self._rows:
            shard = f"{part}.npy"
            data = np.concatenate(self._vectors)
            atomic_write_bytes(self.root / "shards" / shard, lambda f: np.save(f, data))
            if any(t is not None for t in self._times):
                times = np.concatenate([t if t is not None else np.full((len(v), 2), np.nan, np.float32)
                                        for t, v in zip(self._times, self._vectors)])
                atomic_write_bytes(self.root / "shards" / f"{part}.times.npy", lambda f: np.save(f, times))
            index = pd.DataFrame(self._rows).assign(shard=shard)[INDEX_COLUMNS]
            atomic_write_text(self.root / f"index-{part}.csv", index.to_csv(index=False))
            self.num_committed += len(self._rows)
        if self._failures:
            atomic_write_text(self.root / f"failures-{part}.csv",
                              pd.DataFrame(self._failures, columns=FAILURE_COLUMNS).to_csv(index=False))
        self._vectors, self._times, self._rows, self._failures = [], [], [], []
        self._buffered = 0
        return part

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Every buffered video is whole (add() is all or nothing), so committing on the way out
        # of an exception or Ctrl-C keeps finished work; a SIGKILL loses only the buffer.
        self.commit()
