"""Import what the authors' code wrote: LanguageBind embedding caches and pretraining checkpoints.

Embedding caches (``langbind_preprocessing.py``): one ``torch.save``d dict
``{"embedding": tensor[D], "start": int, "end": int}`` per segment at
``<root>/<video_id>/<SSSSS>-<EEEEE>/langbind_output.pt``, and CSVs
(``segment_dataframe_movie_clip.py``) with columns ``segment_idx, video_filename, segment_paths,
number_of_segments, label, label_name`` where ``segment_paths`` is a Python list literal of
those files. Each video becomes one entry of an embedding store, segments ordered by start::

    python -m preprocessing.import_reference cache CACHE_ROOT --out stores/movieclips \\
        [--csv train.csv val.csv test.csv --labels_out labels.csv] [--encoder languagebind:LanguageBind_Video_Huge_V1.5_FT]

Rows of one ``video_filename`` (a video split over several rows) are merged; segment paths
written on the authors' machine are looked up under ``CACHE_ROOT`` by their last three parts
(``<video_id>/<SSSSS>-<EEEEE>/langbind_output.pt``). ``start`` / ``end`` are taken as seconds
(``--time_scale`` converts other units). A video with a missing, unreadable or non-finite
segment goes to the failures file, never half into a shard.

Pretraining checkpoints (MAE-style ``{"model": state_dict, "args": argparse.Namespace, ...}``)
become this project's checkpoint format (README "Formats"): the model config is read off the
weight shapes and ``args``, with ``input_scale="none"`` (the authors' model adds the unit-norm
embeddings to the positions unscaled); the fixed sin-cos ``pos_embed`` / ``decoder_pos_embed``
buffers are checked against the positions recomputed here (atol 1e-6; a file whose positions
differ computes another function and is refused) and dropped; the result must load into
``LVMAE`` strictly and then computes the authors' function (tested against an independent
re-implementation of their forward pass)::

    python -m preprocessing.import_reference checkpoint checkpoint-150.pth --out lvmae_authors.pth

Nothing is unpickled beyond ``torch.load(weights_only=True)`` plus ``argparse.Namespace``; list
literals are parsed with ``ast.literal_eval`` (literals only), never ``eval``.
"""
from __future__ import annotations

import argparse
import ast
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from datasets.store import StoreError, StoreWriter, committed_ids, make_manifest
from util.cli import ArgumentParser, UserError, output_dir, output_file, positive_float, positive_int, run_cli

CACHE_FILE = "langbind_output.pt"
CSV_COLUMNS = ("segment_idx", "video_filename", "segment_paths", "number_of_segments", "label", "label_name")
# The checkpoint the authors' langbind_preprocessing.py loads (1024-d, their --input_size 1024).
DEFAULT_ENCODER = "languagebind:LanguageBind_Video_Huge_V1.5_FT"
# Keys of the authors' state dict that are not parameters here (positions are recomputed).
DROPPED_KEYS = ("pos_embed", "decoder_pos_embed")
POS_ATOL = 1e-6
# The preprocessing the authors' checkpoints were trained on (their langbind_preprocessing.py).
AUTHORS_PROFILE = "authors"
INPUT_PROJ = re.compile(r"^(patch_embed\.proj|patch_embed|input_proj)\.(weight|bias)$")


class ReferenceFormatError(UserError, ValueError):
    """Input in the authors' formats that cannot be imported; the message names the file."""


