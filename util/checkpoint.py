"""Checkpoint I/O: tensors and plain Python types only, so ``torch.load(weights_only=True)``
reads every file this project writes. Writes are atomic (tmp file + ``os.replace``).

Exported directories (``export_pretrained.py``; ``config.json`` + ``model.safetensors``) load
through the same ``load_checkpoint`` / ``load_pretrained`` as training checkpoints.

Contents (README "Formats", which has the full key table): ``{"format_version", "model",
"optimizer", "scaler", "epoch", "args", "model_config", "data": {"encoder", "dim",
"normalized", "profile"}, "rng"}``; ``model_config`` holds ``objective`` / ``text_dim`` / ``pooling``
(version 2) and the weights the text head ``text_proj`` / ``logit_scale`` when the objective has
one; a contrastive run's ``data`` also names its text database (``texts``).

Versions. ``FORMAT_VERSION`` is written into every checkpoint. ``load_checkpoint`` reads every
version from 0 (files written before the key existed) to ``FORMAT_VERSION`` and upgrades them in
memory to the current layout, one step per version (``UPGRADES``), so every consumer sees one
layout; a newer version is refused naming the file. A change that adds a key or changes what one
means bumps ``FORMAT_VERSION``, adds the step from the previous version (what an old file that
lacks the key means) and a row to the README's table.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

import models_lvmae
from util.cli import UserError

# Not part of the compatibility check: positions are recomputed, so a longer max_len is fine.
IGNORED_CONFIG_KEYS = ("max_len",)

FORMAT_VERSION = 2
# What a key that an old file lacks means.
LEGACY_INPUT_SCALE = "sqrt_dim"  # every checkpoint written before model_config recorded it
LEGACY_PROFILE = "legacy"        # stores (and so checkpoints) made before preprocessing profiles


def _upgrade_0_to_1(ckpt: dict) -> None:
    """Version 0 (no ``format_version``): model_config without ``input_scale``, data without
    ``profile``."""
    ckpt["model_config"] = {**ckpt["model_config"]}
    ckpt["model_config"].setdefault("input_scale", LEGACY_INPUT_SCALE)
    if isinstance(ckpt.get("data"), dict):
        ckpt["data"] = {**ckpt["data"]}
        ckpt["data"].setdefault("profile", LEGACY_PROFILE)


def _upgrade_1_to_2(ckpt: dict) -> None:
    """Version 1: written before the contrastive objectives; every such checkpoint is an LV-MAE
    (``objective`` "mae", no text head, ``pooling`` "mean" unused)."""
    ckpt["model_config"] = {**ckpt["model_config"]}
    for key, value in (("objective", "mae"), ("text_dim", None), ("pooling", "mean")):
        ckpt["model_config"].setdefault(key, value)
    ckpt.setdefault("objective", ckpt["model_config"]["objective"])


# version v -> the function turning a checkpoint of version v into version v + 1 (in place)
UPGRADES = {0: _upgrade_0_to_1, 1: _upgrade_1_to_2}


class CheckpointError(UserError, ValueError):
    """A file that is not (a compatible) LV-MAE checkpoint; the message names the file."""


def save_checkpoint(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; refuse anything that is not an LV-MAE checkpoint."""
    path = Path(path)
    if path.is_dir():
        return _upgrade(read_exported(path), path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a checkpoint this project can read safely ({first}). "
                              "Foreign checkpoints (the authors', MAE) go through "
                              "`python -m preprocessing.import_reference`.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not an LV-MAE checkpoint (expected 'model' and 'model_config', "
                              f"found {keys})")
    return _upgrade(ckpt, path)


def _upgrade(ckpt: dict, path) -> dict:
    version = checkpoint_format_version(ckpt, path)
    while version < FORMAT_VERSION:
        UPGRADES[version](ckpt)
        version += 1
    ckpt["format_version"] = version
    return ckpt


def checkpoint_format_version(ckpt: dict, path) -> int:
    """The file's ``format_version`` (0 when absent); refuses one this code cannot read."""
    version = ckpt.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path} has format_version {version!r}; expected an integer 0-{FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format_version {version}, newer than this code reads "
                              f"(0-{FORMAT_VERSION}); update the code to load it")
    return version


def config_differences(saved: dict, current: dict, ignore=IGNORED_CONFIG_KEYS) -> dict:
    """``{key: (saved, current)}`` for every constructor argument that differs."""
    keys = (set(saved) | set(current)) - set(ignore)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def check_model_config(saved: dict, current: dict, path) -> None:
    diff = config_differences(saved, current)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} was trained with another model config ({lines})")


def load_pretrained(path: str | Path, device="cpu", input_dim: int | None = None,
                    max_len: int | None = None, frozen: bool = True, strict: bool = True
                    ) -> tuple[models_lvmae.LVMAE, dict]:
    """Build the LV-MAE of a training checkpoint or an exported directory and load its weights
    strictly (eval mode; frozen unless ``frozen=False``). Every consumer's ``--checkpoint``.

    ``input_dim`` (the store's dim) is checked against the checkpoint; ``max_len`` may be raised.
    The model's hub config is the export config, so ``model.save_pretrained(dir)`` writes a
    directory this function (and ``LVMAE.from_pretrained``) reads back.
    """
    ckpt = load_checkpoint(path)
    cfg = dict(ckpt["model_config"])
    if input_dim is not None:
        check_input_dim(ckpt, input_dim, path)
    if max_len is not None:
        if max_len < cfg["max_len"]:
            raise CheckpointError(f"--num_patches {max_len} is below the max_len {cfg['max_len']} of {path}: windows "
                                  "can be made longer than in pretraining, not shorter (omit --num_patches)")
        cfg["max_len"] = max_len
    try:
        model = models_lvmae.LVMAE(**cfg)
    except TypeError as e:
        raise CheckpointError(f"{path}: model_config is not LVMAE's constructor arguments ({e})") from None
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise CheckpointError(f"{path}: weights do not match the LV-MAE model ({_first_line(e)})") from None
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path}: weights do not match the LV-MAE model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    if _has_data(ckpt):
        model._hub_mixin_config = export_config({**ckpt, "model_config": dict(model.config)})
    model.to(device).eval().requires_grad_(not frozen)
    return model, ckpt


