"""Caption retrieval by cosine similarity, and the metrics ``interpret.py`` reports (Sec. 3.4).

A query is a segment embedding (original, reconstructed, or a baseline's guess); the gallery is
the de-duplicated caption embeddings of the caption database. The target of a query is the id of
its segment's own caption in that gallery, so a hit means "the retrieved caption has the same
text" (de-duplication makes the id of a text unique).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KS = (1, 5, 10)


@dataclass
class Retrieval:
    """Top-``k`` captions of ``Q`` queries: ``indices`` / ``scores`` ``[Q, k]`` best first;
    ``ranks`` ``[Q]``: 1-based rank of each query's target (None without targets)."""
    indices: torch.Tensor
    scores: torch.Tensor
    ranks: torch.Tensor | None = None


@torch.no_grad()
def retrieve(queries: torch.Tensor, gallery: torch.Tensor, k: int, targets: torch.Tensor | None = None,
             chunk: int = 1024) -> Retrieval:
    """Cosine top-``k`` of ``queries: [Q, D]`` against ``gallery: [G, D]``.

    ``targets: [Q]`` gallery ids; the rank of a target is ``1 + #captions scoring strictly
    higher`` (ties resolve in the query's favour, as a top-k with an arbitrary tie order could).
    Queries are processed in chunks so ``Q x G`` never has to fit in memory at once.
    """
    if queries.shape[-1] != gallery.shape[-1]:
        raise ValueError(f"queries are {queries.shape[-1]}-d, the caption gallery is {gallery.shape[-1]}-d")
    k = min(k, gallery.shape[0])
    if queries.shape[0] == 0:
        empty = torch.zeros(0, k, dtype=torch.long)
        return Retrieval(empty, empty.float(), empty[:, 0] if targets is not None else None)
    g = F.normalize(gallery.float(), dim=-1)
    indices, scores, ranks = [], [], []
    for s in range(0, queries.shape[0], chunk):
        sim = F.normalize(queries[s:s + chunk].float(), dim=-1) @ g.T
        top = sim.topk(k, dim=1)
        indices.append(top.indices)
        scores.append(top.values)
        if targets is not None:
            t = targets[s:s + chunk].to(sim.device, torch.long)
            ranks.append(1 + (sim > sim.gather(1, t[:, None])).sum(1))
    return Retrieval(torch.cat(indices), torch.cat(scores), torch.cat(ranks) if targets is not None else None)


def recall_at_k(indices: torch.Tensor, targets: torch.Tensor, ks=KS) -> dict[int, float]:
    """Fraction of queries whose target is among their first ``k`` retrieved ids, per ``k``.
    ``k`` beyond the retrieved width counts the whole list (a gallery smaller than ``k``)."""
    hit = indices == targets[:, None].to(indices.device)
    if len(targets) == 0:
        return {k: float("nan") for k in ks}
    return {k: hit[:, :k].any(1).float().mean().item() for k in ks}


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """How alike two retrievals of the same queries are: ``top1`` = fraction with the same best
    caption; ``overlap`` = mean ``|top-k(a) & top-k(b)| / k`` (ids are unique within a row)."""
    if a.shape != b.shape:
        raise ValueError(f"retrievals of shape {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    if a.shape[0] == 0:
        return {"top1": float("nan"), "overlap": float("nan")}
    overlap = (a[:, :, None] == b[:, None, :]).any(-1).float().mean(1)
    return {"top1": (a[:, 0] == b[:, 0]).float().mean().item(), "overlap": overlap.mean().item()}


def summarize(ret: Retrieval, targets: torch.Tensor, ks=KS) -> dict[str, float]:
    """``{"R@1": .., "R@5": .., "R@10": .., "median_rank": ..}`` of one retrieval."""
    out = {f"R@{k}": v for k, v in recall_at_k(ret.indices, targets, ks).items()}
    if ret.ranks is not None:
        out["median_rank"] = ret.ranks.float().median().item() if len(ret.ranks) else float("nan")
    return out
