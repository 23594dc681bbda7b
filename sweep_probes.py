"""Every probe of a checkpoint: each task of each benchmark given × {AP, LP} × {LV-MAE, raw
baseline} × seeds, in this process (features are encoded once per split and cached), all into
one ``<output_dir>/results.csv``; then the paper's tables (``<output_dir>/tables.md``).

    python sweep_probes.py --checkpoint output/checkpoint-last.pth --output_dir output/probe --seeds 3 \\
        --lvu stores/lvu_languagebind \\
        --coin stores/coin_languagebind --coin_annotations annotations/COIN.json \\
        --breakfast stores/breakfast_languagebind --breakfast_annotations annotations/breakfast
    python sweep_probes.py --checkpoint demo_out/pretrain/checkpoint-last.pth --output_dir demo_out/probe \\
        --synthetic demo_out/corpus/benchmark --synthetic_annotations demo_out/corpus/tasks --seeds 3

The label-efficiency study (every run once per fraction of the training labels; the table
and ``<output_dir>/label_efficiency.png``):

    python sweep_probes.py --checkpoint demo_out/pretrain/checkpoint-last.pth --output_dir le \\
        --synthetic demo_out/corpus/benchmark --synthetic_annotations demo_out/corpus/tasks --seeds 3 \\
        --tasks grammar --probes ap --probe_positions own --label_fractions 0.05 0.1 0.25 1

Flags this script does not know are passed to every probe run (e.g. ``--num_threads 1``,
``--device cuda``, ``--epochs 5``, ``--probe_positions own``, ``--solver lbfgs``,
``--label_fraction 0.1``; no abbreviations). A rerun continues where an interrupted sweep stopped
(``--resume auto`` for every run; ``--no_resume`` retrains). A run that fails (e.g. a task with
no video in its store) is reported and the sweep goes on; the exit status is 1 if any failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import engine_probe
import reproduce_tables
from datasets.benchmarks import tasks_of
from datasets.labelled import AnnotationError
from util.cli import ArgumentParser, output_dir, positive_int, run_cli, unit_fraction
from util.io import atomic_write_text

BENCHMARKS = ("lvu", "coin", "breakfast", "synthetic")
TABLES_OF = {"lvu": ["1", "3", "4", "8"], "coin": ["2", "3", "4"], "breakfast": ["2", "3", "4"],
             "synthetic": ["synthetic"]}


def get_args_parser():
    p = argparse.ArgumentParser("Probe sweep over benchmarks, probes, backbones and seeds", add_help=False)
    p.add_argument("--checkpoint", required=True,
                   help="pretrained LV-MAE: a training checkpoint or an exported directory (export_pretrained.py)")
    p.add_argument("--output_dir", required=True, type=output_dir,
                   help="results.csv, runs/, cache/ and tables.md go here")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..k-1 per run")
    for name in BENCHMARKS:
        p.add_argument(f"--{name}", nargs="+", default=None, metavar="STORE",
                       help=f"embedding store(s) of {name} (skip the benchmark if not given)")
        p.add_argument(f"--{name}_annotations", default=None,
                       help=f"--annotations of the {name} runs" + (" (default: data/lvu_1.0)" if name == "lvu" else ""))
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: every task)")
    p.add_argument("--probes", nargs="+", default=["ap", "lp"], choices=["ap", "lp"], help="probes to run")
    p.add_argument("--backbones", nargs="+", default=["lvmae", "none"], choices=["lvmae", "none"],
                   help="lvmae: the checkpoint's encoder; none: the raw-embedding baseline")
    p.add_argument("--label_fractions", nargs="+", type=unit_fraction, default=None, metavar="F",
                   help="the label-efficiency study: every run once per fraction of the training labels (passed as "
                        "--label_fraction; e.g. 0.05 0.1 0.25 1); adds the label-efficiency table and "
                        "<output_dir>/label_efficiency.png")
    p.add_argument("--no_resume", action="store_true", help="retrain seeds whose results already exist")
    return p


def plan(args) -> list[tuple]:
    """(dataset, task, probe, backbone[, label fraction]) of every run, benchmarks in the order of
    BENCHMARKS."""
    runs, known = [], []
    for name in BENCHMARKS:
        if getattr(args, name) is None:
            continue
        for task in tasks_of(name, getattr(args, f"{name}_annotations")):
            known.append(task)
            if args.tasks and task not in args.tasks:
                continue
            runs += [(name, task, probe, backbone) + ((f"{f:g}",) if f is not None else ())
                     for backbone in args.backbones for probe in args.probes
                     for f in (args.label_fractions or [None])]
    unknown = [t for t in args.tasks or () if t not in known]
    if known and unknown:
        raise AnnotationError(f"--tasks {' '.join(unknown)}: unknown task{'s' if len(unknown) > 1 else ''} of the "
                              f"benchmarks given; they have: {' '.join(dict.fromkeys(known))}")
    return runs


def run_argv(args, dataset, task, probe, backbone, *fraction, extra=()) -> list[str]:
    argv = ["--dataset", dataset, "--task", task, "--backbone", backbone, "--data_path", *getattr(args, dataset),
            "--seeds", str(args.seeds), "--output_dir", args.output_dir]
    if fraction:
        argv += ["--label_fraction", fraction[0]]
    if backbone == "lvmae":
        argv += ["--checkpoint", args.checkpoint]
    if getattr(args, f"{dataset}_annotations"):
        argv += ["--annotations", getattr(args, f"{dataset}_annotations")]
    if not args.no_resume:
        argv += ["--resume", "auto"]
    return argv + list(extra)


def main(argv=None) -> int:
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args, extra = parser.parse_known_args(argv)
    runs = plan(args)
    if not runs:
        parser.error("nothing to run: give at least one of --lvu --coin --breakfast --synthetic (with its stores)")
    # Parse every run's flags before training anything, so a typo fails the sweep at once.
    parsed = [engine_probe.parse_args(run_argv(args, *r, extra=extra), r[2]) for r in runs]
    failures, t0 = [], time.time()
    for i, (r, run_args) in enumerate(zip(runs, parsed), 1):
        print(f"=== [{i}/{len(runs)}] {' '.join(r)}", flush=True)
        try:
            engine_probe.run(run_args)
        except engine_probe.USER_ERRORS as e:
            failures.append((r, str(e)))
            print(f"FAILED {' '.join(r)}: {e}", file=sys.stderr)
    results = Path(args.output_dir) / "results.csv"
    if results.is_file():
        tables = sorted({t for r in runs for t in TABLES_OF[r[0]]}
                        | ({"label_efficiency"} if args.label_fractions else set()), key=reproduce_tables.TABLES.index)
        df = reproduce_tables.load_results([results])
        text = reproduce_tables.render(df, tables)
        atomic_write_text(Path(args.output_dir) / "tables.md", text)
        print(text)
        if args.label_fractions and reproduce_tables.plot_label_efficiency(df, Path(args.output_dir) /
                                                                           "label_efficiency.png"):
            print(f"label-efficiency plot: {Path(args.output_dir) / 'label_efficiency.png'}")
    print(f"{len(runs) - len(failures)}/{len(runs)} runs done in {time.time() - t0:.0f} s; results in {results}")
    for r, msg in failures:
        print(f"  failed: {' '.join(r)}: {msg}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
