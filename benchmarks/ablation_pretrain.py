r"""Pretraining ablation on the shipped synthetic corpus (issue "Validity II"; the paper's Tables 3-4
are ablations of the same kind): one factor at a time around the demo's recipe, each row
pretrained once (``--seed``) and probed with ``--probe_seeds`` seeds by

- the converged linear probe (``--solver lbfgs``: mean pool + Linear, standardized, weight decay
  chosen on validation) on ``grammar`` (top-1 %) and on ``pace`` (the regression head, MSE; the
  table also gives it as a fraction of the training mean's test MSE),
- the attentive probe with the probe's own [CLS] + sin-cos positions (``--probe_positions own``,
  Table 7's optimiser) on ``grammar``,

for LV-MAE and (once, as the ``raw`` row) the raw segment embeddings, each on validation and
test, with the wall time of the row's pretraining and probes beside it.

    python benchmarks/ablation_pretrain.py --out ablation            # every row, in the order listed
    python benchmarks/ablation_pretrain.py --out ablation --rows base input_scale=none window=segments
    python benchmarks/ablation_pretrain.py --out ablation --custom "best=--input_scale none --lr_schedule constant"
    python benchmarks/ablation_pretrain.py --out ablation --table     # only (re)write the table
    python benchmarks/ablation_pretrain.py --list                     # the rows and their flags

Rows are resumable: each row works in ``<out>/rows/<name>/`` (``pretrain/``, ``probe/``) and is
complete when its ``result.json`` exists; a complete row whose recipe is unchanged is skipped, an
interrupted one continues (pretraining from ``checkpoint-last.pth``, probes seed by seed). Several
processes may run disjoint ``--rows`` of one ``--out`` at once (the corpus is built first by
whichever starts first; start one alone until it prints ``corpus ready``). After every row,
``<out>/ablation.md`` and ``<out>/ablation.csv`` are rewritten from all complete rows.

Not part of ``make test`` or ``make demo``. Pretraining and probes run in this process through
``main_pretrain.main`` and ``engine_probe.main``; every flag of a row is a ``main_pretrain.py``
flag. ``--epochs`` scales every row alike (a cheaper ablation: say so when quoting it); a row's
own ``--epochs`` wins. Times are wall clock on whatever else the machine runs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import engine_probe  # noqa: E402
import main_pretrain  # noqa: E402
from datasets import synthetic  # noqa: E402
from util.cli import ArgumentParser, UserError, nonneg_int, output_dir, positive_int, run_cli  # noqa: E402
from util.io import atomic_write_text  # noqa: E402

# The demo's corpus (Makefile, target demo).
CORPUS_ARGS = ["--num_videos", "800", "--extra_videos", "1200", "--extra_fractions", "0", "0.25", "0.75"]
# The demo's recipe (Makefile, target demo) before this ablation: every row changes one factor
# (the last row, "chosen", is the recipe the ablation chose on validation and the demo now uses).
BASE_RECIPE = ["--model", "lvmae_tiny", "--epochs", "16", "--warmup_epochs", "2", "--blr", "6.4e-2",
               "--batch_size", "16", "--input_scale", "sqrt_dim", "--loss_norm", "epoch",
               "--window_sampling", "duration", "--mask_ratio", "0.5", "--masking", "random",
               "--lr_schedule", "cosine"]
# (name, factor, flags changed from BASE_RECIPE); the first rows are the factors most likely to
# matter (the prototype of the issue differs from the demo in these).
ROWS = [
    ("base", "demo recipe", []),
    ("input_scale=none", "input scale", ["--input_scale", "none"]),
    ("window=segments", "window sampling", ["--window_sampling", "segments"]),
    ("loss_norm=step", "loss normalization", ["--loss_norm", "step"]),
    ("loss_norm=authors", "loss normalization", ["--loss_norm", "authors"]),
    ("grouping=off", "length grouping", ["--no_group_by_length"]),
    ("mask_ratio=0.25", "mask ratio", ["--mask_ratio", "0.25"]),
    ("mask_ratio=0.75", "mask ratio", ["--mask_ratio", "0.75"]),
    ("schedule=constant", "lr schedule", ["--lr_schedule", "constant"]),
    ("blr=3.2e-2", "lr", ["--blr", "3.2e-2"]),
    ("blr=1.28e-1", "lr", ["--blr", "1.28e-1"]),
    ("epochs=8", "epochs", ["--epochs", "8", "--warmup_epochs", "1"]),
    ("epochs=32", "epochs", ["--epochs", "32", "--warmup_epochs", "4"]),
    ("masking=semantic", "masking", ["--masking", "semantic"]),
    ("decoder_depth=1", "decoder depth", ["--decoder_depth", "1"]),
    ("decoder_depth=4", "decoder depth", ["--decoder_depth", "4"]),
    ("width=input_dim", "encoder width", ["--embed_dim", "256"]),
    ("chosen", "chosen recipe (the demo's)", ["--input_scale", "none", "--blr", "1.6e-2"]),
]
RAW = "raw"
# (key, probe, task, extra engine_probe flags)
PROBES = [("lp_grammar", "lp", "grammar", ["--solver", "lbfgs"]),
          ("lp_pace", "lp", "pace", ["--solver", "lbfgs"]),
          ("ap_grammar", "ap", "grammar", ["--probe_positions", "own"])]
COLUMNS = ["row", "factor", "flags", "val_mse_lvmae", "lp_grammar_val", "ap_grammar_val", "lp_pace_val",
           "lp_grammar_test", "ap_grammar_test", "lp_pace_test", "pace_trivial_test", "lp_pace_test_ratio",
           "lp_grammar_test_std", "ap_grammar_test_std", "pretrain_s", "probe_s", "epochs"]


def get_args_parser():
    p = argparse.ArgumentParser("Pretraining ablation on the synthetic corpus", add_help=False)
    p.add_argument("--out", type=output_dir, default=None, help="working directory (rows/, corpus/, the table)")
    p.add_argument("--rows", nargs="+", default=None, metavar="NAME",
                   help=f"rows to run, in this order (default: all; '{RAW}' = the raw-embedding baseline)")
    p.add_argument("--custom", nargs="+", default=[], metavar="NAME=FLAGS",
                   help="extra rows: a name, '=', and main_pretrain.py flags changed from the demo recipe "
                        "(e.g. \"best=--input_scale none --window_sampling segments\")")
    p.add_argument("--corpus", default=None,
                   help="an existing synthetic corpus (built with the demo's flags; default: build <out>/corpus)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="pretraining epochs of every row (default: the demo's 16; a row's own --epochs wins)")
    p.add_argument("--seed", type=int, default=0, help="pretraining seed of every row")
    p.add_argument("--probe_seeds", type=positive_int, default=3, help="probe seeds 0..k-1")
    p.add_argument("--probes", nargs="+", default=[k for k, *_ in PROBES], choices=[k for k, *_ in PROBES],
                   help="probes of every row")
    p.add_argument("--num_threads", type=positive_int, default=None,
                   help="torch threads (default: OMP_NUM_THREADS or PyTorch's choice); results depend on it")
    p.add_argument("--keep_checkpoints", type=nonneg_int, default=1,
                   help="1 (default): keep each row's checkpoint-last.pth; 0: delete it once the row is complete")
    p.add_argument("--table", action="store_true", help="only rewrite the table from the complete rows")
    p.add_argument("--list", action="store_true", help="print the rows and their flags, then exit")
    return p


def all_rows(args) -> dict[str, tuple[str, list[str]]]:
    rows = {name: (factor, flags) for name, factor, flags in ROWS}
    for spec in args.custom:
        name, sep, flags = spec.partition("=")
        if not sep or not name or name in rows or name == RAW:
            raise UserError(f"--custom {spec!r}: need NAME=FLAGS with a new name")
        rows[name] = ("custom", shlex.split(flags))
    return rows


def recipe(flags: list[str], args) -> list[str]:
    """The row's main_pretrain.py flags: the demo recipe, --epochs of the ablation, the row's own."""
    base = list(BASE_RECIPE)
    if args.epochs is not None:
        i = base.index("--epochs")
        base[i + 1] = str(args.epochs)
    return base + ["--seed", str(args.seed)] + flags


def build_corpus(args) -> Path:
    if args.corpus:
        return Path(args.corpus)
    corpus = Path(args.out) / "corpus"
    done = corpus / "done.json"
    if not done.is_file():
        if corpus.exists():
            shutil.rmtree(corpus)
        synthetic.main(["--out", str(corpus), *CORPUS_ARGS])
        atomic_write_text(done, json.dumps({"args": CORPUS_ARGS}) + "\n")
    print(f"corpus ready: {corpus}", flush=True)
    return corpus


def probe(corpus: Path, out: Path, key: str, backbone: str, checkpoint: Path | None, args) -> dict:
    _, kind, task, extra = next(p for p in PROBES if p[0] == key)
    argv = ["--dataset", "synthetic", "--task", task, "--data_path", str(corpus / "benchmark"),
            "--annotations", str(corpus / "tasks"), "--backbone", backbone, "--seeds", str(args.probe_seeds),
            "--output_dir", str(out), "--resume", "auto", *extra]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    if args.num_threads:
        argv += ["--num_threads", str(args.num_threads)]
    results = engine_probe.main(argv, kind)
    metric = results[0]["metric"]
    test = [r["test"][metric] for r in results]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    std = (sum((t - mean(test)) ** 2 for t in test) / (len(test) - 1)) ** 0.5 if len(test) > 1 else 0.0
    return {"metric": metric, "val": mean([r["val"][metric] for r in results]), "test": mean(test), "test_std": std,
            "trivial_test": results[0].get("trivial_test"), "seeds": len(results)}


def run_row(name: str, factor: str, flags: list[str], corpus: Path, args) -> dict | None:
    row_dir = Path(args.out) / "rows" / name
    done = row_dir / "result.json"
    want = recipe(flags, args) if name != RAW else []
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("recipe") == want and all(k in saved["probes"] for k in args.probes):
            print(f"[{name}] complete, skipped", flush=True)
            return saved
        print(f"[{name}] recipe or probes changed: rerunning it", flush=True)
        done.unlink()
    row_dir.mkdir(parents=True, exist_ok=True)
    times_path = row_dir / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {"pretrain_s": 0.0, "probe_s": 0.0}
    checkpoint, pretrain = None, {}
    if name != RAW:
        t = time.time()
        pretrain = main_pretrain.main(["--data_path", str(corpus / "pretrain"), "--output_dir",
                                       str(row_dir / "pretrain"), "--dataset", f"ablation_{name}",
                                       "--num_workers", "0", "--keep_every", "0", "--no_progress", *want])
        times["pretrain_s"] += time.time() - t
        atomic_write_text(times_path, json.dumps(times) + "\n")
        checkpoint = Path(pretrain["checkpoint"])
    probes = {}
    for key in args.probes:
        t = time.time()
        probes[key] = probe(corpus, row_dir / "probe", key, "none" if name == RAW else "lvmae", checkpoint, args)
        times["probe_s"] += time.time() - t
        atomic_write_text(times_path, json.dumps(times) + "\n")
    result = {"row": name, "factor": factor, "flags": flags, "recipe": want, "probes": probes, **times,
              "epochs": pretrain.get("epochs"), "val_mse_lvmae": pretrain.get("val_mse_lvmae"),
              "val_mse_nearest_visible": pretrain.get("val_mse_nearest_visible"),
              "threads": args.num_threads or os.environ.get("OMP_NUM_THREADS")}
    atomic_write_text(done, json.dumps(result, indent=1) + "\n")
    if checkpoint is not None and not args.keep_checkpoints:
        checkpoint.unlink(missing_ok=True)
    return result


def table_rows(out: Path, order: list[str]) -> list[dict]:
    rows = []
    found = {p.parent.name: json.loads(p.read_text()) for p in (out / "rows").glob("*/result.json")}
    for name in [n for n in order if n in found] + sorted(set(found) - set(order)):
        r = found[name]
        row = {"row": name, "factor": r["factor"], "flags": " ".join(r["flags"]),
               "val_mse_lvmae": r.get("val_mse_lvmae"), "pretrain_s": round(r["pretrain_s"]),
               "probe_s": round(r["probe_s"]), "epochs": r.get("epochs")}
        for key, p in r["probes"].items():
            row[f"{key}_val"], row[f"{key}_test"], row[f"{key}_test_std"] = p["val"], p["test"], p["test_std"]
            if key == "lp_pace" and p.get("trivial_test"):
                row["pace_trivial_test"] = p["trivial_test"]
                row["lp_pace_test_ratio"] = p["test"] / p["trivial_test"]
        rows.append(row)
    return rows


def fmt(v, digits=1) -> str:
    return "–" if v is None or v == "" else f"{v:.{digits}f}"


def write_table(out: Path, order: list[str]) -> str:
    rows = table_rows(out, order)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ablation.csv", buf.getvalue())
    lines = ["| row | flags (vs the demo recipe) | recon. MSE (val) | LP grammar val | AP grammar val | "
             "pace MSE val | LP grammar test | AP grammar test | pace MSE test (/ train mean) | pretrain s | "
             "probes s |", "|" + "---|" * 11]
    for r in rows:
        ratio = f" ({r['lp_pace_test_ratio']:.2f})" if r.get("lp_pace_test_ratio") else ""
        lines.append(
            f"| {r['row']} | {r['flags'] or ('raw embeddings' if r['row'] == RAW else '')} | "
            f"{fmt(r.get('val_mse_lvmae'), 5)} | {fmt(r.get('lp_grammar_val'))} | {fmt(r.get('ap_grammar_val'))} | "
            f"{fmt(r.get('lp_pace_val'), 3)} | {fmt(r.get('lp_grammar_test'))} | "
            f"{fmt(r.get('ap_grammar_test'))} ± {fmt(r.get('ap_grammar_test_std'))} | "
            f"{fmt(r.get('lp_pace_test'), 3)}{ratio} | {r['pretrain_s']} | {r['probe_s']} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "ablation.md", text)
    return text


def main(argv=None) -> int:
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    rows = all_rows(args)
    if args.list:
        print(f"demo recipe: {' '.join(BASE_RECIPE)}")
        for name, (factor, flags) in rows.items():
            print(f"{name:22s} {factor:20s} {' '.join(flags)}")
        return 0
    if args.out is None:
        parser.error("--out is required")
    out = Path(args.out)
    order = [RAW] + list(rows)
    if args.table:
        print(write_table(out, order))
        return 0
    names = args.rows or order
    unknown = [n for n in names if n not in rows and n != RAW]
    if unknown:
        raise UserError(f"--rows {' '.join(unknown)}: unknown rows (see --list)")
    if args.num_threads:
        import torch
        torch.set_num_threads(args.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args)
    for name in names:
        factor, flags = rows.get(name, ("baseline", []))
        t = time.time()
        print(f"=== [{name}] {' '.join(flags)}", flush=True)
        run_row(name, factor, flags, corpus, args)
        print(f"=== [{name}] done in {time.time() - t:.0f} s", flush=True)
        print(write_table(out, order), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
