"""Each encoder's own input transform, split between the decode workers and the encoder's device.

A transform has two halves, so the workers ship exactly what the rest of it needs::

    prepare(frame uint8 [H, W, 3]) -> ndarray ``shape``, ``dtype``   decode worker, once per sampled frame
    finish(x [B, T, *shape] tensor)  -> float32 [B, T, 3, S, S]      encoder device, once per batch

- ``CLIPProcessorTransform``: transformers' ``CLIPImageProcessor`` (its ``preprocessor_config.json``):
  PIL resize of the short side to ``size["shortest_edge"]`` (long side ``int(S * long / short)``,
  truncated), centre crop to ``crop_size`` at offsets ``(H - h) // 2`` (zero padding when smaller),
  then rescale and mean / std. The workers ship the uint8 crop.
- ``LanguageBindTransform``: ``LanguageBindVideoProcessor``'s transform without its random flip:
  ``x / 255``, OpenAI mean / std (``NormalizeVideo``), short side to 224 by
  ``F.interpolate(bilinear, align_corners=False)`` without antialiasing, the new long side
  floored (pytorchvideo's ``ShortSideScale``), centre crop at ``round((H - 224) / 2)``
  (``CenterCropVideo``). It normalises first and resizes in float32, so the workers run all of
  it (torch, one thread) and ship normalised float32 crops.
- ``InternVideo2DemoTransform``: InternVideo2's demo ``frames2tensor``: ``cv2.resize`` of the
  whole frame to ``size_t`` x ``size_t`` (``INTER_LINEAR``, no crop), then ``(x / 255 - mean) / std``
  with ImageNet statistics. The workers ship the uint8 resize.
- ``LegacyTransform``: what every encoder got before profiles existed (PIL resize with
  ``reducing_gap=3``, rounded sizes and offsets); only for finishing a ``legacy`` store.

This module imports neither torch nor cv2 at import time: decode workers start fast, and only
a worker whose transform needs them imports them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_PIL_NAMES = {v: k for k, v in _PIL_FILTERS.items()}


def _normalise_uint8(x, mean, std, rescale: float = 1 / 255):
    """uint8 ``[B, T, H, W, 3]`` tensor -> float32 ``[B, T, 3, H, W]``, ``(x * rescale - mean) / std``."""
    import torch
    x = x.permute(0, 1, 4, 2, 3).float()
    x = x.div_(255.0) if rescale == 1 / 255 else x.mul_(rescale)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 1, 3, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class FrameTransform:
    """Base: ``size`` is the side ``S`` of the square model input."""
    size: int
    mean: tuple
    std: tuple
    name: ClassVar[str] = ""
    dtype: ClassVar[str] = "uint8"  # what prepare() returns
    worker_modules: ClassVar[tuple] = ()  # what prepare() imports (preloaded by the workers' fork server)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one prepared frame."""
        return (self.size, self.size, 3)

    def setup_worker(self) -> None:
        """Called once in each decode worker before its first frame."""

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def finish(self, x):
        return _normalise_uint8(x, self.mean, self.std)

    def manifest(self) -> dict:
        """Store manifest keys that say how the vectors' pixels were made (checked on resume)."""
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "size"}
        return {"transform": self.name, "frame_size": self.size, **fields}


@dataclass(frozen=True)
class CLIPProcessorTransform(FrameTransform):
    """transformers' ``CLIPImageProcessor`` (``resize`` -> ``center_crop`` -> ``rescale`` -> ``normalize``)."""
    shortest_edge: int | None = 224   # None: resize to exactly ``resize_hw``
    resize_hw: tuple | None = None
    crop_hw: tuple = (224, 224)
    resample: int = 3                 # PIL filter number (3 = bicubic, the processor's default)
    rescale: float = 1 / 255
    name: ClassVar[str] = "clip-image-processor"

    @property
    def shape(self):
        return (*self.crop_hw, 3)

    def prepare(self, frame):
        img = Image.fromarray(frame)
        w, h = img.size
        if self.shortest_edge is not None:  # transformers' get_resize_output_image_size(default_to_square=False)
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            nh, nw = (new_long, new_short) if w <= h else (new_short, new_long)
        else:
            nh, nw = self.resize_hw
        arr = np.asarray(img.resize((nw, nh), resample=self.resample, reducing_gap=None))
        return _processor_center_crop(arr, *self.crop_hw)

    def finish(self, x):
        return _normalise_uint8(x, self.mean, self.std, self.rescale)

    def manifest(self):
        out = super().manifest()
        out["resample"] = _PIL_NAMES.get(self.resample, self.resample)
        return out


