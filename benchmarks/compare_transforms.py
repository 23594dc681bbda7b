"""Pixel differences (after normalisation) between each encoder's transform and the published
preprocessing it should equal: ``legacy`` (the PIL resize every encoder got before profiles, what
stores without a ``profile`` key hold) and ``hf`` (``preprocessing.transforms``, the default)
against transformers' ``CLIPImageProcessor``, LanguageBind's own ``processing_video`` transform
(minus its random flip) and InternVideo2's demo ``frames2tensor`` (tests/transform_references.py).

Frames are generated (no real videos here): ``busy`` = gradients, hard edges and pixel noise;
``blocks`` = the 8x8 colour-block texture of the generated test videos; ``smooth`` = a few
low-frequency colour waves (closest to camera footage). Deterministic; prints
a table and one JSON line.

    python benchmarks/compare_transforms.py [--sizes 854x480 426x240 1280x720 1920x1080] [--frames 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
import transform_references as ref  # noqa: E402
from preprocessing.synthetic_videos import _frame, parse_size  # noqa: E402
from preprocessing.transforms import (CLIPProcessorTransform, InternVideo2DemoTransform,  # noqa: E402
                                      LanguageBindTransform, LegacyTransform)

IMAGENET = (tuple(ref.IMAGENET_MEAN.ravel()), tuple(ref.IMAGENET_STD.ravel()))
OPENAI = (ref.OPENAI_MEAN, ref.OPENAI_STD)


def block_frames(n, w, h):
    blocks = np.random.default_rng(0).integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    texture = np.ascontiguousarray(blocks.repeat(8, 0).repeat(8, 1)[:h, :w])
    return np.stack([_frame(k * 7, w, h, texture) for k in range(n)])


def smooth_frames(n, w, h):
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    waves = [127 + 60 * np.sin(2 * np.pi * (3 + k) * x + c) + 50 * np.cos(2 * np.pi * (2 + c) * y - k)
             for k in range(n) for c in range(3)]
    return np.clip(np.stack(waves, -1).reshape(h, w, n, 3).transpose(2, 0, 1, 3), 0, 255).astype(np.uint8)


def apply(transform, frames) -> np.ndarray:
    prepared = torch.from_numpy(np.stack([transform.prepare(f) for f in frames]))[None]
    return transform.finish(prepared)[0].numpy()


def encoders():
    from transformers import CLIPImageProcessor
    processor = CLIPImageProcessor()  # openai/clip-vit-base-patch32's settings: 224 / 224, bicubic
    return {
        "clip": (lambda f: ref.clip_processor(f, processor),
                 {"legacy": LegacyTransform(224, *OPENAI, crop="center", interpolation="bicubic"),
                  "hf": CLIPProcessorTransform(224, *OPENAI)}),
        "languagebind": (ref.languagebind_video,
                         {"legacy": LegacyTransform(224, *OPENAI, crop="center", interpolation="bilinear"),
                          "hf": LanguageBindTransform(224, *OPENAI)}),
        "internvideo2": (ref.internvideo2_demo,
                         {"legacy": LegacyTransform(224, *IMAGENET, crop="resize", interpolation="bilinear"),
                          "hf": InternVideo2DemoTransform(224, *IMAGENET)}),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(854, 480), (426, 240), (1280, 720), (1920, 1080)])
    p.add_argument("--frames", type=int, default=2, help="frames per size and content")
    args = p.parse_args(argv)
    rows = []
    for name, (reference, transforms) in encoders().items():
        for w, h in args.sizes:
            contents = {"busy": ref.busy_frames(args.frames, w, h), "blocks": block_frames(args.frames, w, h),
                        "smooth": smooth_frames(args.frames, w, h)}
            for content, frames in contents.items():
                expected = reference(frames)
                for profile, transform in transforms.items():
                    d = np.abs(apply(transform, frames) - expected)
                    rows.append({"encoder": name, "size": f"{w}x{h}", "content": content, "profile": profile,
                                 "mean_abs": float(f"{d.mean():.3g}"), "max_abs": float(f"{d.max():.3g}")})
    print("| encoder | frames | content | legacy mean / max | hf mean / max |")
    print("|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"| {a['encoder']} | {a['size']} | {a['content']} | {a['mean_abs']:.3g} / {a['max_abs']:.3g} | "
              f"{b['mean_abs']:.3g} / {b['max_abs']:.3g} |")
    print(json.dumps({"bench": "compare_transforms", "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