# --- embedding caches ----------------------------------------------------------------------------
def _segment_paths(literal: str, csv: Path, line: int) -> list[str]:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        raise ReferenceFormatError(f"{csv} line {line}: segment_paths is not a Python list literal: "
                                   f"{literal[:80]!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ReferenceFormatError(f"{csv} line {line}: segment_paths must be a list of file paths")
    return list(value)


def _relocate(path: str, root: Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    parts = p.parts[-3:]
    return root.joinpath(*parts) if len(parts) == 3 else root / p


def videos_from_csvs(csvs, root: Path) -> tuple[dict[str, list[Path]], pd.DataFrame]:
    """``{video_id: segment files}`` and ``labels[video_id, label, label_name]``."""
    segments: dict[str, list[Path]] = {}
    labels = []
    for csv in map(Path, csvs):
        try:
            df = pd.read_csv(csv, dtype={"video_filename": str, "segment_paths": str, "label_name": str},
                             keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise ReferenceFormatError(f"{csv} is not a readable CSV: {e}") from None
        missing = [c for c in CSV_COLUMNS if c not in df.columns]
        if missing:
            raise ReferenceFormatError(f"{csv} lacks the columns {missing} (has {list(df.columns)})")
        for line, row in enumerate(df.itertuples(index=False), start=2):
            vid = Path(str(row.video_filename)).stem
            segments.setdefault(vid, []).extend(_relocate(p, root)
                                                for p in _segment_paths(row.segment_paths, csv, line))
            labels.append({"video_id": vid, "label": row.label, "label_name": row.label_name, "csv": str(csv)})
    labels = pd.DataFrame(labels, columns=["video_id", "label", "label_name", "csv"])
    clash = labels.groupby("video_id")["label"].nunique()
    if (clash > 1).any():
        raise ReferenceFormatError(f"video {clash.index[clash > 1][0]!r} has different labels in "
                                   f"{', '.join(map(str, csvs))}")
    # A video split over several rows may list a segment twice.
    segments = {vid: list(dict.fromkeys(paths)) for vid, paths in segments.items()}
    return segments, labels.drop_duplicates("video_id").drop(columns="csv")


def videos_from_root(root: Path) -> dict[str, list[Path]]:
    segments: dict[str, list[Path]] = {}
    for f in sorted(root.glob(f"*/*-*/{CACHE_FILE}")):
        segments.setdefault(f.parent.parent.name, []).append(f)
    return segments


def load_segment(path: Path) -> tuple[np.ndarray, float, float]:
    """One cache file -> (float32 [D], start, end)."""
    if not path.is_file():
        raise ReferenceFormatError(f"segment file {path} is missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise ReferenceFormatError(f"{path} is not a readable embedding file: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(obj, dict) or not {"embedding", "start", "end"} <= set(obj):
        raise ReferenceFormatError(f"{path}: expected a dict with embedding / start / end")
    emb = torch.as_tensor(obj["embedding"]).float().reshape(-1).numpy()
    return emb, float(obj["start"]), float(obj["end"])


def load_video(paths: list[Path], vid: str, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[n, D]`` vectors and ``[n, 2]`` seconds of one video, ordered by start."""
    loaded = sorted((load_segment(p) for p in paths), key=lambda s: s[1])
    if len({len(s[0]) for s in loaded}) > 1:
        raise ReferenceFormatError(f"video {vid}: its segment files hold embeddings of different sizes")
    vectors = np.stack([s[0] for s in loaded])
    if not np.isfinite(vectors).all():
        raise ReferenceFormatError(f"video {vid}: non-finite embedding values")
    return vectors, np.array([[s[1], s[2]] for s in loaded]) * time_scale


def import_cache(root, out, csvs=(), encoder: str = DEFAULT_ENCODER, segment_seconds: float = 5.0,
                 frames_per_segment: int = 8, time_scale: float = 1.0, labels_out=None) -> dict:
    """Write the cache's videos into the store ``out`` (a rerun skips imported videos)."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise ReferenceFormatError(f"cache root {root} is not a directory")
    if csvs:
        segments, labels = videos_from_csvs(csvs, root)
        if labels_out:
            labels.to_csv(labels_out, index=False)
    else:
        segments = videos_from_root(root)
    if not segments:
        raise ReferenceFormatError(f"no embedding files found ({root}/<video_id>/<SSSSS>-<EEEEE>/{CACHE_FILE})")
    done = committed_ids(out) if (out / "manifest.json").exists() else set()
    counts = {"done": 0, "failed": 0, "skipped": len(set(segments) & done), "segments": 0}
    writer, failures = None, []  # the store's dim is the first importable video's
    for vid in sorted(set(segments) - done):
        try:
            vectors, times = load_video(segments[vid], vid, time_scale)
            if writer is None:
                writer = StoreWriter(out, "import", make_manifest(
                    encoder, vectors.shape[1], segment_seconds=segment_seconds, min_last_seconds=0.0,
                    frames_per_segment=frames_per_segment, profile="authors",
                    imported_from="authors' langbind_output.pt cache"))
            writer.add(vid, vectors, float(times[-1, 1]), source=str(root / vid), times=times)
            counts["done"] += 1
            counts["segments"] += len(vectors)
        except (ReferenceFormatError, StoreError) as e:
            failures.append((vid, str(root / vid), str(e)))
    if writer is None and failures:
        raise ReferenceFormatError(f"no video could be imported; the first failure: {failures[0][2]}")
    for failure in failures:
        writer.fail(*failure)
    counts["failed"] = len(failures)
    if writer is not None:
        writer.commit()
    return counts


# --- pretraining checkpoints ---------------------------------------------------------------------
def _plain(value):
    """JSON-able copy of an argparse value (paths, tuples, devices become strings / lists)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def convert_state_dict(state: dict, args: dict) -> tuple[dict, dict]:
    """Authors' (MAE-named) LV-MAE weights -> (our state dict, LVMAE constructor arguments)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if k in DROPPED_KEYS:
            continue
        m = INPUT_PROJ.match(k)
        out[f"input_proj.{m.group(2)}" if m else k] = v
    if "cls_token" not in out or "decoder_pred.weight" not in out:
        raise ReferenceFormatError("not an MAE-style LV-MAE state dict (no cls_token / decoder_pred)")

    def depth(prefix):
        ids = {int(m.group(1)) for k in out if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
        return max(ids) + 1 if ids else 0

    embed_dim = out["cls_token"].shape[-1]
    pos = state.get("pos_embed")
    config = dict(embed_dim=embed_dim, depth=depth("blocks"), num_heads=int(args.get("num_heads", 16)),
                  decoder_embed_dim=out["decoder_embed.weight"].shape[0], decoder_depth=depth("decoder_blocks"),
                  decoder_num_heads=int(args.get("decoder_num_heads", 16)),
                  mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
                  max_len=int(args.get("num_patches") or (pos.shape[1] - 1 if pos is not None else 256)),
                  input_dim=out["decoder_pred.weight"].shape[0], input_scale="none", objective="mae", text_dim=None,
                  pooling="mean")
    return out, config


def check_positions(state: dict, path) -> None:
    """A stored ``pos_embed`` / ``decoder_pos_embed`` must equal the sin-cos positions LVMAE
    recomputes (the authors' are fixed, never trained); otherwise refuse, naming the file."""
    from util.pos_embed import get_1d_sincos_pos_embed
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for key in DROPPED_KEYS:
        if key not in state:
            continue
        stored = torch.as_tensor(state[key]).float()
        if stored.dim() != 3 or stored.shape[0] != 1 or stored.shape[-1] % 2:
            raise ReferenceFormatError(f"{path}: {key} has shape {tuple(stored.shape)}, not [1, 1 + positions, dim]")
        ours = get_1d_sincos_pos_embed(stored.shape[-1], stored.shape[1] - 1, cls_token=True)
        diff = (stored[0] - ours).abs().max().item()
        if not diff <= POS_ATOL:
            raise ReferenceFormatError(f"{path}: the stored {key} is not the fixed 1-D sin-cos positions this "
                                       f"model recomputes (max difference {diff:.3g} > {POS_ATOL:g}); the "
                                       "checkpoint would compute another function")


def import_checkpoint(path, out, encoder: str = DEFAULT_ENCODER) -> dict:
    import models_lvmae
    from util.checkpoint import FORMAT_VERSION, load_pretrained, save_checkpoint
    path = Path(path)
    if not path.is_file():
        raise ReferenceFormatError(f"checkpoint {path} does not exist")
    try:
        # The authors' checkpoints pickle their argparse.Namespace; nothing else is allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReferenceFormatError(f"{path} cannot be loaded safely (weights only, plus argparse.Namespace): "
                                   f"{first}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ReferenceFormatError(f"{path} is not a pretraining checkpoint (no 'model' state dict)")
    if "model_config" in ckpt:
        raise ReferenceFormatError(f"{path} is already a checkpoint of this project (epoch {ckpt.get('epoch')}, "
                                   f"model_config {ckpt['model_config']}): it needs no import; give it to --checkpoint "
                                   "or --resume as it is")
    args = ckpt.get("args")
    args = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    check_positions(ckpt["model"], path)
    try:
        state, config = convert_state_dict(ckpt["model"], args)
    except ReferenceFormatError as e:
        raise ReferenceFormatError(f"{path}: {e}") from None
    try:
        models_lvmae.LVMAE(**config).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ReferenceFormatError(f"{path}: weights do not fit LVMAE({config}): {str(e).splitlines()[0]} "
                           f"{str(e).splitlines()[1][:300] if len(str(e).splitlines()) > 1 else ''}") from None
    converted = {"format_version": FORMAT_VERSION, "model": state, "model_config": config, "objective": "mae",
                 "epoch": int(ckpt.get("epoch", -1)), "args": _plain(args),
                 "data": {"encoder": encoder, "dim": config["input_dim"], "normalized": False,
                          "profile": AUTHORS_PROFILE},
                 "imported_from": str(path)}
    save_checkpoint(converted, out)
    load_pretrained(out)  # what every consumer does: it must work
    return config


def get_args_parser():
    p = argparse.ArgumentParser("Import the authors' embedding caches and checkpoints", add_help=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    c = sub.add_parser("cache", help="langbind_output.pt embedding cache (+ CSVs) -> embedding store")
    c.add_argument("root", type=Path, help="cache root: <root>/<video_id>/<SSSSS>-<EEEEE>/langbind_output.pt")
    c.add_argument("--out", required=True, type=output_dir, help="embedding store directory to write")
    c.add_argument("--csv", nargs="*", default=[], help="the authors' segment CSVs (videos to import, labels)")
    c.add_argument("--labels_out", default=None, help="write video_id,label,label_name from the CSVs here")
    c.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help="encoder name recorded in the manifest; must equal the name of stores it is mixed with")
    c.add_argument("--segment_seconds", type=positive_float, default=5.0, help="segment length the cache was made with")
    c.add_argument("--frames_per_segment", type=positive_int, default=8,
                   help="frames per segment the cache was made with")
    c.add_argument("--time_scale", type=positive_float, default=1.0, help="seconds per unit of the files' start / end")
    k = sub.add_parser("checkpoint", help="the authors' pretraining checkpoint -> this project's format")
    k.add_argument("path", type=Path, help="checkpoint written by the authors' main_pretrain.py")
    k.add_argument("--out", required=True, type=output_file, help="converted checkpoint to write")
    k.add_argument("--encoder", default=DEFAULT_ENCODER, help="encoder of the embeddings it was trained on")
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    try:
        if args.command == "cache":
            counts = import_cache(args.root, args.out, args.csv, args.encoder, args.segment_seconds,
                                  args.frames_per_segment, args.time_scale, args.labels_out)
            print(f"imported {counts['done']} videos ({counts['segments']} segments) into {args.out}; "
                  f"{counts['skipped']} already there, {counts['failed']} failed (see failures-*.csv)")
            return counts
        config = import_checkpoint(args.path, args.out, args.encoder)
        print(f"wrote {args.out}: LVMAE({', '.join(f'{k}={v}' for k, v in config.items())})")
        return config
    except ReferenceFormatError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    sys.exit(run_cli(main))
