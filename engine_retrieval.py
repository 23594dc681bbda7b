"""Zero-shot video-text evaluation in the text tower's space: retrieval (``eval_retrieval.py``) and
multiple-choice answering (``eval_mcqa.py``), for three backbones in the same tables.

A *window* is the segments ``[start, stop)`` of one video: the whole video for a video-level
text, the segments of its span for a span text (``datasets.youcook2``). Each backbone turns a
window into one unit vector in the text space of the store's encoder:

- ``raw``: the mean of the window's raw, L2-normalized segment embeddings (the store's encoder
  is a video-text model, so its video vectors already live in its text space; no training);
- ``lvmae`` + ``ridge``: an LV-MAE encoder's pooled features (the mean of its unmasked output
  tokens, or ``[CLS]``) mapped to the text space by ridge regression fitted in closed form on
  the training pairs, its strength chosen by text->video R@1 on the val pairs (for an
  MAE-only checkpoint, which has no text projection);
- ``lvmae`` + ``projection``: a contrastive checkpoint's own video embedding
  (``model.text_space_embedding``: unmasked encoder, its pooling, projection, L2-norm).

Windows longer than the encoder's ``max_len`` follow ``util.long_video``'s sliding windows: the
pooled features average the owned tokens; the projection's embedding is the mean of the
windows' embeddings weighted by the segments each window owns, renormalized.

Metrics. Cosine similarity between unit vectors. A query's rank is ``1 + the number of gallery
items scoring strictly higher than its best-scoring positive`` (ties count in the query's
favour, as in ``util.retrieval``). Positives by text: a text's positives are the videos with a
text identical to it (its own, and any other the same description was written for: nothing
could tell them apart), a video's positives its texts and their identical copies (the
contrastive loss does not push identical texts apart either).
R@k = share of queries with rank <= k, MdR = the median rank. Multiple choice: the option with
the highest cosine to the video; ``k`` options tied at the top earn ``1/k`` (the expectation of
a random tie break), so a model that cannot tell the options apart scores chance exactly.

Results: ``<output_dir>/runs/<run_id>.json`` (everything, including the ridge grid on val) and
one row per (run, texts) in ``retrieval.csv`` / per run in ``mcqa.csv`` (``util.probe_results``'s
keyed, locked, atomic writer), and the Markdown tables of all rows so far (``tables.md``).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from util.cli import UserError
from util.io import atomic_save_figure, atomic_write_text
from util.long_video import encode_videos, raw_features, segment_owners, window_starts
from util.probe_results import bootstrap_interval, read_table, write_row

KS = (1, 5, 10)
RIDGE_LAMBDAS = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
HEADS = ("auto", "none", "ridge", "projection")
POOLS = ("mean", "cls")
RETRIEVAL_COLUMNS = ["run_id", "dataset", "texts", "split", "backbone", "head", "pool", "objective", "mask_ratio",
                     "window", "encoder", "ridge_lambda", "n_texts", "n_videos",
                     *[f"t2v_R@{k}" for k in KS], "t2v_MdR", *[f"v2t_R@{k}" for k in KS], "v2t_MdR",
                     "t2v_R@1_ci_low", "t2v_R@1_ci_high",
                     "checkpoint", "checkpoint_sha256", "result_json", "time"]
MCQA_COLUMNS = ["run_id", "dataset", "questions", "split", "backbone", "head", "pool", "objective", "mask_ratio",
                "window", "encoder", "ridge_lambda", "with_question", "n_questions", "num_options", "accuracy", "ci_low",
                "ci_high", "chance",
                "checkpoint", "checkpoint_sha256", "result_json", "time"]


class EvalError(UserError, ValueError):
    """An evaluation that cannot run as configured; the message names the flag or file."""


# --- windows ------------------------------------------------------------------------------------
class WindowView:
    """A store seen through windows: ``key -> (video_id, start, stop)``. Has the parts of the
    ``EmbeddingStore`` interface ``util.long_video`` reads (``dim``, ``lengths``, ``get``), so a
    span is encoded exactly as a video made of its segments would be."""

    def __init__(self, store, windows: dict[str, tuple[str, int, int]]):
        self.store, self.windows = store, windows
        self.dim = store.dim

    def lengths(self, keys) -> np.ndarray:
        return np.array([self.windows[k][2] - self.windows[k][1] for k in keys], dtype=np.int64)

    def get(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        vid, a, b = self.windows[key]
        stop = b - a if stop is None else min(stop, b - a)
        return self.store.get(vid, a + max(0, start), a + stop)


def whole_videos(store, video_ids) -> WindowView:
    return WindowView(store, {v: (v, 0, store.num_segments(v)) for v in video_ids})


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# --- backbones ----------------------------------------------------------------------------------
@dataclass
class Backbone:
    """``raw`` (``model`` None) or a loaded LV-MAE; ``head``: none (raw mean), ridge or projection."""
    name: str
    head: str
    pool: str = "mean"
    model: torch.nn.Module | None = None
    ckpt: dict = field(default_factory=dict)
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    device: str = "cpu"
    batch_size: int = 64

    @property
    def objective(self) -> str:
        return (self.model.config.get("objective", "mae") if self.model is not None else "")

    @property
    def mask_ratio(self):
        return (self.ckpt.get("args") or {}).get("mask_ratio", "") if self.model is not None else ""

    @property
    def window(self):
        """The encoder's window (``--num_patches`` of its training; longer videos are encoded in
        sliding windows of this many segments)."""
        return int(self.model.max_len) if self.model is not None else ""

    def label(self) -> str:
        return _label({"backbone": self.name, "head": self.head, "objective": self.objective, "pool": self.pool,
                       "mask_ratio": self.mask_ratio, "window": self.window, "ridge_lambda": ""})

    def features(self, view: WindowView, keys: list[str]) -> np.ndarray:
        """``[W, F]`` before any fitted map: raw means, pooled LV-MAE features, or (projection)
        unit vectors in the text space."""
        if self.model is None:
            return raw_features(view, keys).mean()
        if self.head == "projection":
            return text_space_embeddings(self.model, view, keys, self.batch_size, self.device)
        feats = encode_videos(self.model, view, keys, batch_size=self.batch_size, device=self.device, progress=False)
        return feats.cls if self.pool == "cls" else feats.mean()


def resolve_head(head: str, model) -> str:
    """``auto``: the checkpoint's projection if it has one (a contrastive objective), else ridge;
    the raw backbone's own vectors (``none``)."""
    if model is None:
        if head == "projection":
            raise EvalError("--head projection needs an LV-MAE checkpoint (--backbone lvmae)")
        return "none" if head == "auto" else head
    has_projection = hasattr(model, "text_space_embedding") and "contrastive" in model.config.get("objective", "mae")
    if head == "auto":
        return "projection" if has_projection else "ridge"
    if head == "projection" and not has_projection:
        raise EvalError(f"--head projection: the checkpoint was trained with objective "
                        f"{model.config.get('objective', 'mae')!r} and has no text projection; use --head ridge")
    if head == "none":
        raise EvalError("--head none is the raw backbone's; an LV-MAE needs --head ridge or projection")
    return head


