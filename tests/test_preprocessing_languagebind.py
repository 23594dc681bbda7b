"""LanguageBind checkpoints in both published layouts ("vl": Conv2d patches, safetensors;
"vl_new": Conv3d patches and per-frame class embeddings, pytorch_model.bin, as the authors'
LanguageBind_Video_Huge_V1.5_FT) and with LoRA (r=16, as LanguageBind_Video): our encoder
equals the package's own model class on LanguageBind's own normalisation."""
import json
import os

import numpy as np
import pytest
import torch

import transform_references as ref
from preprocessing.encoders import EncoderError, build_encoder
from preprocessing.encoders.languagebind import import_languagebind_video
from preprocessing.make_tiny_encoder import make_tiny_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LAYOUTS = [("vl", 0, "model.safetensors"), ("vl_new", 0, "pytorch_model.bin"), ("vl", 16, "model.safetensors")]


def package_model(path):
    """The languagebind package's LanguageBindVideo, loaded by transformers as its README does."""
    Config, Model, _ = import_languagebind_video()
    config = Config.from_pretrained(path)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = "eager"
    return Model.from_pretrained(path, config=config).eval()


@pytest.mark.parametrize("layout, lora_r, weights", LAYOUTS)
def test_tiny_languagebind_in_each_published_layout(tmp_path, layout, lora_r, weights):
    path = make_tiny_encoder("languagebind", tmp_path / f"lb_{layout}_{lora_r}", dim=16, image_size=32,
                             layout=layout, lora_r=lora_r)
    assert (path / weights).is_file()
    vision = json.loads((path / "config.json").read_text())["vision_config"]
    assert (vision["clip_type"], vision["lora_r"]) == (layout, lora_r)
    model = package_model(path)
    embeddings = model.vision_model.embeddings
    if layout == "vl_new":
        assert isinstance(embeddings.patch_embedding, torch.nn.Conv3d) and embeddings.class_embedding.shape == (8, 16)
    else:
        assert isinstance(embeddings.patch_embedding, torch.nn.Conv2d) and embeddings.class_embedding.shape == (16,)

    # 32x32 frames: LanguageBind's short-side scale and crop to the model's 32 px are the identity,
    # so its pixels are x / 255 normalised by the OpenAI statistics
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).float() / 255.0
    pixels = ((x - torch.tensor(ref.OPENAI_MEAN)) / torch.tensor(ref.OPENAI_STD)).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels)
    encoder = build_encoder("languagebind", path)
    prepared = np.stack([[encoder.transform.prepare(f) for f in clip] for clip in frames])
    np.testing.assert_allclose(encoder.encode_video(prepared), expected, atol=1e-5)
    if lora_r:  # the LoRA weights are loaded and used
        lora = encoder.model.vision_model.encoder
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.state_dict().items())
        with torch.no_grad(), lora.disable_adapter():
            without = encoder.model.get_image_features(pixel_values=pixels)
        assert (without - expected).abs().max() > 1e-3


def test_a_checkpoint_that_does_not_fill_its_model_is_refused(tmp_path):
    path = make_tiny_encoder("languagebind", tmp_path / "lora", dim=16, image_size=32, lora_r=16)
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["lora_r"] = 0  # the weights are LoRA-wrapped, the config says they are not
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match=r"lora_r 0\) are missing in its weights file"):
        build_encoder("languagebind", path)
    path = make_tiny_encoder("languagebind", tmp_path / "v15", dim=16, image_size=32, layout="vl_new")
    config = json.loads((path / "config.json").read_text())
    del config["vision_config"]["clip_type"]  # Conv3d weights read as the "vl" layout
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="clip_type 'vl'"):
        build_encoder("languagebind", path)


def test_make_tiny_encoder_cli_writes_the_layouts(tmp_path):
    from preprocessing import make_tiny_encoder as cli
    cli.main(["--backend", "languagebind", "--layout", "vl_new", "--out", str(tmp_path / "v15"), "--dim", "16"])
    assert (tmp_path / "v15" / "pytorch_model.bin").is_file()
    with pytest.raises(SystemExit, match="LanguageBind's"):
        cli.main(["--backend", "clip", "--lora_r", "16", "--out", str(tmp_path / "clip")])
