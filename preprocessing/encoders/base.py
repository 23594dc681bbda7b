"""The interface every short-video encoder backend implements.

A backend knows its model's input contract (frames per segment ``T``, frame size ``S``, its
own resize / crop / normalisation) and exposes::

    encode_video(frames)  [B, T, *transform.shape] (the decode workers' half of its transform)
                                                                            ->  float32 [B, D]
    encode_text(texts)    list[str]                                         ->  float32 [N, D]

Its ``transform`` (``preprocessing.transforms``) depends on the extraction profile
(``preprocessing.profiles``): the model's own transform, or the legacy PIL one.

Both return CPU tensors whatever the model's device (callers go on to numpy / the store).

``name`` is ``"<backend>:<checkpoint directory name>"``: what the store's manifest records and
what decides whether two stores may be mixed (DESIGN.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from preprocessing.decode import SamplingSpec
from preprocessing.encoders import EncoderError, encoder_name
from preprocessing.profiles import Profile
from preprocessing.transforms import FrameTransform
from preprocessing.windows import RULE_NAMES

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA (the paper's setting for frozen feature extraction), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    except KeyError:
        raise EncoderError(f"--dtype {dtype!r}: choose auto, float16, bfloat16 or float32") from None


def resolve_profile_dtype(dtype, profile: Profile):
    """``--dtype auto`` means what the profile says (``authors``: float32, as their code ran)."""
    return profile.dtype if dtype in (None, "auto") else dtype


class SegmentEncoder:
    """Frozen video(-text) encoder of 5-second segments. Subclasses build their transforms and
    implement ``_forward(pixels [B, T, 3, S, S]) -> [B, D]`` and ``_encode_text``."""

    backend = ""

    def __init__(self, checkpoint: Path, device: torch.device, dtype: torch.dtype, *, frames_per_segment: int,
                 transform: FrameTransform, dim: int, profile: Profile, has_text: bool = True):
        self.name = encoder_name(self.backend, checkpoint)
        self.checkpoint = Path(checkpoint)
        self.device, self.dtype = device, dtype
        self.frames_per_segment = int(frames_per_segment)
        self.profile, self.transform = profile, transform
        self.frame_size = transform.size
        self.mean, self.std = tuple(float(m) for m in transform.mean), tuple(float(s) for s in transform.std)
        self.dim = int(dim)
        self.has_text = has_text

    @staticmethod
    def choose_transform(profile: Profile, own: FrameTransform, legacy: FrameTransform) -> FrameTransform:
        return own if profile.own_transform else legacy

    def sampling(self, segment_seconds: float, stride_seconds: float, min_last_seconds: float) -> SamplingSpec:
        """How the decode workers must cut, pick and prepare frames for this model."""
        return SamplingSpec(segment_seconds=segment_seconds, stride_seconds=stride_seconds,
                            min_last_seconds=min_last_seconds, frames_per_segment=self.frames_per_segment,
                            frame_rule=self.profile.frame_rule, transform=self.transform)

    def manifest_fields(self) -> dict:
        """Extra manifest keys: how the vectors were made (checked again on resume)."""
        return {"profile": self.profile.name, **self.transform.manifest(),
                "sampling": RULE_NAMES[self.profile.frame_rule]}

    def preprocess(self, frames) -> torch.Tensor:
        """Prepared frames ``[B, T, *transform.shape]`` -> normalised ``[B, T, 3, S, S]`` in the model's dtype."""
        x = frames if torch.is_tensor(frames) else torch.from_numpy(np.ascontiguousarray(frames))
        expected = (self.frames_per_segment, *self.transform.shape)
        dtype = getattr(torch, self.transform.dtype)
        if x.dtype != dtype or x.ndim != 2 + len(self.transform.shape) or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.name}: frames must be {self.transform.dtype} [B, {', '.join(map(str, expected))}] "
                             f"({self.transform.name} transform), got {x.dtype} {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        return self.transform.finish(x).to(self.dtype)

    @torch.no_grad()
    def encode_video(self, frames) -> torch.Tensor:
        """Prepared frames ``[B, T, *transform.shape]`` -> float32 ``[B, D]`` on the CPU."""
        return self._forward(self.preprocess(frames)).float().cpu()

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``N`` captions -> float32 ``[N, D]`` on the CPU, in the same space as ``encode_video``."""
        if not self.has_text:
            raise EncoderError(f"{self.name} has no text tower")
        return self._encode_text(list(texts)).float().cpu()

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError
