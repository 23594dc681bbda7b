"""CLIP image tower applied per frame, frame embeddings L2-normalised and averaged
(CLIP4Clip's "meanP" video embedding); CLIP's text tower for captions.

Frame size, mean / std and the resize filter come from the checkpoint's
``preprocessor_config.json`` when present (crop size; short side resized to it), else from the
model config and OpenAI's statistics.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from preprocessing.encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, SegmentEncoder

DEFAULT_FRAMES = 8
_PIL_BILINEAR = 2


class CLIPEncoder(SegmentEncoder):
    backend = "clip"
    crop = "center"

    def __init__(self, checkpoint: Path, device, dtype, frames_per_segment: int | None = None):
        from transformers import AutoTokenizer, CLIPModel
        self.model = CLIPModel.from_pretrained(checkpoint, attn_implementation="sdpa").eval().requires_grad_(False)
        self.model.to(device=device, dtype=dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        config = self.model.config
        size, mean, std = config.vision_config.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        proc_file = Path(checkpoint) / "preprocessor_config.json"
        if proc_file.is_file():
            proc = json.loads(proc_file.read_text())
            crop = proc.get("crop_size", size)
            size = crop["height"] if isinstance(crop, dict) else int(crop)
            mean, std = proc.get("image_mean", mean), proc.get("image_std", std)
            if proc.get("resample") == _PIL_BILINEAR:
                self.interpolation = "bilinear"
        self.context_length = config.text_config.max_position_embeddings
        super().__init__(checkpoint, device, dtype, frames_per_segment=frames_per_segment or DEFAULT_FRAMES,
                         frame_size=size, mean=mean, std=std, dim=config.projection_dim)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        B, T = pixels.shape[:2]
        frames = self.model.get_image_features(pixel_values=pixels.flatten(0, 1))  # [B*T, D]
        return F.normalize(frames.float(), dim=-1).view(B, T, -1).mean(1)

    def _encode_text(self, texts):
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt").to(self.device)
        return self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
