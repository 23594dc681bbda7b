"""Checkpoint I/O: tensors and plain Python types only, so ``torch.load(weights_only=True)``
reads every file this project writes. Writes are atomic (tmp file + ``os.replace``).

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
        lacks = [f for f in ("config.json", "model.safetensors") if not (path / f).is_file()]
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; an exported model "
                              f"directory holds config.json and model.safetensors, this one lacks {' and '.join(lacks)}"
                              if lacks else f"checkpoint {path} is an exported model directory, which this command "
                              "cannot read yet; give a checkpoint-*.pth file")
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
                    max_len: int | None = None) -> tuple[models_lvmae.LVMAE, dict]:
    """Build the LV-MAE of a checkpoint and load its weights (frozen, eval mode).

    ``input_dim`` (the store's dim) is checked against the checkpoint; ``max_len`` may be raised.
    """
    ckpt = load_checkpoint(path)
    cfg = dict(ckpt["model_config"])
    if input_dim is not None and cfg.get("input_dim") != input_dim:
        raise CheckpointError(f"{path} expects {cfg.get('input_dim')}-d segment embeddings, the store has "
                              f"{input_dim}-d ones (another encoder?)")
    if max_len is not None:
        if max_len < cfg["max_len"]:
            raise CheckpointError(f"--num_patches {max_len} is below the max_len {cfg['max_len']} of {path}: windows "
                                  "can be made longer than in pretraining, not shorter (omit --num_patches)")
        cfg["max_len"] = max_len
    try:
        model = models_lvmae.LVMAE(**cfg)
    except TypeError as e:
        raise CheckpointError(f"{path}: model_config is not LVMAE's constructor arguments ({e})") from None
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the LV-MAE model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    model.to(device).eval().requires_grad_(False)
    return model, ckpt


def check_store_encoder(ckpt: dict, manifest: dict, path, store_name: str) -> None:
    """Refuse a store made by another short-video encoder than the checkpoint's pretraining data
    (equal dims are not enough: two encoders' spaces do not mean the same thing)."""
    encoder = (ckpt.get("data") or {}).get("encoder")
    if encoder is not None and encoder != manifest["encoder"]:
        raise CheckpointError(f"{path} was pretrained on {encoder!r} embeddings but the store {store_name} "
                              f"holds {manifest['encoder']!r} ones")


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
