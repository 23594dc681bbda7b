"""The interface every short-video encoder backend implements.

A backend knows its model's input contract (frames per segment ``T``, frame size ``S``, the
resize / crop it was trained with, mean / std) and exposes::

    encode_video(frames)  uint8 [B, T, S, S, 3] (decoded, resized, cropped)  ->  float32 [B, D]
    encode_text(texts)    list[str]                                         ->  float32 [N, D]

Both return CPU tensors whatever the model's device (callers go on to numpy / the store).

``name`` is ``"<backend>:<checkpoint directory name>"``: what the store's manifest records and
what decides whether two stores may be mixed (DESIGN.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from preprocessing.decode import SamplingSpec
from preprocessing.encoders import EncoderError

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


class SegmentEncoder:
    """Frozen video(-text) encoder of 5-second segments. Subclasses set the attributes and
    implement ``_forward(pixels [B, T, 3, S, S]) -> [B, D]`` and ``_encode_text``."""

    backend = ""
    crop = "center"
    interpolation = "bicubic"

    def __init__(self, checkpoint: Path, device: torch.device, dtype: torch.dtype, *, frames_per_segment: int,
                 frame_size: int, mean, std, dim: int, has_text: bool = True):
        self.name = f"{self.backend}:{Path(checkpoint).resolve().name}"
        self.checkpoint = Path(checkpoint)
        self.device, self.dtype = device, dtype
        self.frames_per_segment, self.frame_size = int(frames_per_segment), int(frame_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.dim = int(dim)
        self.has_text = has_text
        self._mean = torch.tensor(self.mean, device=device).view(1, 1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=device).view(1, 1, 3, 1, 1)

    def sampling(self, segment_seconds: float, stride_seconds: float, min_last_seconds: float) -> SamplingSpec:
        """How the decode workers must cut and prepare frames for this model."""
        return SamplingSpec(segment_seconds=segment_seconds, stride_seconds=stride_seconds,
                            min_last_seconds=min_last_seconds, frames_per_segment=self.frames_per_segment,
                            frame_size=self.frame_size, crop=self.crop, interpolation=self.interpolation)

    def manifest_fields(self) -> dict:
        """Extra manifest keys: how the vectors were made (checked again on resume)."""
        return {"frame_size": self.frame_size, "crop": self.crop, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "sampling": "window-centres"}

    def preprocess(self, frames) -> torch.Tensor:
        """uint8 ``[B, T, S, S, 3]`` -> normalised ``[B, T, 3, S, S]`` in the model's dtype."""
        x = frames if torch.is_tensor(frames) else torch.from_numpy(np.ascontiguousarray(frames))
        expected = (self.frames_per_segment, self.frame_size, self.frame_size, 3)
        if x.dtype != torch.uint8 or x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.name}: frames must be uint8 [B, {', '.join(map(str, expected))}], "
                             f"got {x.dtype} {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    @torch.no_grad()
    def encode_video(self, frames) -> torch.Tensor:
        """uint8 ``[B, T, S, S, 3]`` -> float32 ``[B, D]`` on the CPU."""
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
