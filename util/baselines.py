"""Simple reconstructions of masked segments from the visible ones, to give LV-MAE's numbers a
scale (pretraining's validation error, caption retrieval in ``interpret.py``).

All take ``x: [B, L, D]``, ``visible: [B, L]`` bool (False at masked *and* padding positions)
and return ``[B, L, D]``; positions of a sample with no visible segment get zeros.
"""
from __future__ import annotations

import torch


def _neighbours(visible: torch.Tensor):
    """Index of the nearest visible position at or before / at or after each position
    (-1 / L when there is none)."""
    B, L = visible.shape
    idx = torch.arange(L, device=visible.device).expand(B, L)
    prev = torch.where(visible, idx, -1).cummax(dim=1).values
    nxt = torch.where(visible, idx, L).flip(1).cummin(dim=1).values.flip(1)
    return idx, prev, nxt


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.clamp(0, x.shape[1] - 1)[..., None].expand(-1, -1, x.shape[-1]))


def nearest_visible(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Copy the nearest visible segment (the earlier one on ties)."""
    idx, prev, nxt = _neighbours(visible)
    L = x.shape[1]
    d_prev = torch.where(prev >= 0, idx - prev, L + 1)
    d_next = torch.where(nxt < L, nxt - idx, L + 1)
    src = torch.where(d_prev <= d_next, prev, nxt)
    out = _take(x, src)
    return out.masked_fill(~visible.any(1)[:, None, None], 0.0)


def linear_interpolation(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Interpolate linearly between the visible segments either side (copy the one side at the
    ends)."""
    idx, prev, nxt = _neighbours(visible)
    L = x.shape[1]
    has_prev, has_next = prev >= 0, nxt < L
    a, b = _take(x, prev), _take(x, nxt)
    w = ((idx - prev).float() / (nxt - prev).clamp(min=1).float())[..., None]
    both = (has_prev & has_next)[..., None]
    out = torch.where(both, (1 - w) * a + w * b, torch.where(has_prev[..., None], a, b))
    return out.masked_fill(~visible.any(1)[:, None, None], 0.0)


def mean_visible(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """The mean of the visible segments, at every position."""
    v = visible[..., None].to(x.dtype)
    mean = (x * v).sum(1, keepdim=True) / v.sum(1, keepdim=True).clamp(min=1)
    return mean.expand_as(x)


BASELINES = {"nearest_visible": nearest_visible, "linear_interpolation": linear_interpolation,
             "mean_visible": mean_visible}