def _processor_center_crop(img: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """transformers' ``center_crop``: offsets floored, zero padding where the image is smaller."""
    h, w = img.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top < 0 or left < 0:
        nh, nw = max(ch, h), max(cw, w)
        padded = np.zeros((nh, nw, img.shape[2]), img.dtype)
        tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
        padded[tp:tp + h, lp:lp + w] = img
        img, top, left = padded, top + tp, left + lp
    return np.ascontiguousarray(img[max(0, top):top + ch, max(0, left):left + cw])


@dataclass(frozen=True)
class LanguageBindTransform(FrameTransform):
    """LanguageBind's video transform minus ``RandomHorizontalFlipVideo``; runs in float32."""
    name: ClassVar[str] = "languagebind-video"
    dtype: ClassVar[str] = "float32"
    worker_modules: ClassVar[tuple] = ("torch",)

    @property
    def shape(self):
        return (3, self.size, self.size)

    def setup_worker(self):
        import torch
        torch.set_num_threads(1)  # one decode worker per core already

    def prepare(self, frame):
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None] / 255.0  # [1, 3, H, W]
        mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
        x = x.sub_(mean).div_(std).contiguous()  # LanguageBind interpolates contiguous planes
        h, w = x.shape[-2:]
        s = self.size
        nh, nw = (int(math.floor(h / w * s)), s) if w < h else (s, int(math.floor(w / h * s)))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return x[0, :, top:top + s, left:left + s].contiguous().numpy()

    def finish(self, x):
        return x.float()


@dataclass(frozen=True)
class InternVideo2DemoTransform(FrameTransform):
    """InternVideo2's demo: ``cv2.resize(frame, (S, S))`` (bilinear, no crop), ImageNet mean / std."""
    name: ClassVar[str] = "internvideo2-demo"
    worker_modules: ClassVar[tuple] = ("cv2",)

    def setup_worker(self):
        import cv2
        cv2.setNumThreads(1)

    def prepare(self, frame):
        import cv2
        return cv2.resize(np.ascontiguousarray(frame), (self.size, self.size), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class LegacyTransform(FrameTransform):
    """Before profiles: PIL resize (short side to ``size``, rounded) + centre crop, or a squash."""
    crop: str = "center"            # "center" | "resize"
    interpolation: str = "bicubic"  # PIL filter name
    name: ClassVar[str] = "legacy"

    def prepare(self, frame):
        img = Image.fromarray(frame)
        s, resample = self.size, _PIL_FILTERS[self.interpolation]
        if self.crop == "resize":
            return np.asarray(img.resize((s, s), resample, reducing_gap=3.0))
        w, h = img.size
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        img = img.resize((nw, nh), resample, reducing_gap=3.0)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        return np.asarray(img.crop((left, top, left + s, top + s)))

    def manifest(self):
        # exactly the keys such stores were written with
        return {"frame_size": self.size, "crop": self.crop, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}


_PACKAGES = {"cv2": "opencv-python-headless", "torch": "torch"}


def check_available(transform: FrameTransform) -> None:
    """Raise ImportError naming the package a transform's worker half needs."""
    import importlib.util
    for module in transform.worker_modules:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"the {transform.name} transform needs {module} (pip install {_PACKAGES[module]})")


__all__ = ["FrameTransform", "CLIPProcessorTransform", "LanguageBindTransform", "InternVideo2DemoTransform",
           "LegacyTransform", "check_available"]
