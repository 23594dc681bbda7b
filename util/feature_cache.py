"""On-disk cache of frozen probe features (``VideoFeatures``), keyed by everything they depend on.

Key = sha256 of a JSON document holding: the sha256 of the checkpoint file's bytes (``None`` for
the raw backbone), the store's identity for exactly the requested videos (each store's
``manifest.json`` digest; per video its shard, offset and segment count; per shard file its size
and mtime -- shards are write-once, so a regenerated store has new mtimes), the sorted video
ids, the backbone, and the long-video policy (``max_len``, window stride, autocast dtype).
A different checkpoint file, store, video list or policy therefore never reuses features.

Layout: ``<cache_dir>/<key>/{cls,tokens,offsets,video_ids}.npy`` + ``meta.json`` (the key's
document, human-readable). An entry is written in a temporary directory and renamed into place,
so a killed run leaves no partial entry; arrays are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from util.long_video import VideoFeatures

CACHE_VERSION = 1
_ARRAYS = ("cls", "tokens", "offsets", "video_ids")
_digests: dict[tuple, str] = {}


def file_digest(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes, memoized per (path, size, mtime) within the process."""
    path = Path(path).resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def store_identity(store, video_ids) -> dict:
    """What the raw vectors of ``video_ids`` in ``store`` (an ``EmbeddingStore``) depend on."""
    entries = [store.entry(v) for v in video_ids]
    shards = sorted({(e.store, e.shard) for e in entries})
    shard_stat = {}
    for s, shard in shards:
        st = (store.roots[s] / "shards" / shard).stat()
        shard_stat[f"{s}/{shard}"] = [st.st_size, st.st_mtime_ns]
    return {"manifests": [file_digest(r / "manifest.json") for r in store.roots],
            "rows": [[e.store, e.shard, e.offset, e.num_segments] for e in entries],
            "shards": shard_stat}


def cache_key(checkpoint_sha256: str | None, store, video_ids, backbone: str, policy: dict) -> tuple[str, dict]:
    """``(hex key, the document it hashes)``; ``video_ids`` must be in the order cached."""
    doc = {"version": CACHE_VERSION, "checkpoint_sha256": checkpoint_sha256, "backbone": backbone,
           "video_ids": list(video_ids), "store": store_identity(store, video_ids), "policy": policy}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest(), doc


def load(cache_dir: str | Path, key: str) -> VideoFeatures | None:
    entry = Path(cache_dir) / key
    if not all((entry / f"{name}.npy").is_file() for name in _ARRAYS):
        return None
    arr = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
    return VideoFeatures([str(v) for v in arr["video_ids"]], arr["cls"], arr["tokens"], arr["offsets"])


def save(cache_dir: str | Path, key: str, features: VideoFeatures, doc: dict) -> None:
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    arrays = {"cls": features.cls, "tokens": features.tokens, "offsets": np.asarray(features.offsets, np.int64),
              "video_ids": np.array(features.video_ids, dtype=str)}
    for name, a in arrays.items():
        np.save(tmp / f"{name}.npy", a, allow_pickle=False)
    summary = dict(doc, video_ids=f"{len(features.video_ids)} ids", store=dict(doc["store"], rows="..."))
    (tmp / "meta.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    try:
        os.replace(tmp, cache_dir / key)
    except OSError:  # another process committed the same key first; its entry is equivalent
        shutil.rmtree(tmp, ignore_errors=True)


def cached(cache_dir: str | Path, key: str, doc: dict, compute: Callable[[], VideoFeatures]
           ) -> tuple[VideoFeatures, bool]:
    """Features for ``key``: loaded if cached (``hit=True``), else computed and stored."""
    hit = load(cache_dir, key)
    if hit is not None:
        return hit, True
    features = compute()
    save(cache_dir, key, features, doc)
    return features, False