def check_input_dim(ckpt: dict, input_dim: int, path) -> None:
    expects = ckpt["model_config"].get("input_dim")
    if expects != input_dim:
        raise CheckpointError(f"{path} expects {expects}-d segment embeddings, the store has "
                              f"{input_dim}-d ones (another encoder?)")


def check_store_encoder(ckpt: dict, manifest: dict, path, store_name: str) -> None:
    """Refuse a store made by another short-video encoder than the checkpoint's pretraining data
    (equal dims are not enough: two encoders' spaces do not mean the same thing)."""
    encoder = (ckpt.get("data") or {}).get("encoder")
    if encoder is not None and encoder != manifest["encoder"]:
        raise CheckpointError(f"{path} was pretrained on {encoder!r} embeddings but the store {store_name} "
                              f"holds {manifest['encoder']!r} ones")


# --- exported model directories (export_pretrained.py, LVMAE.save_pretrained) --------------------
# config.json: the model_config keys at the top level (what PyTorchModelHubMixin passes to
# LVMAE's constructor), plus "model_type", "format_version", "objective", "data" (the checkpoint's:
# encoder, dim, normalized, profile required, any other key kept), "training" ({"epoch", "args"}:
# the recipe) and any other plain (JSON) top-level key of the checkpoint. model.safetensors: the
# checkpoint's "model".
MODEL_TYPE = "lvmae"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
DATA_KEYS = ("encoder", "dim", "normalized", "profile")
# Checkpoint keys that are not exported (training state) or are exported in their own place.
_NOT_EXPORTED = ("model", "model_config", "optimizer", "scaler", "rng", "args", "epoch", "format_version", "data",
                 "objective")
_EXPORT_ONLY = ("model_type", "training")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__


def _constructor_keys() -> set[str]:
    return set(inspect.signature(models_lvmae.LVMAE.__init__).parameters) - {"self"}


def _has_data(ckpt: dict) -> bool:
    return isinstance(ckpt.get("data"), dict) and all(k in ckpt["data"] for k in DATA_KEYS)


def objective_of(ckpt: dict) -> str:
    """The objective that trained a checkpoint: its own key, model_config's or args' (in that
    order), else "mae" (every checkpoint before contrastive objectives existed)."""
    for source in (ckpt, ckpt.get("model_config") or {}, ckpt.get("args") or {}):
        if source.get("objective"):
            return str(source["objective"])
    return "mae"


def export_config(ckpt: dict, path="checkpoint") -> dict:
    """The ``config.json`` of an exported directory for ``ckpt`` (a loaded checkpoint)."""
    if not _has_data(ckpt):
        have = sorted(ckpt["data"]) if isinstance(ckpt.get("data"), dict) else "no 'data'"
        raise CheckpointError(f"{path} does not record its data's {', '.join(DATA_KEYS)} (it has {have}); "
                              "an export must say which short-video encoder its inputs come from")
    cfg = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **ckpt["model_config"],
           "objective": objective_of(ckpt), "data": dict(ckpt["data"]),  # DATA_KEYS, and any other data key
           "training": {"epoch": ckpt.get("epoch"), "args": ckpt.get("args") or {}}}
    for key, value in ckpt.items():
        if key in _NOT_EXPORTED or key in cfg:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: key {key!r} is not plain JSON and has no place in config.json; "
                                  "export it as a tensor of the model's state dict") from None
        cfg[key] = value
    return cfg


def read_exported(path: Path) -> dict:
    """An exported directory as a checkpoint dict (``model``, ``model_config``, ``data``, ``epoch``,
    ``args``, ``objective``, ``format_version`` + other config keys), not yet upgraded."""
    lacks = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if lacks:
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; an exported model "
                              f"directory holds {CONFIG_FILE} and {WEIGHTS_FILE}, this one lacks {' and '.join(lacks)}")
    try:
        cfg = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path / CONFIG_FILE} is not a model config (a JSON object)")
    data = cfg.get("data")
    if not isinstance(data, dict) or not data.get("encoder"):
        raise CheckpointError(f"{path / CONFIG_FILE} lacks data.encoder (the short-video encoder the model was "
                              "pretrained on), so no store can be checked against it; write the directory with "
                              "export_pretrained.py")
    checkpoint_format_version(cfg, path / CONFIG_FILE)
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path / WEIGHTS_FILE} is not a readable safetensors file ({_first_line(e)})") from None
    keys = _constructor_keys()
    training = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
    ckpt = {k: v for k, v in cfg.items() if k not in keys and k not in _EXPORT_ONLY}
    ckpt.update(model=state, model_config={k: cfg[k] for k in keys if k in cfg}, epoch=training.get("epoch"),
                args=training.get("args") or {})
    if "objective" in cfg:  # a top-level checkpoint key, whether or not it is also a constructor argument
        ckpt["objective"] = cfg["objective"]
    return ckpt


def checkpoint_digest(path: str | Path) -> str:
    """sha256 of a checkpoint file, or of an exported directory's config and weights (what the
    feature cache keys on)."""
    from util.feature_cache import file_digest
    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    doc = {name: file_digest(path / name) for name in (CONFIG_FILE, WEIGHTS_FILE)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# --- RNG state as tensors / plain types ---------------------------------------------------------
def get_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _to_plain(random.getstate()),
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x):
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x
