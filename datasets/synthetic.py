"""Synthetic long-video embedding corpus with planted long-range structure.

Generative process (all randomness from ``--seed``):

1. **Scenes.** ``K`` unit prototype vectors ``p_k`` in R^D (random Gaussian directions, or
   given from outside with ``--prototypes``, e.g. a text tower's embeddings of
   ``--scene_captions``). ``d_min`` = the smallest distance between two prototypes; every noise
   scale below is a fraction of ``d_min``, so scenes stay separable whatever the geometry.
2. **Grammars.** ``C`` random cyclic permutations ``sigma_c`` of the K scenes (single K-cycles):
   "after scene k comes scene sigma_c(k)". They come in inverse pairs (``sigma_{c + C/2} =
   sigma_c^-1``): a pair visits the same sets of scenes in opposite orders.
3. **A video** has latents: grammar ``c`` (uniform), style ``s`` (uniform over ``S``), pace
   ``tau ~ U[1.5, 6]`` (mean shot length in segments). Its length comes from the shipped LVU
   durations (``n = duration // 5`` segments, at least 1), or for "movies" U[20 min, 2 h].
   Shots of ``1 + Poisson(tau - 1)`` segments follow each other; the first shot's scene is
   uniform, each next shot's scene is ``sigma_c`` of the previous one.
4. **Segment embedding**: ``e_t = normalize(p_scene(t) + style_s + drift_t + noise_t)`` with a
   per-style offset (norm ``style * d_min``), a slow per-video AR(1) drift (rho 0.98, norm
   ``drift * d_min``), and i.i.d. Gaussian noise (norm ``noise * d_min``).

Why it tests long-range modelling: under every grammar each scene is equally likely at every
position (uniform start, cyclic walk), so the class-conditional *mean* of a mean-pooled video is
identical for all grammars and a mean-pool linear probe stays near chance on ``grammar``. Any
order-blind statistic (a bag of segments, scene co-occurrences) cannot tell a grammar from its
inverse, so it is capped at 50% for even ``C``; the order of scenes identifies the grammar
exactly (a bigram statistic is far above chance), and reconstructing a masked shot requires
inferring the grammar from the other transitions of the video. ``pace`` is
also invisible to a mean (only the rate of scene changes tells it). ``style`` is the control a
mean pool solves.

**Texts** (for the contrastive objective and the retrieval / QA evaluations; docs/contrastive.md).
A video's *description* names the scenes of its first ``DESCRIPTION_SHOTS`` (3) shots in order,
by their short scene names: ``"beach, then car chase, then hospital"`` (fewer for a video of
fewer shots). Under a grammar's cycle the order of the scenes identifies the grammar and its
direction, so an order-blind model cannot tell a description from the one of the same scenes in
another order. Its *order question* (videos of at least 3 shots) offers the true description
and ``ORDER_OPTIONS - 1`` descriptions of the same scenes in other orders, drawn, with the
options' order, from a random stream of their own ``(seed, 2)``: the texts use no draw of the
other streams, so every other output is byte for byte what it is without them. Scene names are
built in for the built-in captions; with ``--scene_captions`` a scene's name is its caption.
A short name keeps a description well under every tower's text length (the tiny CLIP of
``preprocessing.make_tiny_encoder`` spends one token per character: ~40 of its 77 tokens).

``--extra_videos N`` adds N labelled videos of the same process drawn from their own random
stream ``(seed, 1)`` after everything else, split by ``--extra_fractions``, so the rest of the
output (pretraining store, the first ``--num_videos`` videos and their splits) is byte for byte
what the same flags write without it: the labelled set grows (e.g. for tighter test
statistics) without touching the pretraining corpus or the difficulty.

Outputs in ``--out``:
  ``pretrain/``  store of unlabelled videos + long movies (for ``main_pretrain.py``)
  ``benchmark/`` store of labelled videos (for the probes)
  ``tasks/tasks.json``, ``tasks/<task>/{train,val,test}.csv`` (``video_id,label``)
  ``captions.csv`` (``video_id,segment,caption``: the scene caption of every segment of both stores)
  ``texts.csv`` (``video_id,text``: the description of every video of both stores)
  ``order_questions.csv`` (``video_id,question_id,option,text,correct``: one row per option of
  each benchmark video's order question; ``question_id`` = ``<video_id>-order``, ``option``
  0-based, ``correct`` 1 for the true description and 0 otherwise, one correct row per question)
  ``prototypes.npy``, ``grammars.npy`` (successor table ``[C, K]``), ``scene_captions.txt``,
  ``latents.csv`` (every video's latents, for analysis).

    python -m datasets.synthetic --out data/synthetic
    # in a video-text encoder's space (prototypes = its text tower's caption embeddings):
    python -m datasets.synthetic --out data/synthetic_clip --text_encoder clip --text_checkpoint DIR
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from datasets.store import StoreWriter, make_manifest
from util.cli import ArgumentParser, nonneg_float, nonneg_int, output_dir, positive_float, positive_int, run_cli
from util.io import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DURATIONS = REPO / "data" / "lvu_1.0" / "lvu_durations.csv"
PACE_RANGE = (1.5, 6.0)
MOVIE_SECONDS = (20 * 60, 2 * 3600)
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)

SCENE_CAPTIONS = [
    "a man walks along a sandy beach at sunset", "two people argue in a small kitchen",
    "a car chase through a crowded city street", "a woman reads a letter by the window",
    "soldiers run across a muddy battlefield", "a family eats dinner at a long table",
    "a detective examines evidence in an office", "children play football in a park",
    "a couple dances in a ballroom", "a spaceship flies past a planet",
    "a horse gallops across an open plain", "a crowd cheers in a stadium",
    "a doctor talks to a patient in a hospital", "a boat sails on a stormy sea",
    "a man plays piano in a dark bar", "a police officer interrogates a suspect",
    "a woman runs through a forest at night", "friends laugh around a campfire",
    "a teacher writes on a blackboard", "an explosion lights up a warehouse",
    "a chef cooks in a busy restaurant kitchen", "a train crosses a snowy mountain pass",
    "two men fight on a rooftop", "a girl rides a bicycle down a quiet street",
    "a lawyer speaks in a courtroom", "a band performs on a concert stage",
    "an old man feeds pigeons in a square", "a couple kisses in the rain",
    "a scientist works in a laboratory", "a cowboy rides into a desert town",
    "people dance at a crowded party", "a plane lands on a runway at dawn",
]
# Short names of the built-in scenes, for the descriptions (same order as SCENE_CAPTIONS).
SCENE_NAMES = [
    "beach", "kitchen quarrel", "car chase", "letter", "battlefield", "family dinner", "detective",
    "football", "ballroom", "spaceship", "horse", "stadium", "hospital", "stormy sea", "piano bar",
    "interrogation", "night forest", "campfire", "blackboard", "explosion", "restaurant", "snowy train",
    "rooftop fight", "bicycle", "courtroom", "concert", "pigeons", "rain kiss", "laboratory", "desert town",
    "party", "runway",
]
DESCRIPTION_SHOTS = 3
ORDER_OPTIONS = 5  # the true description + 4 other orders (3 shots: 5 other orders exist)
TEXT_STREAM = 2    # np.random.default_rng([seed, TEXT_STREAM]): the order questions' own stream


def shot_scenes(scenes: np.ndarray) -> np.ndarray:
    """Scene of each shot, in order (consecutive shots never share a scene under a K-cycle, K >= 3)."""
    change = np.flatnonzero(np.diff(scenes)) + 1
    return scenes[np.concatenate([[0], change])]


def describe(names: list[str]) -> str:
    """``"beach, then car chase, then hospital"``."""
    return ", then ".join(names)


def order_question(rng: np.random.Generator, names: list[str]) -> list[tuple[str, int]]:
    """``[(text, correct)]``: the true order and ``ORDER_OPTIONS - 1`` other orders of ``names``
    (distinct texts), shuffled by ``rng``."""
    from itertools import permutations
    true = describe(names)
    others = sorted({describe(list(p)) for p in permutations(names)} - {true})
    pick = [others[i] for i in rng.permutation(len(others))[:ORDER_OPTIONS - 1]]
    options = [(true, 1)] + [(t, 0) for t in pick]
    return [options[i] for i in rng.permutation(len(options))]


def get_args_parser():
    p = argparse.ArgumentParser("Synthetic long-video embedding corpus", add_help=False)
    p.add_argument("--out", required=True, type=output_dir,
                   help="output directory (must not exist or be empty, unless --overwrite)")
    p.add_argument("--num_videos", type=positive_int, default=2000, help="labelled benchmark videos (LVU-like lengths)")
    p.add_argument("--extra_videos", type=nonneg_int, default=0,
                   help="grow the labelled set by this many videos of the same process, drawn from their own random "
                        "stream (seed, 1) after everything else: the corpus of the other flags stays byte for byte "
                        "what it is without this flag (pretraining store, first --num_videos videos, their splits); "
                        "the extra videos are split by --extra_fractions on their own and appended")
    p.add_argument("--extra_fractions", type=nonneg_float, nargs=3, default=list(SPLIT_FRACTIONS),
                   metavar=("TRAIN", "VAL", "TEST"),
                   help="train / val / test fractions of the --extra_videos (e.g. 0 0.25 0.75: tighter validation "
                        "and test statistics, the training split and so the probes' cost unchanged)")
    p.add_argument("--num_pretrain", type=nonneg_int, default=2000,
                   help="unlabelled pretraining videos (LVU-like lengths)")
    p.add_argument("--num_movies", type=nonneg_int, default=40,
                   help="long unlabelled 'movies' (20 min - 2 h) for pretraining")
    p.add_argument("--dim", type=positive_int, default=256, help="embedding dim D (ignored with --prototypes)")
    p.add_argument("--num_scenes", type=positive_int, default=32, help="scene prototypes K (ignored with --prototypes)")
    p.add_argument("--num_grammars", type=positive_int, default=4, help="classes of the 'grammar' task")
    p.add_argument("--num_styles", type=positive_int, default=4, help="classes of the 'style' task")
    p.add_argument("--noise", type=nonneg_float, default=0.25, help="per-segment noise norm, as a fraction of d_min")
    p.add_argument("--drift", type=nonneg_float, default=0.15, help="slow drift norm, as a fraction of d_min")
    p.add_argument("--style", type=nonneg_float, default=0.25, help="style offset norm, as a fraction of d_min")
    p.add_argument("--segment_seconds", type=positive_float, default=5.0,
                   help="seconds per segment (recorded in the manifest)")
    p.add_argument("--durations", default=str(DEFAULT_DURATIONS),
                   help="CSV with a 'duration' column (seconds) to draw video lengths from")
    p.add_argument("--prototypes", default=None,
                   help="optional .npy [K, D] scene prototypes (e.g. a text tower's caption embeddings)")
    p.add_argument("--scene_captions", default=None,
                   help="optional text file, one caption per scene (K lines; required with --prototypes)")
    p.add_argument("--text_encoder", default=None, choices=["languagebind", "clip", "internvideo2"],
                   help="build the prototypes from this backend's text tower: the embeddings of the scene "
                        "captions (--scene_captions, or the built-in ones); the store then lives in that "
                        "encoder's video-text space and its manifest names the encoder")
    p.add_argument("--text_checkpoint", default=None, help="local model directory of --text_encoder")
    p.add_argument("--encoder_name", default=None,
                   help="the manifest's encoder string (default 'synthetic:seed<seed>', or the --text_encoder's "
                        "'<backend>:<name>'); use the text tower's name when --prototypes come from it")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def _read_captions(path) -> list[str]:
    return [c.strip() for c in Path(path).read_text().splitlines() if c.strip()]


def min_distance(protos: np.ndarray) -> float:
    sq = (protos ** 2).sum(1)
    d2 = sq[:, None] + sq[None] - 2 * protos @ protos.T
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(max(d2.min(), 0.0)))


def random_cycles(rng: np.random.Generator, num: int, k: int) -> np.ndarray:
    """``[num, k]`` successor tables of random single k-cycles in inverse pairs: grammar
    ``c + num // 2`` walks grammar ``c``'s cycle backwards, so the two visit the same sets of
    scenes and only the order of the scenes tells them apart (an odd ``num`` leaves the last
    grammar unpaired)."""
    half = num - num // 2
    out, seen = [], set()
    while len(out) < half:
        order = rng.permutation(k)
        succ = np.empty(k, dtype=np.int64)
        succ[order] = np.roll(order, -1)
        inv = np.argsort(succ)
        if tuple(succ) not in seen and tuple(inv) not in seen:
            seen.update({tuple(succ), tuple(inv)})
            out.append(succ)
    out += [np.argsort(succ) for succ in out[:num // 2]]
    return np.stack(out)


class Generator:
    """The generative process above; ``video(rng, n, grammar, style, pace)`` -> (embeddings, scenes)."""

    def __init__(self, protos: np.ndarray, grammars: np.ndarray, num_styles: int, noise: float, drift: float,
                 style: float, rng: np.random.Generator):
        self.protos = protos / np.linalg.norm(protos, axis=1, keepdims=True)
        self.K, self.D = self.protos.shape
        self.grammars = grammars
        self.d_min = min_distance(self.protos)
        self.noise_std = noise * self.d_min / np.sqrt(self.D)
        self.drift_std = drift * self.d_min / np.sqrt(self.D)
        styles = rng.standard_normal((num_styles, self.D))
        self.styles = style * self.d_min * styles / np.linalg.norm(styles, axis=1, keepdims=True)

    def scenes(self, rng, n: int, grammar: int, pace: float) -> np.ndarray:
        """Scene index of each of ``n`` segments."""
        lengths = 1 + rng.poisson(pace - 1.0, size=n)  # at most n shots are needed
        num_shots = int(np.searchsorted(np.cumsum(lengths), n) + 1)
        shot_scene = np.empty(num_shots, dtype=np.int64)
        shot_scene[0] = rng.integers(self.K)
        succ = self.grammars[grammar]
        for j in range(1, num_shots):
            shot_scene[j] = succ[shot_scene[j - 1]]
        return np.repeat(shot_scene, lengths[:num_shots])[:n]

    def video(self, rng, n: int, grammar: int, style: int, pace: float):
        scenes = self.scenes(rng, n, grammar, pace)
        rho = 0.98
        eta = rng.standard_normal((n, self.D)) * self.drift_std
        drift = np.empty_like(eta)
        drift[0] = eta[0]
        for t in range(1, n):  # AR(1) with stationary std = drift_std
            drift[t] = rho * drift[t - 1] + np.sqrt(1 - rho ** 2) * eta[t]
        x = self.protos[scenes] + self.styles[style] + drift + rng.standard_normal((n, self.D)) * self.noise_std
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), scenes


def build(args) -> dict:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"--out {out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    rng = np.random.default_rng(args.seed)

    if args.text_encoder:
        if args.prototypes or not args.text_checkpoint:
            raise SystemExit("--text_encoder needs --text_checkpoint and excludes --prototypes")
        from preprocessing.encoders import build_encoder
        tower = build_encoder(args.text_encoder, args.text_checkpoint)
        captions = _read_captions(args.scene_captions) if args.scene_captions else SCENE_CAPTIONS[:args.num_scenes]
        protos = tower.encode_text(captions).double().numpy()
        args.encoder_name = args.encoder_name or tower.name
    elif args.prototypes:
        protos = np.load(args.prototypes, allow_pickle=False).astype(np.float64)
        if protos.ndim != 2 or protos.shape[0] < 3:
            raise SystemExit(f"--prototypes {args.prototypes}: expected [K >= 3, D], got {protos.shape}")
        if not args.scene_captions:
            raise SystemExit("--prototypes needs --scene_captions (one caption per prototype)")
    else:
        protos = rng.standard_normal((args.num_scenes, args.dim))
    if args.scene_captions:
        captions = _read_captions(args.scene_captions)
    else:
        captions = [SCENE_CAPTIONS[k % len(SCENE_CAPTIONS)] + ("" if k < len(SCENE_CAPTIONS) else f" (variant {k // len(SCENE_CAPTIONS)})")
                    for k in range(len(protos))]
    if len(captions) != len(protos):
        raise SystemExit(f"--scene_captions has {len(captions)} captions for {len(protos)} prototypes")
    names = captions if args.scene_captions else \
        [SCENE_NAMES[k % len(SCENE_NAMES)] + ("" if k < len(SCENE_NAMES) else f" {k // len(SCENE_NAMES) + 1}")
         for k in range(len(protos))]
    if min_distance(protos / np.linalg.norm(protos, axis=1, keepdims=True)) < 1e-6:
        raise SystemExit("two scene prototypes coincide; the scenes would be indistinguishable")
    K, D = protos.shape
    if K < 3 or math.factorial(K - 1) // 2 < args.num_grammars - args.num_grammars // 2:
        raise SystemExit(f"{K} scenes (--num_scenes) make {math.factorial(K - 1) // 2 if K >= 3 else 0} pairs of "
                         f"scene cycles, fewer than --num_grammars {args.num_grammars} needs")
    grammars = random_cycles(rng, args.num_grammars, K)
    gen = Generator(protos, grammars, args.num_styles, args.noise, args.drift, args.style, rng)

    durations = pd.read_csv(args.durations)["duration"].to_numpy(dtype=np.float64)
    seg = args.segment_seconds

    def draw(num, movie):
        d = rng.uniform(*MOVIE_SECONDS, size=num) if movie else rng.choice(durations, size=num)
        return d, np.maximum(1, (d // seg).astype(np.int64))

    rows = []
    for kind, num, movie in (("benchmark", args.num_videos, False), ("pretrain", args.num_pretrain, False),
                             ("movie", args.num_movies, True)):
        dur, n = draw(num, movie)
        for i in range(num):
            rows.append({"video_id": f"{'syn' if kind == 'benchmark' else kind[:3]}{i:06d}", "kind": kind,
                         "duration_s": float(dur[i]), "num_segments": int(n[i]),
                         "grammar": int(rng.integers(args.num_grammars)), "style": int(rng.integers(args.num_styles)),
                         "pace": float(rng.uniform(*PACE_RANGE))})
    latents = pd.DataFrame(rows)
    if args.extra_videos < 0:
        raise SystemExit(f"--extra_videos must be >= 0, got {args.extra_videos}")
    if min(args.extra_fractions) < 0 or abs(sum(args.extra_fractions) - 1) > 1e-9:
        raise SystemExit(f"--extra_fractions must be >= 0 and sum to 1, got {args.extra_fractions}")
    xrng = np.random.default_rng([args.seed, 1])  # the extra labelled videos' own stream
    xdur = xrng.choice(durations, size=args.extra_videos)
    xlen = np.maximum(1, (xdur // seg).astype(np.int64))
    extra = pd.DataFrame([{"video_id": f"syn{args.num_videos + i:06d}", "kind": "benchmark",
                           "duration_s": float(xdur[i]), "num_segments": int(xlen[i]),
                           "grammar": int(xrng.integers(args.num_grammars)),
                           "style": int(xrng.integers(args.num_styles)), "pace": float(xrng.uniform(*PACE_RANGE))}
                          for i in range(args.extra_videos)], columns=latents.columns)
    encoder = args.encoder_name or f"synthetic:seed{args.seed}"
    manifest = make_manifest(encoder, D, dtype="float16", segment_seconds=seg, frames_per_segment=0,
                             normalized=True, generator="datasets.synthetic", seed=args.seed)
    writers = {"benchmark": StoreWriter(out / "benchmark", "synthetic", manifest),
               "pretrain": StoreWriter(out / "pretrain", "synthetic", manifest)}
    caption_rows, text_rows, question_rows = [], [], []
    trng = np.random.default_rng([args.seed, TEXT_STREAM])  # the order questions' own stream
    videos = [(r, rng) for r in latents.itertuples(index=False)] + [(r, xrng) for r in extra.itertuples(index=False)]
    for r, stream in tqdm(videos, desc="synthetic videos", unit="video", disable=None):
        x, scenes = gen.video(stream, r.num_segments, r.grammar, r.style, r.pace)
        writer = writers["benchmark" if r.kind == "benchmark" else "pretrain"]
        writer.add(r.video_id, x, r.duration_s, source=f"synthetic://{r.kind}/{r.video_id}")
        caption_rows.append(pd.DataFrame({"video_id": r.video_id, "segment": np.arange(r.num_segments),
                                          "caption": np.asarray(captions, dtype=object)[scenes]}))
        shot_names = [names[k] for k in shot_scenes(scenes)[:DESCRIPTION_SHOTS]]
        text_rows.append((r.video_id, describe(shot_names)))
        if r.kind == "benchmark" and len(shot_names) == DESCRIPTION_SHOTS:
            question_rows += [(r.video_id, f"{r.video_id}-order", o, t, c)
                              for o, (t, c) in enumerate(order_question(trng, shot_names))]
    for w in writers.values():
        w.commit()

    bench = latents[latents.kind == "benchmark"].reset_index(drop=True)
    split = np.empty(len(bench), dtype=object)
    perm = rng.permutation(len(bench))
    a = int(SPLIT_FRACTIONS[0] * len(bench))
    b = a + int(SPLIT_FRACTIONS[1] * len(bench))
    split[perm[:a]], split[perm[a:b]], split[perm[b:]] = "train", "val", "test"
    xsplit = np.empty(len(extra), dtype=object)
    xperm = xrng.permutation(len(extra))
    xa = int(args.extra_fractions[0] * len(extra))
    xb = xa + int(args.extra_fractions[1] * len(extra))
    xsplit[xperm[:xa]], xsplit[xperm[xa:xb]], xsplit[xperm[xb:]] = "train", "val", "test"
    if len(extra):
        bench = pd.concat([bench, extra], ignore_index=True)
        split = np.concatenate([split, xsplit])
    pace_center = float(np.mean(PACE_RANGE))
    tasks = {
        "grammar": {"type": "classification", "num_classes": args.num_grammars, "chance": 1.0 / args.num_grammars,
                    "column": "grammar"},
        "style": {"type": "classification", "num_classes": args.num_styles, "chance": 1.0 / args.num_styles,
                  "column": "style"},
        # chance for regression = MSE of predicting the mean = variance of U[1.5, 6]
        "pace": {"type": "regression", "num_classes": 1, "chance": (PACE_RANGE[1] - PACE_RANGE[0]) ** 2 / 12,
                 "column": "pace", "offset": pace_center},
    }
    for task, spec in tasks.items():
        labels = bench[spec["column"]] - spec.get("offset", 0)
        for name in ("train", "val", "test"):
            sel = split == name
            df = pd.DataFrame({"video_id": bench.video_id[sel], "label": labels[sel]})
            (out / "tasks" / task).mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "tasks" / task / f"{name}.csv", df.to_csv(index=False))
    tasks_json = {t: {k: v for k, v in s.items() if k in ("type", "num_classes", "chance")} for t, s in tasks.items()}
    atomic_write_text(out / "tasks" / "tasks.json", json.dumps(tasks_json, indent=2) + "\n")
    atomic_write_text(out / "captions.csv", pd.concat(caption_rows, ignore_index=True).to_csv(index=False))
    atomic_write_text(out / "scene_captions.txt", "\n".join(captions) + "\n")
    atomic_write_text(out / "texts.csv", pd.DataFrame(text_rows, columns=["video_id", "text"]).to_csv(index=False))
    atomic_write_text(out / "order_questions.csv", pd.DataFrame(
        question_rows, columns=["video_id", "question_id", "option", "text", "correct"]).to_csv(index=False))
    table = pd.concat([latents, extra], ignore_index=True) if len(extra) else latents
    split_of = dict(zip(bench.video_id, split))
    atomic_write_text(out / "latents.csv", table.assign(split=table.video_id.map(split_of).fillna("pretrain"))
                      .to_csv(index=False))
    np.save(out / "prototypes.npy", gen.protos.astype(np.float32))
    np.save(out / "grammars.npy", grammars)
    summary = {"out": str(out), "encoder": encoder, "dim": D, "scenes": K, "d_min": gen.d_min,
               "benchmark_videos": int(len(bench)), "pretrain_videos": int((latents.kind != "benchmark").sum()),
               "segments": int(latents.num_segments.sum()), "tasks": tasks_json}
    atomic_write_text(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    summary = build(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "tasks"}))
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
