"""Independent references for the encoders' input transforms (tests and
``benchmarks/compare_transforms.py``): the published code itself where it can run here, the
published computation written out where it cannot. Nothing here calls ``preprocessing``.

- CLIP: transformers' ``CLIPImageProcessor`` (installed).
- LanguageBind: ``languagebind/video/processing_video.py`` of the installed ``languagebind``
  package, loaded as a file with ``pytorchvideo`` (not installable next to current torchvision)
  replaced by its ``ShortSideScale`` written out below from pytorchvideo's
  ``transforms/functional.py``; its ``get_video_transform`` and ``load_and_transform_video``
  run as published, minus the final ``RandomHorizontalFlipVideo``.
- InternVideo2: the demo's ``frames2tensor`` (InternVideo2/multi_modality/demo/utils.py)
  written out; it needs cv2 and the demo's repository code, which is not packaged.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]).reshape(1, 1, 3)
IMAGENET_STD = np.array([0.229, 0.224, 0.225]).reshape(1, 1, 3)


# --- CLIP ----------------------------------------------------------------------------------------
def clip_processor(frames, processor) -> np.ndarray:
    """``CLIPImageProcessor`` on uint8 ``[H, W, 3]`` frames -> float32 ``[N, 3, h, w]``."""
    return processor(images=list(frames), return_tensors="np")["pixel_values"]


# --- LanguageBind --------------------------------------------------------------------------------
def _short_side_scale(x: torch.Tensor, size: int, interpolation: str = "bilinear", backend: str = "pytorch"):
    # pytorchvideo.transforms.functional.short_side_scale, as published
    assert len(x.shape) == 4
    assert x.dtype == torch.float32
    c, t, h, w = x.shape
    if w < h:
        new_h = int(math.floor((float(h) / w) * size))
        new_w = size
    else:
        new_h = size
        new_w = int(math.floor((float(w) / h) * size))
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode=interpolation, align_corners=False)


class _ShortSideScale(torch.nn.Module):
    def __init__(self, size, interpolation="bilinear", backend="pytorch"):
        super().__init__()
        self._size, self._interpolation, self._backend = size, interpolation, backend

    def forward(self, x):
        return _short_side_scale(x, self._size, self._interpolation, self._backend)


@contextlib.contextmanager
def _native_decord_bridge():
    """processing_video sets decord's bridge to torch for the whole process; put it back."""
    try:
        yield
    finally:
        import decord
        decord.bridge.set_bridge("native")


_PROCESSING = None


