"""Each encoder's transform (decode-worker half + device half) against the published
preprocessing it claims to be, on odd frame sizes: transformers' CLIPImageProcessor,
LanguageBind's own processing_video transform (minus its random flip), InternVideo2's demo.
References: tests/transform_references.py (nothing there calls our code)."""
import numpy as np
import pytest
import torch

import transform_references as ref
from preprocessing.transforms import (CLIPProcessorTransform, InternVideo2DemoTransform, LanguageBindTransform,
                                      LegacyTransform)

SIZES = [(854, 480), (426, 240), (480, 854), (1280, 720)]  # 854x480 and 426x240 differed by a pixel before


def ours(transform, frames) -> np.ndarray:
    """Worker half per frame, device half on the batch -> float32 [T, 3, S, S]."""
    prepared = np.stack([transform.prepare(f) for f in frames])
    assert prepared.dtype == np.dtype(transform.dtype) and prepared.shape[1:] == transform.shape
    return transform.finish(torch.from_numpy(prepared)[None])[0].numpy()


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    from transformers import CLIPImageProcessor
    configs = {"openai": {},  # clip-vit-base-patch32's preprocessor_config.json: 224 / 224, bicubic
               "resize_ne_crop": dict(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}),
               "pads": dict(size={"shortest_edge": 200}, crop_size={"height": 224, "width": 224}, resample=2)}
    out = {}
    for name, kw in configs.items():
        out[name] = tmp_path_factory.mktemp(name)
        CLIPImageProcessor(**kw).save_pretrained(out[name])
    return out


@pytest.mark.parametrize("config", ["openai", "resize_ne_crop", "pads"])
@pytest.mark.parametrize("size", SIZES)
def test_clip_transform_equals_clip_image_processor(clip_dirs, config, size):
    from transformers import CLIPImageProcessor
    from preprocessing.encoders.clip import processor_transform
    frames = ref.busy_frames(2, *size, seed=size[0])
    transform = processor_transform(clip_dirs[config], 224)
    expected = ref.clip_processor(frames, CLIPImageProcessor.from_pretrained(clip_dirs[config]))
    got = ours(transform, frames)
    assert got.shape == expected.shape == (2, 3, 224, 224)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("size", SIZES + [(1920, 1080), (240, 426)])
def test_languagebind_transform_equals_its_processor_without_the_flip(size):
    frames = ref.busy_frames(2, *size, seed=size[1])
    transform = LanguageBindTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD)
    assert transform.dtype == "float32"  # it normalises before resizing: the workers cannot ship uint8
    expected = ref.languagebind_video(frames)
    assert np.abs(ours(transform, frames) - expected).max() <= 1e-5


@pytest.mark.parametrize("size", [(854, 480), (426, 240), (1280, 720)])
def test_internvideo2_transform_equals_its_demo(size):
    frames = ref.busy_frames(2, *size, seed=1)
    transform = InternVideo2DemoTransform(224, tuple(ref.IMAGENET_MEAN.ravel()), tuple(ref.IMAGENET_STD.ravel()))
    assert np.abs(ours(transform, frames) - ref.internvideo2_demo(frames)).max() <= 1e-5


def test_the_legacy_transform_is_the_old_pil_resize():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, :10] = frame[:, -10:] = 255  # white side bars, 5 px after scaling, 10 px are cropped
    center = LegacyTransform(20, (0,) * 3, (1,) * 3, crop="center").prepare(frame)
    squash = LegacyTransform(20, (0,) * 3, (1,) * 3, crop="resize").prepare(frame)
    assert center.shape == squash.shape == (20, 20, 3)
    assert center.max() == 0  # the short side is scaled to 20, the bars are cropped away
    assert squash[:, 0].min() == 255 and squash[:, -1].min() == 255 and squash[:, 10].max() == 0
    # and it is not the processors' transform (which the hf profile uses): 854x480 differs
    frames = ref.busy_frames(1, 854, 480)
    legacy = ours(LegacyTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD), frames)
    clip = ours(CLIPProcessorTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD), frames)
    assert np.abs(legacy - clip).max() > 0.1


def test_transforms_pickle_and_record_themselves():
    import pickle
    t = CLIPProcessorTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD, crop_hw=(224, 224))
    assert pickle.loads(pickle.dumps(t)) == t  # sent to the decode workers
    m = t.manifest()
    assert (m["transform"], m["frame_size"], m["shortest_edge"], m["resample"]) == \
        ("clip-image-processor", 224, 224, "bicubic")
    assert LanguageBindTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD).manifest()["transform"] == "languagebind-video"
