"""LanguageBind video encoder (the paper's main short-video model), from the ``languagebind``
PyPI package's own config and model classes.

The package's ``__init__`` imports every modality's processor, which need ``cv2``,
``pytorchvideo`` and an old torchvision. The video config / model / tokenizer modules need
none of that, so the package (and ``languagebind.video``) are registered as bare namespace
modules and only those three modules are executed.

Input contract of LanguageBind-Video (its ``processing_video.py``): ``num_frames`` frames,
``x / 255``, OpenAI-CLIP mean / std, then the short side scaled to 224 in float32 (torch
bilinear, no antialiasing, pytorchvideo's floored ``ShortSideScale``) and a 224 centre crop
(``preprocessing.transforms.LanguageBindTransform``; 224 is every published checkpoint's
``image_size``, which we use). We drop its random horizontal flip: extraction must be
deterministic.

Both published checkpoint layouts load: ``clip_type`` "vl" (``Conv2d`` patch embedding, one
class embedding; e.g. ``LanguageBind_Video_FT``) and "vl_new" (``Conv3d`` patch embedding,
per-frame class embeddings; the V1.5 checkpoints such as the authors'
``LanguageBind_Video_Huge_V1.5_FT``), from safetensors or ``pytorch_model.bin``, with or
without LoRA (``lora_r`` > 0, e.g. ``LanguageBind_Video``). A checkpoint whose weights do not
all load into the model its config describes is refused, naming the missing weights.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from preprocessing.encoders import EncoderError
from preprocessing.encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, SegmentEncoder
from preprocessing.transforms import LanguageBindTransform, LegacyTransform


def import_languagebind_video():
    """``(LanguageBindVideoConfig, LanguageBindVideo, LanguageBindVideoTokenizer)`` without
    running ``languagebind/__init__.py``. Side effect: ``languagebind`` stays a bare package in
    ``sys.modules`` for this process (its top-level classes are not importable afterwards)."""
    for name in ("languagebind", "languagebind.video"):
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise EncoderError("--encoder languagebind needs the `languagebind` package (pip install languagebind==0.1.0)")
        module = types.ModuleType(name)
        module.__path__ = list(spec.submodule_search_locations)
        module.__spec__ = spec
        sys.modules[name] = module
    from languagebind.video.configuration_video import LanguageBindVideoConfig
    from languagebind.video.modeling_video import LanguageBindVideo
    from languagebind.video.tokenization_video import LanguageBindVideoTokenizer
    return LanguageBindVideoConfig, LanguageBindVideo, LanguageBindVideoTokenizer


class LanguageBindEncoder(SegmentEncoder):
    backend = "languagebind"

    def __init__(self, checkpoint: Path, device, dtype, frames_per_segment: int | None, profile):
        Config, Model, Tokenizer = import_languagebind_video()
        config = Config.from_pretrained(checkpoint)
        # The top-level class does not declare SDPA support; its CLIP attention layers (which
        # read the sub-configs) do, and they fail without an implementation set.
        config._attn_implementation = "eager"
        for sub in (config.text_config, config.vision_config):
            sub._attn_implementation = "sdpa"
        vision = config.vision_config
        if not getattr(vision, "add_time_attn", False):
            raise EncoderError(f"--checkpoint {checkpoint}: vision_config.add_time_attn is false; this is not "
                               "a LanguageBind *video* checkpoint")
        if frames_per_segment not in (None, vision.num_frames):
            raise EncoderError(f"--frames_per_segment {frames_per_segment}: {checkpoint} was trained with "
                               f"{vision.num_frames} frames per clip (its temporal attention is built for that many)")
        layout = f"(clip_type {getattr(vision, 'clip_type', 'vl')!r}, lora_r {vision.lora_r})"
        try:
            self.model, info = Model.from_pretrained(checkpoint, config=config, output_loading_info=True)
        except RuntimeError as e:  # a weight of another shape, e.g. Conv3d patches read as the "vl" layout
            reason = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:200])
            raise EncoderError(f"--checkpoint {checkpoint}: its weights do not fit the model its config.json "
                               f"describes {layout}: {reason}") from None
        missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
        if missing:
            raise EncoderError(f"--checkpoint {checkpoint}: {len(missing)} weights of the model its config.json "
                               f"describes {layout} are missing in its weights file, e.g. {missing[0]}")
        self.model.eval().requires_grad_(False).to(device=device, dtype=dtype)
        self.tokenizer = Tokenizer.from_pretrained(checkpoint)
        self.context_length = min(77, config.text_config.max_position_embeddings)
        own = LanguageBindTransform(vision.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        legacy = LegacyTransform(vision.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, crop="center",
                                 interpolation="bilinear")
        super().__init__(checkpoint, device, dtype, frames_per_segment=vision.num_frames,
                         transform=self.choose_transform(profile, own, legacy), dim=config.projection_dim,
                         profile=profile)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # LanguageBindVideo embeds a clip from [B, C, T, H, W]
        return self.model.get_image_features(pixel_values=pixels.permute(0, 2, 1, 3, 4))

    def _encode_text(self, texts):
        # As LanguageBindVideoProcessor: pad to the context length, truncate longer captions.
        tok = self.tokenizer(texts, max_length=self.context_length, padding="max_length", truncation=True,
                             return_tensors="pt").to(self.device)
        return self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
