"""Export a pretrained LV-MAE in the Hugging Face Hub format: ``config.json`` + ``model.safetensors``
+ a ``README.md`` model card, loadable offline with ``LVMAE.from_pretrained(DIR)`` and by every
``--checkpoint`` of this project (probes, ``extract_features.py``, ``interpret.py``).

    python export_pretrained.py output/checkpoint-last.pth --out exported/lvmae-d32
    python -c "from models_lvmae import LVMAE; LVMAE.from_pretrained('exported/lvmae-d32')"

``config.json``: the model's constructor arguments (``model_config``, at the top level as the
Hub mixin expects them), ``objective`` ("mae" unless the checkpoint says otherwise), ``data``
(the short-video encoder, dim, normalization and preprocessing profile of the pretraining
stores: a store of another encoder is refused by every consumer), ``format_version`` (the
checkpoint key table's, README "Formats") and ``training`` (epoch and the run's arguments).
``model.safetensors``: the checkpoint's whole model state dict, every key (no pickle).
The model card lists the data, the recipe and the probe results found beside the checkpoint:
rows of ``results.csv`` files in the checkpoint's directory, its subdirectories and its parent's
subdirectories (e.g. ``demo_out/probe`` for ``demo_out/pretrain/checkpoint-last.pth``) whose
``checkpoint_sha256`` is this checkpoint's; ``--probe_results`` adds files or directories.

The directory is written under a temporary name, read back and compared with the checkpoint
tensor by tensor, then renamed into place: a killed or refused export leaves nothing under
``--out``. An existing export at ``--out`` is replaced; any other existing directory is refused.
Sharing, where there is network: ``hf upload USER/NAME DIR`` uploads the directory as it is
(``model.push_to_hub`` also works, with the mixin's generic model card instead of this one).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch

from util.checkpoint import CONFIG_FILE, MODEL_TYPE, checkpoint_digest, export_config, load_pretrained
from util.cli import ArgumentParser, UserError, run_cli
from util.probe_results import read_results

RECIPE_ARGS = ("model", "epochs", "batch_size", "accum_iter", "blr", "lr", "warmup_epochs", "weight_decay",
               "mask_ratio", "masking", "cos_loss", "loss_norm", "short_videos", "duration_min", "duration_max",
               "num_patches", "seed", "dataset", "data_path")
GROUP = ["dataset", "task", "probe", "backbone", "positions", "solver", "label_fraction", "metric"]


class ExportError(UserError, ValueError):
    """An export that cannot be written as asked; the message names the path."""


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE export (Hugging Face Hub format)", add_help=False)
    p.add_argument("checkpoint", help="a training checkpoint (checkpoint-*.pth) or an exported directory")
    p.add_argument("--out", required=True, help="the directory to write (config.json, model.safetensors, README.md)")
    p.add_argument("--probe_results", nargs="*", default=[],
                   help="more results.csv files (or directories holding one) to look for this checkpoint's rows in")
    p.add_argument("--name", default=None, help="title of the model card (default: the --out directory's name)")
    return p


# --- model card -----------------------------------------------------------------------------------
def find_probe_results(checkpoint: Path, extra: list[str], digest: str) -> pd.DataFrame:
    """Rows of every results.csv near ``checkpoint`` (or in ``extra``) scored with this checkpoint."""
    base = checkpoint if checkpoint.is_dir() else checkpoint.parent
    candidates = [base / "results.csv", *base.glob("*/results.csv"), *base.parent.glob("*/results.csv")]
    for e in map(Path, extra):
        if e.is_dir():
            e = e / "results.csv"
        if not e.is_file():
            raise ExportError(f"--probe_results {e} does not exist")
        candidates.append(e)
    frames = []
    for f in dict.fromkeys(p.resolve() for p in candidates if p.is_file()):
        df = read_results(f)
        df = df[df["checkpoint_sha256"].astype(str) == digest]
        if len(df):
            rel = os.path.relpath(f)
            frames.append(df.assign(source=f if rel.startswith("..") else rel))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def probe_table(rows: pd.DataFrame) -> str:
    if not len(rows):
        return ("No probe results of this checkpoint were found beside it (run `sweep_probes.py --checkpoint ...`, "
                "then export again).\n")
    rows = rows.astype({c: str for c in GROUP})
    lines = ["| dataset | task | probe | positions | solver | labels | metric | mean | 95% CI | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, g in rows.groupby(GROUP, sort=True):
        d = dict(zip(GROUP, key))
        lo, hi = pd.to_numeric(g["ci_low"], errors="coerce"), pd.to_numeric(g["ci_high"], errors="coerce")
        ci = f"[{lo.iloc[0]:.2f}, {hi.iloc[0]:.2f}]" if lo.notna().any() and hi.notna().any() else ""
        lines.append(f"| {d['dataset']} | {d['task']} | {d['probe']} | {d['positions'] or '-'} | {d['solver'] or '-'} "
                     f"| {d['label_fraction'] or '1.0'} | {d['metric']} | {g['value'].astype(float).mean():.2f} "
                     f"| {ci} | {g['seed'].nunique()} |")
    sources = ", ".join(f"`{s}`" for s in sorted(rows["source"].unique()))
    return "\n".join(lines) + f"\n\nFrom {sources} (rows whose checkpoint_sha256 is this checkpoint's).\n"


def model_card(name: str, cfg: dict, checkpoint: Path, run_config: dict | None, probes: pd.DataFrame) -> str:
    data, args, epoch = cfg["data"], cfg["training"]["args"], cfg["training"]["epoch"]
    arch = {k: v for k, v in cfg.items() if k not in ("data", "training", "model_type", "format_version")}
    store = (run_config or {}).get("data") or {}
    data_lines = [f"- segment embeddings of **{data['encoder']}** ({data['dim']}-d, "
                  f"{'stored L2-normalized' if data['normalized'] else 'L2-normalized on read'}, preprocessing "
                  f"profile `{data['profile']}`); a store of another encoder is refused"]
    if store:
        data_lines.append(f"- pretrained on {store.get('videos')} videos ({store.get('hours', 0):.1f} h, "
                          f"{store.get('segments')} segments) of {', '.join(map(str, store.get('stores', [])))}")
    elif args.get("data_path"):
        data_lines.append(f"- pretrained on {', '.join(map(str, args['data_path']))}")
    mix = (run_config or {}).get("mix")
    if mix:
        data_lines.append("- weighted mix: " + ", ".join(f"{s}: weight {m['weight']:g}, realized share "
                                                           f"{m['realized_share']:.3f}" for s, m in mix.items()))
    recipe = [f"- objective `{cfg['objective']}`; {epoch + 1 if isinstance(epoch, int) else '?'} of "
              f"{args.get('epochs', '?')} epochs trained"]
    flags = " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" if v is not True else f"--{k}"
                     for k, v in args.items() if k in RECIPE_ARGS and k not in ("data_path", "epochs")
                     and v is not None and v is not False)
    if flags:
        recipe.append(f"- pretraining flags: `{flags}`")
    return f"""---