def languagebind_processing():
    """The installed ``languagebind/video/processing_video.py`` as a module."""
    global _PROCESSING
    if _PROCESSING is None:
        stubs = {"pytorchvideo": types.ModuleType("pytorchvideo"),
                 "pytorchvideo.data": types.ModuleType("pytorchvideo.data"),
                 "pytorchvideo.data.encoded_video": types.ModuleType("pytorchvideo.data.encoded_video"),
                 "pytorchvideo.transforms": types.ModuleType("pytorchvideo.transforms")}
        stubs["pytorchvideo.data.encoded_video"].EncodedVideo = None
        t = stubs["pytorchvideo.transforms"]
        t.ShortSideScale, t.ApplyTransformToKey, t.UniformTemporalSubsample = _ShortSideScale, None, None
        saved = {k: sys.modules.get(k) for k in stubs}
        sys.modules.update(stubs)
        try:
            root = Path(importlib.util.find_spec("languagebind").submodule_search_locations[0])
            spec = importlib.util.spec_from_file_location("_reference_lb_processing", root / "video" /
                                                          "processing_video.py")
            module = importlib.util.module_from_spec(spec)
            with _native_decord_bridge(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                spec.loader.exec_module(module)
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v
        _PROCESSING = module
    return _PROCESSING


def languagebind_transform(num_frames: int = 8):
    """``get_video_transform`` for the decord backend, without its random horizontal flip."""
    from torchvision.transforms import Compose
    with warnings.catch_warnings():  # the module LanguageBind imports its video transforms from is deprecated
        warnings.simplefilter("ignore", UserWarning)
        from torchvision.transforms._transforms_video import RandomHorizontalFlipVideo
    lb = languagebind_processing()
    config = SimpleNamespace(vision_config=SimpleNamespace(video_decode_backend="decord", num_frames=num_frames))
    transform = lb.get_video_transform(config)
    assert isinstance(transform.transforms[-1], RandomHorizontalFlipVideo), transform
    return Compose(transform.transforms[:-1])


def languagebind_video(frames) -> np.ndarray:
    """LanguageBind's transform of uint8 ``[T, H, W, 3]`` frames -> float32 ``[T, 3, 224, 224]``."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (T, H, W, C) -> (C, T, H, W)
    return languagebind_transform()(video).permute(1, 0, 2, 3).numpy()


def languagebind_load_video(path, num_frames: int = 8) -> np.ndarray:
    """``load_and_transform_video(path, transform, "decord")`` -> float32 ``[T, 3, 224, 224]``: what
    the authors' code computed for one 5-s file (minus the flip)."""
    lb = languagebind_processing()
    with _native_decord_bridge():
        out = lb.load_and_transform_video(str(path), languagebind_transform(num_frames), "decord",
                                          num_frames=num_frames)
    return out.permute(1, 0, 2, 3).numpy()


# --- InternVideo2 --------------------------------------------------------------------------------
def internvideo2_demo(frames_rgb, size: int = 224) -> np.ndarray:
    """The demo's ``frames2tensor`` on all given frames (it gets BGR from cv2.VideoCapture) ->
    float32 ``[T, 3, size, size]``."""
    import cv2
    vid_list = [f[:, :, ::-1] for f in frames_rgb]  # what cv2.VideoCapture would have returned
    vid_list = [cv2.resize(x[:, :, ::-1], (size, size)) for x in vid_list]
    vid_tube = [np.expand_dims((x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, axis=(0, 1)) for x in vid_list]
    vid_tube = np.transpose(np.concatenate(vid_tube, axis=1), (0, 1, 4, 2, 3))
    return torch.from_numpy(vid_tube).float()[0].numpy()


# --- test frames ---------------------------------------------------------------------------------
def busy_frames(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, H, W, 3]``: smooth gradients, sharp edges and pixel noise (the worst case
    for a resize that differs from the reference)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        smooth = 127 + 100 * np.sin(x[..., None] / (7 + 3 * k) + y[..., None] / 11 + np.arange(3))
        edges = 255 * (((x // (5 + k)) + (y // 9)) % 2)[..., None]
        noise = rng.integers(0, 256, (height, width, 3))
        frame = np.where((x // 64 % 3 == 0)[..., None], smooth, np.where((y // 48 % 2 == 0)[..., None], edges, noise))
        out[k] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def split_by_windows(source, windows, out_dir) -> list[Path]:
    """One lossless file per window holding the source frames whose timestamps lie in it (the
    authors' ffmpeg split, without its lossy re-encode): the decoded YUV frames are re-encoded
    with x264 at qp 0, so a decoder returns exactly the source's pixels."""
    import av
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{k:05d}.mp4" for k in range(len(windows))]
    outs = [None] * len(windows)
    counts = [0] * len(windows)
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        frames = list(src.decode(stream))
        t0 = frames[0].pts * stream.time_base
        for frame in frames:
            t = float(frame.pts * stream.time_base - t0)
            k = next((i for i, (a, b) in enumerate(windows) if a - 1e-6 <= t < b - 1e-6), None)
            if k is None:
                continue
            if outs[k] is None:
                outs[k] = av.open(str(paths[k]), "w")
                s = outs[k].add_stream("libx264", rate=stream.average_rate)
                s.width, s.height, s.pix_fmt = frame.width, frame.height, "yuv420p"
                s.options = {"qp": "0", "preset": "ultrafast"}
            s = outs[k].streams.video[0]
            new = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            new.pts = counts[k]
            counts[k] += 1
            outs[k].mux(s.encode(new))
    for o in outs:
        if o is not None:
            o.mux(o.streams.video[0].encode())
            o.close()
    return paths
