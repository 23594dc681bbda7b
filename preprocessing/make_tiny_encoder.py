"""Write a tiny, randomly initialised model directory for any encoder backend.

For the README's worked example and the tests: the directory has the same files as a real
checkpoint of that backend (config, safetensors weights, tokenizer files, processor config or
remote code), so ``python -m preprocessing.extract --encoder <backend> --checkpoint DIR`` runs
the real loading and inference code, in seconds on a CPU. Its embeddings mean nothing.

    python -m preprocessing.make_tiny_encoder --backend clip --out tiny_clip
    python -m preprocessing.make_tiny_encoder --backend languagebind --out tiny_languagebind
    python -m preprocessing.make_tiny_encoder --backend internvideo2 --out tiny_internvideo2

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


def make_clip(out: Path, dim: int, image_size: int, frames: int) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
    text, vision = _tiny_clip_configs(write_clip_tokenizer(out), dim, image_size)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)


def make_languagebind(out: Path, dim: int, image_size: int, frames: int) -> None:
    from preprocessing.encoders.languagebind import import_languagebind_video
    Config, Model, Tokenizer = import_languagebind_video()
    text, vision = _tiny_clip_configs(write_clip_tokenizer(out, Tokenizer), dim, image_size)
    vision.update(add_time_attn=True, num_frames=frames, lora_r=0)
    config = Config(text_config=text, vision_config=vision, projection_dim=dim)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = "eager"
    Model(config).save_pretrained(out)


def make_internvideo2(out: Path, dim: int, image_size: int, frames: int) -> None:
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
                      seed: int = 0) -> Path:
    """Write the tiny ``backend`` model to ``out`` (created; must not hold another model)."""
    if backend not in MAKERS:
        raise ValueError(f"unknown --backend {backend!r}; choose from {', '.join(BACKENDS)}")
    out = Path(out)
    if (out / "config.json").exists():
        raise FileExistsError(f"--out {out} already holds a model (config.json); choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    MAKERS[backend](out, dim, image_size, frames)
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
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    try:
        out = make_tiny_encoder(args.backend, args.out, args.dim, args.image_size, args.frames, args.seed)
    except (ValueError, FileExistsError) as e:
        raise SystemExit(str(e)) from None
    print(f"wrote a tiny random {args.backend} encoder to {out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
