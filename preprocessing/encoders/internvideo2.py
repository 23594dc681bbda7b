"""InternVideo2 stage-2 video-text model, loaded from a local Hugging Face directory through
its own remote code (``AutoModel.from_pretrained(dir, trust_remote_code=True)``).

We call the checkpoint's own feature methods, as its demo does (OpenGVLab/InternVideo,
``InternVideo2/multi_modality/demo/utils.py``, class ``InternVideo2_Stage2``; the Hugging Face
stage-2 repositories expose the same methods, e.g. OpenVINO's InternVideo2 notebook helper calls
``model.get_vid_feat`` on ``AutoModel.from_pretrained(..., trust_remote_code=True)``):

- ``get_vid_feat(frames [B, T, C, H, W]) -> [B, D]`` (or ``[B, 1, D]``), L2-normalised;
- ``get_txt_feat(text: str) -> [1, D]``, tokenised inside with the model's own tokenizer.

Input contract from that demo (``frames2tensor``): ``config.num_frames`` frames (``4`` or ``8``
depending on the checkpoint), each resized (no crop) to ``config.size_t`` (224) by
``cv2.resize`` (``INTER_LINEAR``), then ``(x / 255 - mean) / std`` with ImageNet statistics
(``preprocessing.transforms.InternVideo2DemoTransform``). The real checkpoints were not run here (no network); the tests use a
tiny remote-code model with the same method names.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from preprocessing.encoders import EncoderError
from preprocessing.encoders.base import IMAGENET_MEAN, IMAGENET_STD, SegmentEncoder
from preprocessing.transforms import InternVideo2DemoTransform, LegacyTransform

REQUIRED_METHODS = ("get_vid_feat", "get_txt_feat")


def _config_value(config, key, default):
    value = getattr(config, key, None)
    if value is None and isinstance(config, dict):
        value = config.get(key)
    return default if value is None else value


def check_remote_code(checkpoint: Path) -> None:
    """Fail early, naming the missing file, when the directory cannot be loaded offline."""
    cfg_file = checkpoint / "config.json"
    if not cfg_file.is_file():
        raise EncoderError(f"--checkpoint {checkpoint}: no config.json; download the whole Hugging Face "
                           "repository of an InternVideo2 stage-2 checkpoint (weights, config and *.py)")
    auto_map = json.loads(cfg_file.read_text()).get("auto_map", {})
    target = auto_map.get("AutoModel")
    if not target:
        raise EncoderError(f"{cfg_file} has no auto_map.AutoModel entry: this directory carries no remote "
                           "code, so it is not an InternVideo2 stage-2 Hugging Face checkpoint")
    module = target.split("--")[-1].rsplit(".", 1)[0]
    if not (checkpoint / f"{module}.py").is_file():
        raise EncoderError(f"--checkpoint {checkpoint}: config.json's auto_map points at {module}.py, which is "
                           "missing; copy the repository's Python files next to the weights")


class InternVideo2Encoder(SegmentEncoder):
    backend = "internvideo2"

    def __init__(self, checkpoint: Path, device, dtype, frames_per_segment: int | None, profile):
        from transformers import AutoModel
        check_remote_code(checkpoint)
        self.model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, local_files_only=True)
        missing = [m for m in REQUIRED_METHODS if not callable(getattr(self.model, m, None))]
        if missing:
            raise EncoderError(f"--checkpoint {checkpoint}: its model class {type(self.model).__name__} has no "
                               f"{', '.join(missing)}; expected an InternVideo2 stage-2 checkpoint")
        self.model.eval().requires_grad_(False).to(device=device, dtype=dtype)
        # get_txt_feat moves its tokens to ``config.device``; point it at ours.
        for cfg in (getattr(self.model, "_config", None), self.model.config):
            if cfg is not None and hasattr(cfg, "device"):
                cfg.device = device
        config = getattr(self.model, "_config", None) or self.model.config
        native = int(_config_value(config, "num_frames", 8))
        T = frames_per_segment or native
        size = int(_config_value(config, "size_t", 224))
        self.device, self.dtype = device, dtype
        with torch.no_grad():
            probe = self.model.get_vid_feat(torch.zeros(1, T, 3, size, size, device=device, dtype=dtype))
        own = InternVideo2DemoTransform(size, IMAGENET_MEAN, IMAGENET_STD)
        legacy = LegacyTransform(size, IMAGENET_MEAN, IMAGENET_STD, crop="resize", interpolation="bilinear")
        super().__init__(checkpoint, device, dtype, frames_per_segment=T,
                         transform=self.choose_transform(profile, own, legacy), dim=probe.reshape(1, -1).shape[1],
                         profile=profile)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_vid_feat(pixels).reshape(pixels.shape[0], -1)

    def _encode_text(self, texts):
        return torch.cat([self.model.get_txt_feat(t).reshape(1, -1) for t in texts])
