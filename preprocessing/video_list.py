"""The list of videos an extraction run works on, and this process's disjoint part of it.

Inputs: directories (scanned recursively for video extensions), CSV files with columns
``video_id,path`` (relative paths are relative to the CSV), or single video files. Ids must be
unique: they key the store. A scanned or single file's ``video_id`` follows ``id_layout``:

- ``path`` (default): the path relative to the directory without its extension, e.g.
  ``movies/tt0111161`` (a single file: its stem);
- ``name``: the file stem, e.g. COIN's ``videos/<recipe_type>/<youtube id>.mp4`` -> the
  YouTube id its ``COIN.json`` uses;
- ``breakfast``: the Breakfast tree ``P03/cam01/P03_cereals.avi`` -> ``P03-cam01-P03_cereals``
  and ``P03/stereo/P03_cereals_ch0.avi`` -> ``P03-stereo-P03_cereals_ch0``, the ids of its
  split files (``datasets.breakfast.video_id_from_path``).

Parts: the list sorted by ``video_id`` is dealt round-robin over ``n_shards x world_size``
parts, part ``shard * world_size + rank``; any number of ranks and job-array tasks therefore
see disjoint lists whose union is the whole list.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from preprocessing.readers import VIDEO_EXTENSIONS
from util.cli import UserError


ID_LAYOUTS = ("path", "name", "breakfast")


class VideoListError(UserError, ValueError):
    """A video list that cannot be used; the message names the file at fault."""


def video_id(relative: Path, layout: str = "path") -> str:
    """The ``video_id`` of a file at ``relative`` (to the scanned directory) under ``layout``."""
    if layout == "path":
        return relative.with_suffix("").as_posix()
    if layout == "name":
        return relative.stem
    if layout == "breakfast":
        from datasets.breakfast import video_id_from_path
        try:
            return video_id_from_path(relative)
        except ValueError as e:
            raise VideoListError(f"--id_layout breakfast: {e}") from None
    raise VideoListError(f"unknown --id_layout {layout!r}; choose from {', '.join(ID_LAYOUTS)}")


def _scan(root: Path, extensions, layout: str) -> pd.DataFrame:
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in extensions
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    ids = [video_id(p.relative_to(root), layout) for p in files]
    return pd.DataFrame({"video_id": ids, "path": [str(p) for p in files]})


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise VideoListError(f"video list {path} is not a readable CSV: {e}") from None
    missing = {"video_id", "path"} - set(df.columns)
    if missing:
        raise VideoListError(f"video list {path} lacks the columns {sorted(missing)} (has {list(df.columns)})")
    empty = df.index[(df.video_id.str.strip() == "") | (df.path.str.strip() == "")]
    if len(empty):
        raise VideoListError(f"video list {path} line {empty[0] + 2}: empty video_id or path")
    paths = [p if Path(p).is_absolute() else str(path.parent / p) for p in df.path]
    return pd.DataFrame({"video_id": df.video_id.str.strip(), "path": paths})


def list_videos(inputs, extensions=VIDEO_EXTENSIONS, id_layout: str = "path") -> pd.DataFrame:
    """``DataFrame[video_id, path]`` sorted by ``video_id``."""
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    frames = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            frames.append(_scan(p, extensions, id_layout))
        elif p.suffix.lower() == ".csv" and p.is_file():
            frames.append(_read_csv(p))
        elif p.is_file():
            vid = p.stem if id_layout == "path" else video_id(p, id_layout)
            frames.append(pd.DataFrame({"video_id": [vid], "path": [str(p)]}))
        else:
            raise VideoListError(f"input {p} does not exist (give video directories, CSV lists or video files)")
    videos = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["video_id", "path"])
    dup = videos[videos.video_id.duplicated(keep=False)]
    if len(dup):
        vid = dup.video_id.iloc[0]
        raise VideoListError(f"video_id {vid!r} names several files ({', '.join(dup[dup.video_id == vid].path)}); "
                             "ids key the store and must be unique (rename one, or list them in a CSV)")
    if videos.empty:
        raise VideoListError(f"no videos found in {', '.join(map(str, inputs))} "
                             f"(extensions {', '.join(extensions)})")
    return videos.sort_values("video_id", kind="stable").reset_index(drop=True)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VideoListError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise VideoListError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def select_part(videos: pd.DataFrame, shard: tuple[int, int], rank: int = 0, world_size: int = 1) -> pd.DataFrame:
    """This process's round-robin part (see the module docstring)."""
    i, n = shard
    return videos.iloc[i * world_size + rank::n * world_size]
