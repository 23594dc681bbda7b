"""List, validate and combine embedding stores (the paper pre-trains on movies, FineVideo,
MovieClips and ActivityNet together: one store per dataset, one list file for ``--data_path``).

    python -m preprocessing.stores list stores/*            # counts, dims, encoders, failures
    python -m preprocessing.stores list stores/movies --failures
    python -m preprocessing.stores combine stores/movies stores/finevideo --out stores/pretrain.txt
    python main_pretrain.py --data_path stores/pretrain.txt ...

``list`` opens every store fully (manifest, every index, every shard header) and reports what
is wrong with the ones that do not open. ``combine`` refuses stores whose vectors are not
interchangeable (different ``encoder``, ``dim``, segment length, stride or profile) and writes the list
file (paths relative to it) only when all stores open together. A video recorded as failed and
later extracted successfully (``--retry_failed``) counts as extracted: the index wins.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from datasets.store import EmbeddingStore, StoreError, check_compatible, expand_data_paths
from util.cli import ArgumentParser, output_file, run_cli
from util.io import atomic_write_text


def describe(store: EmbeddingStore) -> tuple[dict, pd.DataFrame]:
    """One store's summary row and its failures (EmbeddingStore drops those extracted later)."""
    root = store.roots[0]
    failures = store.failures
    m = store.manifest
    row = {"store": str(root), "encoder": m["encoder"], "profile": m["profile"], "dim": m["dim"], "dtype": m["dtype"],
           "segment_s": m["segment_seconds"], "stride_s": m["stride_seconds"], "videos": len(store),
           "segments": int(store.lengths().sum()), "hours": round(store.summary()["hours"], 2),
           "failures": len(failures)}
    return row, failures.drop(columns="store").assign(store=str(root))


def list_stores(paths, show_failures: bool = False, as_json: bool = False) -> int:
    rows, failures, errors = [], [], []
    for root in expand_data_paths(paths):
        try:
            row, fail = describe(EmbeddingStore([root]))
        except StoreError as e:
            errors.append(f"{root}: {e}")
            continue
        rows.append(row)
        failures.append(fail)
    if as_json:
        print(json.dumps({"stores": rows, "errors": errors}, indent=2))
    else:
        if rows:
            print(pd.DataFrame(rows).to_string(index=False))
        for e in errors:
            print(f"INVALID {e}", file=sys.stderr)
        encoders = {(r["encoder"], r["dim"]) for r in rows}
        if len(encoders) > 1:
            print(f"note: these stores hold {len(encoders)} different encoders / dims and cannot be combined",
                  file=sys.stderr)
    if show_failures and failures:
        table = pd.concat(failures, ignore_index=True)
        if len(table):
            print(table[["store", "video_id", "source", "reason"]].to_string(index=False))
    return 1 if errors else 0


def combine(paths, out: Path) -> dict:
    """Validate ``paths`` together and write them to the list file ``out``."""
    roots = expand_data_paths(paths)
    stores = [EmbeddingStore([r]) for r in roots]  # each store must open on its own
    check_compatible([s.manifest for s in stores], [str(r) for r in roots])
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [os.path.relpath(r.resolve(), out.parent.resolve()) for r in roots]
    atomic_write_text(out, "# LV-MAE store list (python -m preprocessing.stores combine)\n" + "\n".join(lines) + "\n")
    summary = EmbeddingStore(out).summary()  # the list file opens as one dataset
    summary["stores"] = [str(r) for r in roots]
    return summary


def get_args_parser():
    p = argparse.ArgumentParser("List / combine embedding stores", add_help=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    ls = sub.add_parser("list", help="validate stores and print their counts, dims, encoders, failures")
    ls.add_argument("stores", nargs="+", help="store directories or .txt list files")
    ls.add_argument("--failures", action="store_true", help="also print every failed video with its reason")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    cb = sub.add_parser("combine", help="check that stores can be mixed and write a --data_path list file")
    cb.add_argument("stores", nargs="+", help="store directories or .txt list files")
    cb.add_argument("--out", required=True, type=output_file, help="list file to write (.txt)")
    return p


def main(argv=None) -> int:
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_stores(args.stores, args.failures, args.json)
    args.out = Path(args.out)
    if args.out.suffix != ".txt":
        raise SystemExit(f"--out {args.out}: a store list file must end in .txt (that is how --data_path tells it "
                         "from a store directory)")
    try:
        summary = combine(args.stores, args.out)
    except StoreError as e:
        raise SystemExit(f"not combined: {e}") from None
    print(f"wrote {args.out}: {len(summary['stores'])} stores, {summary['videos']} videos, "
          f"{summary['segments']} segments, {summary['hours']:.1f} h, encoder {summary['encoder']} ({summary['dim']}-d)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
