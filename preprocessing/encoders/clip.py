"""CLIP image tower applied per frame, frame embeddings L2-normalised and averaged
(CLIP4Clip's "meanP" video embedding); CLIP's text tower for captions.

Frames are prepared as the checkpoint's ``CLIPImageProcessor`` prepares images
(``preprocessor_config.json``: ``size["shortest_edge"]``, ``crop_size``, ``resample``,
``rescale_factor``, ``image_mean`` / ``image_std``; the processor's defaults and the model's
``image_size`` when the file is absent), bit for bit up to float rounding
(``preprocessing.transforms.CLIPProcessorTransform``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from preprocessing.encoders import EncoderError
from preprocessing.encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, SegmentEncoder
from preprocessing.transforms import CLIPProcessorTransform, LegacyTransform

DEFAULT_FRAMES = 8
_PIL_BILINEAR = 2


def processor_transform(checkpoint: Path, image_size: int) -> CLIPProcessorTransform:
    """The checkpoint's ``CLIPImageProcessor`` settings as a frame transform."""
    from transformers import CLIPImageProcessor
    proc_file = Path(checkpoint) / "preprocessor_config.json"
    if proc_file.is_file():
        proc = CLIPImageProcessor.from_pretrained(checkpoint)
    else:
        proc = CLIPImageProcessor(size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size},
                                  image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))
    if not (proc.do_resize and proc.do_center_crop):
        raise EncoderError(f"{proc_file}: do_resize and do_center_crop must be true (frames of one size are batched)")
    size, crop = proc.size, proc.crop_size
    crop_hw = (int(crop["height"]), int(crop["width"]))
    if crop_hw != (image_size, image_size):
        raise EncoderError(f"{proc_file}: crop_size {crop_hw} does not match the model's image_size {image_size}")
    shortest = size.get("shortest_edge")
    resize_hw = None if shortest is not None else (int(size["height"]), int(size["width"]))
    mean, std = (proc.image_mean, proc.image_std) if proc.do_normalize else ((0.0,) * 3, (1.0,) * 3)
    return CLIPProcessorTransform(size=image_size, mean=tuple(map(float, mean)), std=tuple(map(float, std)),
                                  shortest_edge=None if shortest is None else int(shortest), resize_hw=resize_hw,
                                  crop_hw=crop_hw, resample=int(proc.resample),
                                  rescale=float(proc.rescale_factor) if proc.do_rescale else 1.0)


class CLIPEncoder(SegmentEncoder):
    backend = "clip"

    def __init__(self, checkpoint: Path, device, dtype, frames_per_segment: int | None, profile):
        from transformers import AutoTokenizer, CLIPModel
        self.model = CLIPModel.from_pretrained(checkpoint, attn_implementation="sdpa").eval().requires_grad_(False)
        self.model.to(device=device, dtype=dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        config = self.model.config
        own = processor_transform(checkpoint, config.vision_config.image_size)
        legacy = LegacyTransform(own.crop_hw[0], own.mean, own.std, crop="center",
                                 interpolation="bilinear" if own.resample == _PIL_BILINEAR else "bicubic")
        self.context_length = config.text_config.max_position_embeddings
        super().__init__(checkpoint, device, dtype, frames_per_segment=frames_per_segment or DEFAULT_FRAMES,
                         transform=self.choose_transform(profile, own, legacy), dim=config.projection_dim,
                         profile=profile)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        B, T = pixels.shape[:2]
        frames = self.model.get_image_features(pixel_values=pixels.flatten(0, 1))  # [B*T, D]
        return F.normalize(frames.float(), dim=-1).view(B, T, -1).mean(1)

    def _encode_text(self, texts):
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt").to(self.device)
        return self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