@torch.no_grad()
def text_space_embeddings(model, view: WindowView, keys: list[str], batch_size: int = 64,
                          device="cpu") -> np.ndarray:
    """``[W, T]`` unit vectors ``model.text_space_embedding`` gives each window; longer windows
    than ``max_len``: the owned-segment weighted mean of the sliding windows' vectors."""
    max_len = model.max_len
    pieces = []  # (window index, start, stop, weight)
    for w, n in enumerate(view.lengths(keys)):
        starts = window_starts(int(n), max_len)
        owners = segment_owners(int(n), starts, max_len)
        pieces += [(w, int(s), int(min(s + max_len, n)), int((owners == j).sum())) for j, s in enumerate(starts)]
    order = sorted(range(len(pieces)), key=lambda i: pieces[i][2] - pieces[i][1])
    out = None
    for b in range(0, len(order), batch_size):
        batch = [pieces[i] for i in order[b:b + batch_size]]
        L = max(stop - start for _, start, stop, _ in batch)
        x = np.zeros((len(batch), L, view.dim), dtype=np.float32)
        pad = np.ones((len(batch), L), dtype=bool)
        for j, (w, start, stop, _) in enumerate(batch):
            x[j, :stop - start] = view.get(keys[w], start, stop)
            pad[j, :stop - start] = False
        emb = model.text_space_embedding(torch.from_numpy(x).to(device), torch.from_numpy(pad).to(device))
        emb = emb.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(keys), emb.shape[1]), dtype=np.float64)
        for j, (w, _, _, weight) in enumerate(batch):
            out[w] += weight * emb[j]
    return normalize(out if out is not None else np.zeros((0, 1)))


