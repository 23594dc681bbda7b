"""Extraction profiles: which frames of a window are sampled, how they are transformed, which
tails are kept and in what precision the encoder runs. Recorded in the store manifest
(``profile``; a manifest without it is ``legacy``); stores of different profiles are refused
together, like stores of different encoders.

- ``hf`` (default): each encoder's own published transform (``preprocessing.transforms``:
  transformers' ``CLIPImageProcessor``, ``LanguageBindVideoProcessor`` without its random flip,
  InternVideo2's demo), ``T`` frames at the centres of ``T`` equal parts of each window, the
  last partial window kept when it lasts at least half a segment, float16 on GPU.
- ``authors``: the authors' extraction (``data_preprocess/`` of amazon-science/lv-mae) inside
  one decode of the source: frames ``linspace(0, n - 1, T)`` of each window's ``n`` frames
  (both ends included), every tail kept, float32, each encoder's own transform. Their ffmpeg
  re-encode into 5-s files (libx264, CRF 18) and their random horizontal flip are not
  reproduced (docs/preprocessing.md).
- ``legacy``: what extraction did before profiles existed (one PIL resize for every encoder,
  window centres, half-segment tails, float16 on GPU); only to finish a store made then.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    frame_rule: str                # preprocessing.windows.FRAME_RULES
    min_last_fraction: float       # default --min_last_seconds, as a fraction of --segment_seconds
    dtype: str                     # what --dtype auto means: "auto" (float16 on GPU) or "float32"
    own_transform: bool            # each encoder's own transform, else LegacyTransform
    fixed: bool = False            # min_last and dtype are part of the profile (flags may not change them)


PROFILES = {
    "hf": Profile("hf", "centres", 0.5, "auto", True),
    "authors": Profile("authors", "linspace", 0.0, "float32", True, fixed=True),
    "legacy": Profile("legacy", "centres", 0.5, "auto", False),
}
DEFAULT_PROFILE = "hf"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown --profile {name!r}; choose from {', '.join(PROFILES)}") from None