library_name: lvmae
tags:
- lvmae
- long-video
- video
- model_hub_mixin
- pytorch_model_hub_mixin
---

# {name}

An LV-MAE long-video encoder (masked-embedding autoencoder over sequences of 5-second segment
embeddings; LV-MAE, ICCV 2025, code https://github.com/amazon-science/lv-mae), exported from
`{checkpoint}` (format version {cfg['format_version']}).

## Data

{chr(10).join(data_lines)}

## Recipe

{chr(10).join(recipe)}

Architecture (`config.json`):

```json
{json.dumps(arch, indent=1, sort_keys=True)}
```

## Probe results

{probe_table(probes)}
## Use

```python
from models_lvmae import LVMAE  # this repository
model = LVMAE.from_pretrained("{name}")  # a local directory, or a Hub repo id
tokens, pad = model.forward_features(x, lengths)  # x [B, L, {data['dim']}] segment embeddings
```

```
python extract_features.py --checkpoint DIR --data_path STORE --output_dir FEATURES
python extract_features.py --checkpoint DIR --videos VIDEOS/ --encoder ... --encoder_checkpoint ... --output_dir OUT
```
"""


# --- export ---------------------------------------------------------------------------------------
def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out: {out} is a file")
        cfg_file = out / CONFIG_FILE
        is_export = cfg_file.is_file() and _model_type(cfg_file) == MODEL_TYPE
        if any(out.iterdir()) and not is_export:
            raise ExportError(f"--out: {out} exists and is not an LV-MAE export; give a new directory")


def _model_type(path: Path):
    try:
        return json.loads(path.read_text()).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def _publish(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def export(checkpoint: str | Path, out: str | Path, probe_results=(), name: str | None = None) -> dict:
    checkpoint, out = Path(checkpoint), Path(out)
    _prepare_out(out)
    model, ckpt = load_pretrained(checkpoint)
    cfg = export_config({**ckpt, "model_config": dict(model.config)}, checkpoint)
    digest = checkpoint_digest(checkpoint)
    probes = find_probe_results(checkpoint, list(probe_results), digest)
    run_config_file = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / CONFIG_FILE
    run_config = None
    if not checkpoint.is_dir() and run_config_file.is_file():
        try:
            run_config = json.loads(run_config_file.read_text())
        except (ValueError, UnicodeDecodeError):
            run_config = None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, config=cfg)
        (tmp / "README.md").write_text(model_card(name or out.name, cfg, checkpoint, run_config, probes))
        back, _ = load_pretrained(tmp)  # what every consumer will do: it must give the same tensors
        mine, theirs = ckpt["model"], back.state_dict()
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine):
            raise ExportError(f"{tmp} does not read back as the weights of {checkpoint}")
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"out": str(out), "checkpoint": str(checkpoint), "sha256": digest, "objective": cfg["objective"],
               "encoder": cfg["data"]["encoder"], "tensors": len(ckpt["model"]),
               "parameters": int(sum(t.numel() for t in ckpt["model"].values())),
               "probe_rows": int(len(probes)), "files": sorted(p.name for p in out.iterdir())}
    print(f"exported {checkpoint} ({summary['tensors']} tensors, {summary['parameters'] / 1e6:.2f}M values, "
          f"objective {summary['objective']}, inputs {summary['encoder']}) to {out}: {', '.join(summary['files'])}; "
          f"{summary['probe_rows']} probe result rows in the model card")
    return summary


def main(argv=None) -> dict:
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    return export(args.checkpoint, args.out, args.probe_results, args.name)


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
