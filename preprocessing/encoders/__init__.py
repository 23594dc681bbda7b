"""Short-video encoder backends: ``build_encoder("clip", "ckpt_dir")`` and friends.

Every backend loads from a local directory only (no hub downloads) and implements
``preprocessing.encoders.base.SegmentEncoder``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from util.cli import UserError

# Importing this package stays cheap (no torch): the extraction CLI lists the backends in its
# argument parser, and decode workers re-import that module.
BACKENDS = {
    "languagebind": "preprocessing.encoders.languagebind:LanguageBindEncoder",
    "clip": "preprocessing.encoders.clip:CLIPEncoder",
    "internvideo2": "preprocessing.encoders.internvideo2:InternVideo2Encoder",
}


def encoder_name(backend: str, checkpoint) -> str:
    """``"<backend>:<checkpoint directory name>"``: the name a store's manifest records (and a
    checkpoint's data), known before any weight is loaded."""
    return f"{backend}:{Path(checkpoint).resolve().name}"


class EncoderError(UserError, ValueError):
    """An encoder that cannot be built as asked; the message names the flag or file at fault."""


def build_encoder(backend: str, checkpoint, device="cpu", dtype="auto",
                  frames_per_segment: int | None = None, profile: str = "hf"):
    """A frozen ``SegmentEncoder`` in eval mode with the transform of ``profile``
    (``preprocessing.profiles``); ``EncoderError`` names the flag at fault."""
    if backend not in BACKENDS:
        raise EncoderError(f"unknown --encoder {backend!r}; choose from {', '.join(BACKENDS)}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise EncoderError(f"--checkpoint {checkpoint} is not a directory: give the local directory of the "
                           f"{backend} model (weights, config and tokenizer files); "
                           "`python -m preprocessing.make_tiny_encoder` writes a tiny one for trying things out")
    import torch
    from preprocessing.encoders.base import resolve_dtype, resolve_profile_dtype
    from preprocessing.profiles import get_profile
    from preprocessing.transforms import check_available
    try:
        prof = get_profile(profile)
    except ValueError as e:
        raise EncoderError(str(e)) from None
    device = torch.device(device)
    module, cls = BACKENDS[backend].split(":")
    encoder = getattr(importlib.import_module(module), cls)(
        checkpoint, device, resolve_dtype(resolve_profile_dtype(dtype, prof), device), frames_per_segment, prof)
    try:
        check_available(encoder.transform)
    except ImportError as e:
        raise EncoderError(f"--encoder {backend}: {e}") from None
    return encoder