# --- the ridge map --------------------------------------------------------------------------------
@dataclass
class RidgeMap:
    """``y = (x - mean_x) @ weight + mean_y``, then L2-normalized."""
    mean_x: np.ndarray
    mean_y: np.ndarray
    weight: np.ndarray
    lam: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return normalize((np.asarray(x, np.float64) - self.mean_x) @ self.weight + self.mean_y)


def fit_ridge(x: np.ndarray, y: np.ndarray, lambdas) -> list[RidgeMap]:
    """Closed-form ridge regressions of ``y [N, T]`` on ``x [N, F]`` (centred, intercept not
    penalized), one per ``lambda``, in units of the mean eigenvalue of the centred ``x^T x`` so
    the grid means the same at any feature scale: ``W = (X^T X + lam * s I)^-1 X^T Y``, from one
    eigendecomposition."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    s, v = np.linalg.eigh(xc.T @ xc)
    s = np.clip(s, 0, None)
    scale = max(float(s.mean()), 1e-12)
    b = v.T @ (xc.T @ yc)
    return [RidgeMap(mx, my, v @ (b / (s + lam * scale)[:, None]), float(lam)) for lam in lambdas]


# --- metrics --------------------------------------------------------------------------------------
def ranks(sim: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``[Q]`` rank of each query's best positive: ``1 + #(items scoring strictly higher)``.
    ``sim``, ``positive``: ``[Q, G]`` (every query has at least one positive)."""
    best = np.where(positive, sim, -np.inf).max(1)
    return 1 + (np.where(positive, -np.inf, sim) > best[:, None]).sum(1)


def summarize(r: np.ndarray, prefix: str) -> dict:
    if not len(r):
        return {**{f"{prefix}_R@{k}": float("nan") for k in KS}, f"{prefix}_MdR": float("nan")}
    return {**{f"{prefix}_R@{k}": float((r <= k).mean()) for k in KS}, f"{prefix}_MdR": float(np.median(r))}


def retrieval_metrics(text_emb: np.ndarray, video_emb: np.ndarray, text_video: np.ndarray,
                      text_keys: np.ndarray | None = None) -> dict:
    """Text->video and video->text metrics: ``text_emb [T, D]``, ``video_emb [V, D]`` (unit rows),
    ``text_video [T]`` the index of each text's video (every video has a text). ``text_keys
    [T]`` (equal for identical texts): a video is a positive of every text identical to one of
    its own texts (the same description cannot tell two videos apart); default: only its own."""
    sim = text_emb.astype(np.float64) @ video_emb.astype(np.float64).T  # [T, V]
    positive = text_video[:, None] == np.arange(len(video_emb))[None]
    if text_keys is not None:
        same = np.asarray(text_keys)[:, None] == np.asarray(text_keys)[None]  # [T, T]
        positive = (same.astype(np.int64) @ positive.astype(np.int64)) > 0
    t2v = ranks(sim, positive)
    lo, hi = bootstrap_interval((t2v <= 1).astype(np.float64)) if len(t2v) else (float("nan"),) * 2
    return {**summarize(t2v, "t2v"), **summarize(ranks(sim.T, positive.T), "v2t"),
            "t2v_R@1_ci_low": lo, "t2v_R@1_ci_high": hi, "n_texts": int(len(text_emb)), "n_videos": int(len(video_emb))}


def answer_scores(video_emb: np.ndarray, option_emb: np.ndarray, valid: np.ndarray,
                  correct: np.ndarray) -> np.ndarray:
    """``[Q]`` credit of each question: 1 if its correct option has the single highest cosine,
    ``1/k`` if it is one of ``k`` tied at the top, else 0. ``video_emb [Q, D]``, ``option_emb
    [Q, K, D]``, ``valid [Q, K]`` (False = padding option), ``correct [Q]`` option index."""
    sim = np.einsum("qd,qkd->qk", video_emb.astype(np.float64), option_emb.astype(np.float64))
    sim = np.where(valid, sim, -np.inf)
    top = sim == sim.max(1, keepdims=True)
    return top[np.arange(len(correct)), correct] / top.sum(1)


