"""Write a tiny, randomly initialised model directory for any encoder backend.

For the README's worked example and the tests: the directory has the same files as a real
checkpoint of that backend (config, safetensors weights, tokenizer files, processor config or
remote code), so ``python -m preprocessing.extract --encoder <backend> --checkpoint DIR`` runs
the real loading and inference code, in seconds on a CPU. Its embeddings mean nothing.

    python -m preprocessing.make_tiny_encoder --backend clip --out tiny_clip
    python -m preprocessing.make_tiny_encoder --backend languagebind --out tiny_languagebind
    python -m preprocessing.make_tiny_encoder --backend languagebind --layout vl_new --out tiny_lb_v15
    python -m preprocessing.make_tiny_encoder --backend languagebind --lora_r 16 --out tiny_lb_lora
    python -m preprocessing.make_tiny_encoder --backend internvideo2 --out tiny_internvideo2

LanguageBind has two published layouts: ``--layout vl`` (``Conv2d`` patch embedding, one class
embedding, ``model.safetensors``; e.g. LanguageBind_Video_FT) and ``--layout vl_new``
(``Conv3d`` patch embedding, per-frame class embeddings, ``pytorch_model.bin``; the V1.5
checkpoints, e.g. the authors' LanguageBind_Video_Huge_V1.5_FT); ``--lora_r 16`` writes a LoRA
checkpoint like LanguageBind_Video (its LoRA weights random, so they change the output).

The tokenizers are byte-level BPE (CLIP / LanguageBind: every byte a token, no merges) and
WordPiece (InternVideo2's BERT: a few words), built offline.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from util.cli import ArgumentParser, output_dir, positive_int, run_cli

CODE_FILE = "modeling_tiny_internvideo2.py"


def write_clip_tokenizer(out: Path, tokenizer_cls=None) -> int:
    """Byte-level BPE files (vocab.json, merges.txt, tokenizer_config.json naming
    ``tokenizer_cls``, default ``CLIPTokenizer``); returns the vocab size.

    The special tokens get the highest ids, as in CLIP, because LanguageBind's text tower pools
    at ``input_ids.argmax()`` (the end-of-text token)."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (tokenizer_cls or CLIPTokenizer)(str(out / "vocab.json"), str(out / "merges.txt")).save_pretrained(out)
    return len(tokens)


def _tiny_clip_configs(vocab: int, dim: int, image_size: int) -> tuple[dict, dict]:
    text = dict(vocab_size=vocab, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, projection_dim=dim,
                bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=image_size // 2, projection_dim=dim)
    return text, vision


def make_clip(out: Path, dim: int, image_size: int, frames: int, **_) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    text, vision = _tiny_clip_configs(write_clip_tokenizer(out), dim, image_size)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)


LANGUAGEBIND_LAYOUTS = ("vl", "vl_new")


def make_languagebind(out: Path, dim: int, image_size: int, frames: int, layout: str = "vl",
                      lora_r: int = 0) -> None:
    from preprocessing.encoders.languagebind import import_languagebind_video
    if layout not in LANGUAGEBIND_LAYOUTS:
        raise ValueError(f"unknown --layout {layout!r}; choose from {', '.join(LANGUAGEBIND_LAYOUTS)}")
    Config, Model, Tokenizer = import_languagebind_video()
    text, vision = _tiny_clip_configs(write_clip_tokenizer(out, Tokenizer), dim, image_size)
    vision.update(add_time_attn=True, num_frames=frames, lora_r=lora_r, lora_alpha=16, lora_dropout=0.0,
                  clip_type=layout)
    config = Config(text_config=text, vision_config=vision, projection_dim=dim)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = "eager"
    model = Model(config)
    with torch.no_grad():  # peft starts lora_B at zero; random values make a lost LoRA weight visible
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    model.save_pretrained(out, safe_serialization=layout == "vl")


def make_internvideo2(out: Path, dim: int, image_size: int, frames: int, **_) -> None:
    from transformers import BertTokenizer
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "woman", "dog", "cat", "runs", "sits",
             "on", "the", "beach", "road", "in", "kitchen", "cooks", "food", "."]
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    shutil.copy(Path(__file__).with_name("tiny_internvideo2_code.py"), out / CODE_FILE)
    sys.path.insert(0, str(out))
    try:
        from modeling_tiny_internvideo2 import TinyInternVideo2Config, TinyInternVideo2Stage2
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("modeling_tiny_internvideo2", None)
    config = TinyInternVideo2Config(num_frames=frames, size_t=image_size, embed_dim=dim, vocab_size=len(words),
                                    patch=image_size // 4)
    config.auto_map = {"AutoConfig": f"{CODE_FILE[:-3]}.TinyInternVideo2Config",
                       "AutoModel": f"{CODE_FILE[:-3]}.TinyInternVideo2Stage2"}
    TinyInternVideo2Stage2(config).save_pretrained(out)


MAKERS = {"languagebind": make_languagebind, "clip": make_clip, "internvideo2": make_internvideo2}
BACKENDS = tuple(MAKERS)  # the same names as preprocessing.encoders.BACKENDS


def make_tiny_encoder(backend: str, out, dim: int = 32, image_size: int = 32, frames: int = 8,
                      seed: int = 0, layout: str = "vl", lora_r: int = 0) -> Path:
    """Write the tiny ``backend`` model to ``out`` (created; must not hold another model).
    ``layout`` / ``lora_r``: LanguageBind only."""
    if backend not in MAKERS:
        raise ValueError(f"unknown --backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "languagebind" and (layout != "vl" or lora_r):
        raise ValueError("--layout and --lora_r are LanguageBind's (--backend languagebind)")
    out = Path(out)
    if (out / "config.json").exists():
        raise FileExistsError(f"--out {out} already holds a model (config.json); choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    MAKERS[backend](out, dim, image_size, frames, layout=layout, lora_r=lora_r)
    return out


def get_args_parser():
    p = argparse.ArgumentParser("Write a tiny random encoder directory", add_help=False)
    p.add_argument("--backend", required=True, choices=BACKENDS, help="encoder backend to imitate")
    p.add_argument("--out", required=True, type=output_dir,
                   help="directory to create (its name becomes the encoder name)")
    p.add_argument("--dim", type=positive_int, default=32, help="embedding (projection) dim and hidden width")
    p.add_argument("--image_size", type=positive_int, default=32, help="input frame size (S x S)")
    p.add_argument("--frames", type=positive_int, default=8, help="frames per segment (LanguageBind / InternVideo2)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--layout", default="vl", choices=LANGUAGEBIND_LAYOUTS,
                   help="LanguageBind checkpoint layout: vl (Conv2d patches, safetensors) or vl_new (Conv3d patches, "
                        "per-frame class embeddings, pytorch_model.bin; the V1.5 checkpoints)")
    p.add_argument("--lora_r", type=int, default=0, help="LanguageBind LoRA rank (16 as LanguageBind_Video; 0: none)")
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    try:
        out = make_tiny_encoder(args.backend, args.out, args.dim, args.image_size, args.frames, args.seed,
                                args.layout, args.lora_r)
    except (ValueError, FileExistsError) as e:
        raise SystemExit(str(e)) from None
    print(f"wrote a tiny random {args.backend} encoder to {out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