# --- shared run plumbing ----------------------------------------------------------------------------
def read_splits(path) -> pd.Series:
    """``video_id -> split`` from a CSV with those columns (extra columns ignored: the synthetic
    corpus's ``latents.csv`` works as is)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"split table {path} does not exist (--splits)")
    try:
        df = pd.read_csv(path, dtype={"video_id": str, "split": str}, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise EvalError(f"{path} is not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    if not {"video_id", "split"} <= set(df.columns):
        raise EvalError(f"{path} needs the columns video_id, split (has {list(df.columns)})")
    if df.video_id.duplicated().any():
        raise EvalError(f"{path}: video {df.video_id[df.video_id.duplicated()].iloc[0]!r} has several rows")
    return pd.Series(df.split.to_numpy(), index=df.video_id.to_numpy())


def store_name(store) -> str:
    return ", ".join(map(str, store.roots))


def open_texts(texts, store):
    """The text database ``texts``, checked against ``store`` (the same encoder's text tower)."""
    from datasets.texts import TextDatabase
    db = TextDatabase(texts)
    db.check_store(store.manifest, store_name(store))
    return db


def load_backbone(args, store) -> Backbone:
    """The ``--backbone`` / ``--checkpoint`` / ``--head`` of a CLI as a ``Backbone``."""
    from util.checkpoint import check_store_encoder, load_pretrained
    from util.dist import resolve_device
    from util.feature_cache import file_digest
    device = str(resolve_device(args.device))
    if args.backbone == "raw":
        if args.checkpoint:
            raise EvalError("--checkpoint goes with --backbone lvmae; --backbone raw uses no model")
        return Backbone("raw", resolve_head(args.head, None), args.pool, device=device, batch_size=args.batch_size)
    if not args.checkpoint:
        raise EvalError("--backbone lvmae needs --checkpoint (an LV-MAE or contrastive checkpoint)")
    model, ckpt = load_pretrained(args.checkpoint, device, input_dim=store.dim)
    check_store_encoder(ckpt, store.manifest, args.checkpoint, ", ".join(map(str, store.roots)))
    digest = file_digest(args.checkpoint) if Path(args.checkpoint).is_file() else ""
    return Backbone("lvmae", resolve_head(args.head, model), args.pool, model, ckpt, str(args.checkpoint), digest,
                    device, args.batch_size)


def run_id(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def choose_ridge(backbone: Backbone, view: WindowView, train: "Pairs", val: "Pairs", lambdas) -> tuple[RidgeMap, dict]:
    """Fit on ``train``; keep the lambda with the best val text->video R@1 (the larger lambda on
    ties: the simpler map). A single lambda needs no val pairs."""
    if not len(train.texts):
        raise EvalError("the ridge map has no training pairs (no text of a 'train' video; see --splits)")
    x = backbone.features(view, train.videos)[train.text_video]
    maps = fit_ridge(x, train.embeddings, lambdas)
    if len(maps) == 1:
        return maps[0], {}
    if not len(val.texts):
        raise EvalError("choosing the ridge lambda needs val pairs (no text of a 'val' video; see --splits), "
                        "or give one --ridge_lambdas value")
    xv = backbone.features(view, val.videos)
    grid = {m.lam: retrieval_metrics(val.embeddings, m(xv), val.text_video, val.keys)["t2v_R@1"] for m in maps}
    best = max(sorted(maps, key=lambda m: -m.lam), key=lambda m: grid[m.lam])
    return best, {"val_t2v_R@1_by_lambda": {str(k): v for k, v in grid.items()}}


@dataclass
class Pairs:
    """Texts and the windows they describe: ``texts`` ids, ``embeddings [T, D]``, ``videos`` the
    distinct window keys, ``text_video [T]`` index of each text's window in ``videos``."""
    texts: list[str]
    embeddings: np.ndarray
    videos: list[str]
    text_video: np.ndarray
    keys: np.ndarray | None = None

    @classmethod
    def make(cls, text_ids, embeddings, window_of_text, keys=None) -> "Pairs":
        videos = list(dict.fromkeys(window_of_text))
        pos = {v: i for i, v in enumerate(videos)}
        return cls(list(text_ids), np.asarray(embeddings, np.float32), videos,
                   np.array([pos[v] for v in window_of_text], dtype=np.int64),
                   None if keys is None else np.asarray(keys))


def save_run(out: Path, rid: str, result: dict) -> Path:
    path = out / "runs" / f"{rid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2, default=float) + "\n")
    return path


def base_row(backbone: Backbone, encoder: str) -> dict:
    return {"backbone": backbone.name, "head": backbone.head, "pool": backbone.pool if backbone.head == "ridge" else "",
            "objective": backbone.objective, "mask_ratio": backbone.mask_ratio, "window": backbone.window,
            "encoder": encoder,
            "checkpoint": backbone.checkpoint, "checkpoint_sha256": backbone.checkpoint_sha256,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


# --- tables ----------------------------------------------------------------------------------------
def _pct(v) -> str:
    try:
        return f"{100 * float(v):.1f}"
    except (TypeError, ValueError):
        return "–"


def _label(r) -> str:
    if r["backbone"] == "raw":
        return "raw mean (no training)" if r["head"] == "none" else f"raw mean + {r['head']}"
    what = f"LV-MAE {r['objective'] or 'mae'}, mask {r['mask_ratio']}"
    if str(r.get("window", "")):
        what += f", window {r['window']}"
    if r["head"] != "ridge":
        return f"{what} + projection"
    lam = f", λ={float(r['ridge_lambda']):g}" if str(r["ridge_lambda"]) else ""
    return f"{what} + ridge ({r['pool']}{lam})"


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def retrieval_tables(path) -> str:
    df = read_table(path, RETRIEVAL_COLUMNS, key=("run_id", "texts"))
    if not len(df):
        return "No retrieval results."
    parts = []
    for (dataset, texts, split), g in df.groupby(["dataset", "texts", "split"], sort=False):
        rows = [[_label(r), f"{_pct(r['t2v_R@1'])} [{_pct(r['t2v_R@1_ci_low'])}, {_pct(r['t2v_R@1_ci_high'])}]",
                 *(_pct(r[f"t2v_R@{k}"]) for k in KS[1:]), f"{float(r['t2v_MdR']):g}",
                 *(_pct(r[f"v2t_R@{k}"]) for k in KS), f"{float(r['v2t_MdR']):g}", r["n_texts"], r["n_videos"]]
                for _, r in g.iterrows()]
        parts.append(f"#### Retrieval: {dataset}, {texts} texts, {split} split\n\n" + md_table(
            ["Backbone", *(f"T→V R@{k}" for k in KS), "T→V MdR", *(f"V→T R@{k}" for k in KS), "V→T MdR",
             "texts", "videos"], rows))
    return "\n\n".join(parts) + ("\n\nR@k in %, MdR = median rank (1 = best); [lo, hi]: 95% bootstrap interval "
                                  "over the queries.")


def mcqa_tables(path) -> str:
    df = read_table(path, MCQA_COLUMNS, key=("run_id",))
    if not len(df):
        return "No multiple-choice results."
    parts = []
    for (dataset, split), g in df.groupby(["dataset", "split"], sort=False):
        rows = [[_label(r), "question + option" if str(r["with_question"]) == "True" else "option",
                 f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]", _pct(r["chance"]),
                 r["n_questions"]] for _, r in g.iterrows()]
        parts.append(f"#### Zero-shot multiple choice: {dataset}, {split} split\n\n" + md_table(
            ["Backbone", "text", "accuracy", "chance", "questions"], rows))
    return "\n\n".join(parts) + ("\n\nAccuracy in %; k options tied at the top earn 1/k; [lo, hi]: 95% bootstrap "
                                  "interval over the questions.")


def write_tables(out: Path) -> str:
    text = ""
    if (out / "retrieval.csv").is_file():
        text += retrieval_tables(out / "retrieval.csv") + "\n\n"
    if (out / "mcqa.csv").is_file():
        text += mcqa_tables(out / "mcqa.csv") + "\n"
    atomic_write_text(out / "tables.md", text)
    return text


# --- the mask-ratio trade-off -----------------------------------------------------------------------
def tradeoff(out: Path, dataset: str | None = None) -> pd.DataFrame:
    """One row per backbone run: video-text T->V R@1 and multiple-choice accuracy (in %, with
    their bootstrap intervals), joined on (backbone, head, objective, mask_ratio, window,
    checkpoint), for ``dataset`` (default: all)."""
    keys = ["backbone", "head", "objective", "mask_ratio", "window", "checkpoint_sha256"]
    r = read_table(out / "retrieval.csv", RETRIEVAL_COLUMNS, key=("run_id", "texts"))
    q = read_table(out / "mcqa.csv", MCQA_COLUMNS, key=("run_id",))
    r, q = r[r.texts == "video"], q[q.with_question.astype(str) != "True"]
    if dataset:
        r, q = r[r.dataset == dataset], q[q.dataset == dataset]
    pct = lambda col: 100 * pd.to_numeric(col, errors="coerce")  # noqa: E731
    r = r.assign(t2v_R1=pct(r["t2v_R@1"]), t2v_R1_lo=pct(r["t2v_R@1_ci_low"]), t2v_R1_hi=pct(r["t2v_R@1_ci_high"]))
    q = q.assign(acc=pct(q["accuracy"]), acc_lo=pct(q["ci_low"]), acc_hi=pct(q["ci_high"]), chance_pct=pct(q["chance"]))
    r = r[keys + ["t2v_R1", "t2v_R1_lo", "t2v_R1_hi", "ridge_lambda", "pool"]].drop_duplicates(keys, keep="last")
    q = q[keys + ["acc", "acc_lo", "acc_hi", "chance_pct"]].drop_duplicates(keys, keep="last")
    df = r.merge(q, on=keys, how="outer")
    # Contrastive runs first (the longest window's sweep, then shorter windows), by mask ratio;
    # then the MAE-only baselines, then the raw mean.
    num = lambda col: pd.to_numeric(df[col], errors="coerce").fillna(0)  # noqa: E731
    rank = np.where(df.objective.astype(str).str.contains("contrastive"), 0, np.where(df.backbone == "raw", 2, 1))
    order = np.lexsort((num("mask_ratio").to_numpy(), -num("window").to_numpy(), rank))
    return df.iloc[order].reset_index(drop=True)


def tradeoff_table(df: pd.DataFrame) -> str:
    def cell(r, c):
        return f"{r[c]:.1f} [{r[c + '_lo']:.1f}, {r[c + '_hi']:.1f}]" if pd.notna(r[c]) else "–"
    rows = [[_label(r.fillna("")), r["mask_ratio"] if r["backbone"] == "lvmae" else "–",
             r["window"] if r["backbone"] == "lvmae" else "–", cell(r, "t2v_R1"),
             cell(r, "acc"), f"{r['chance_pct']:.1f}" if pd.notna(r["chance_pct"]) else "–"] for _, r in df.iterrows()]
    return md_table(["Backbone", "mask ratio", "window", "T→V R@1 (%)", "order questions (%)", "chance (%)"], rows)


def plot_tradeoff(df: pd.DataFrame, path: str | Path) -> Path:
    """T->V R@1 and order-question accuracy against the contrastive runs' mask ratio (one series
    per training window), the raw-mean baseline as dashed lines. Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    con = df[df.objective.str.contains("contrastive", na=False)].copy()
    con["ratio"] = con.mask_ratio.astype(float)
    con = con.sort_values("ratio")
    # The mask-ratio sweep is the window with the most runs (a line); other windows (e.g. the
    # longer window a 75%-masked run affords) are drawn as their own markers.
    windows = con.window.astype(str).value_counts(sort=True).index.tolist()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for col, name, color in (("t2v_R1", "text→video R@1", "C0"), ("acc", "order questions", "C1")):
        for i, w in enumerate(windows):
            g = con[con.window.astype(str) == w]
            err = np.vstack([g[col] - g[col + "_lo"], g[col + "_hi"] - g[col]])
            tag = f" (window {w})" if len(windows) > 1 and w else ""
            ax.errorbar(100 * g.ratio, g[col], yerr=err, marker="o*sD^v"[i % 6], ms=6 if i == 0 else 10,
                        capsize=3, color=color, ls="-" if i == 0 else ":", label=f"contrastive{tag}: {name}")
        raw = df[(df.backbone == "raw")][col].dropna()
        if len(raw):
            ax.axhline(float(raw.iloc[-1]), ls="--", color=color, alpha=0.6, label=f"raw mean: {name}")
    ax.set_xlabel("mask ratio during training (%)")
    ax.set_ylabel("%")
    ax.set_xticks([0, 25, 50, 75])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def main(argv=None):
    """``python engine_retrieval.py OUT [--plot PNG] [--dataset NAME]``: the tables of a results
    folder and the mask-ratio trade-off (table, and PNG with --plot)."""
    from util.cli import ArgumentParser, output_file
    p = ArgumentParser(description=main.__doc__)
    p.add_argument("results", help="output directory of eval_retrieval.py / eval_mcqa.py")
    p.add_argument("--dataset", default=None, help="the dataset of the trade-off (default: all rows)")
    p.add_argument("--plot", default=None, type=output_file, help="write the trade-off plot (PNG) here")
    p.add_argument("--out", default=None, type=output_file, help="also write the Markdown here")
    args = p.parse_args(argv)
    out = Path(args.results)
    if not out.is_dir():
        raise EvalError(f"results folder {out} does not exist")
    df = tradeoff(out, args.dataset)
    text = write_tables(out) + "\n#### Mask-ratio trade-off\n\n" + tradeoff_table(df) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    if args.plot:
        print(f"trade-off plot: {plot_tradeoff(df, args.plot)}")
    return text


if __name__ == "__main__":
    import sys
    from util.cli import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
