"""Probe heads trained on frozen long-video features (paper App. 8, Tables 6-7).

Every head is called as ``head(cls, tokens, pad)``: ``cls [B, E]`` the encoder's ``[CLS]``
output (unused by heads that do not need it), ``tokens [B, L, E]`` the segment tokens,
``pad [B, L]`` bool (True = padding). ``[CLS]`` is passed apart from the tokens so no head can
average it in or mask it out by an index slip.

- :class:`AttentiveProbe`: one transformer block over ``[CLS]`` + tokens with a key-padding
  mask, LayerNorm, Linear on the ``[CLS]`` position. ``own_cls=True`` is the raw-embedding
  baseline (``--backbone none``): raw segment embeddings have no ``[CLS]`` and no notion of
  position, so the probe brings a learnable ``[CLS]`` and fixed sin-cos positions. The same
  treatment can be given to LV-MAE tokens (``--probe_positions own``), and the positions can be
  left out of it (``positions=False``: an order-blind control on raw embeddings).
- :class:`LinearProbe`: mean over the valid segment tokens (never ``[CLS]``, never padding),
  optionally standardized with training statistics, Linear. With one output it is the
  regression head (LVU like ratio / view count, synthetic pace), whose targets are standardized
  with training statistics and whose outputs are in the task's units.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from util.pos_embed import get_1d_sincos_pos_embed


def masked_mean(tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """``[B, L, E]`` -> ``[B, E]`` mean over the positions where ``pad`` is False. Padding is
    filled, not multiplied, so NaN / inf there cannot leak in."""
    valid = (~pad).unsqueeze(-1)
    total = tokens.masked_fill(~valid, 0.0).sum(1)
    return total / valid.sum(1).clamp(min=1).to(tokens.dtype)


class LinearProbe(nn.Module):
    """``target_mean + target_std * Linear((mean(tokens) - feature_mean) / feature_std)``.

    The statistics are buffers (identity until :meth:`standardize` sets them), so a saved head
    carries the training statistics it was fitted with and always answers in the task's units."""

    def __init__(self, in_dim: int, num_outputs: int):
        super().__init__()
        self.head = nn.Linear(in_dim, num_outputs)
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    @torch.no_grad()
    def standardize(self, features: torch.Tensor, targets: torch.Tensor | None = None, eps: float = 1e-6):
        """Set the statistics from training ``features [N, in_dim]`` (the pooled inputs) and,
        for regression, training ``targets [N]``. A constant coordinate keeps scale 1."""
        f = features.double()
        std = f.std(0, unbiased=False)
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(torch.where(std > eps, std, torch.ones_like(std)))
        if targets is not None:
            t = targets.double()
            tstd = float(t.std(unbiased=False))
            self.target_mean.fill_(float(t.mean()))
            self.target_std.fill_(tstd if tstd > eps else 1.0)
        return self

    def pooled(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The standardized mean of the valid tokens: the linear layer's input."""
        return (masked_mean(tokens, pad) - self.feature_mean) / self.feature_std

    def forward(self, cls: torch.Tensor | None, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(tokens, pad)) * self.target_std + self.target_mean


class AttentiveProbe(nn.Module):
    """App. 8: a lightweight transformer layer adapting ``[CLS]``, then a linear classifier.

    ``own_cls=False`` (LV-MAE backbone): the input is the encoder's ``[CLS]`` and tokens, which
    already carry the encoder's positions. ``own_cls=True`` (raw embeddings): segment vectors are
    mapped by ``Linear(in_dim, width) + LayerNorm`` and sin-cos positions are added, then a
    learnable ``[CLS]`` is prepended. The LayerNorm puts content on the positions' scale
    (unit-norm CLIP-style vectors have per-coordinate RMS ``1/sqrt(D)``, sin-cos rows RMS
    ``1/sqrt(2)``): without it the positions would drown the content at initialisation.
    ``positions`` (default: ``own_cls``) adds the sin-cos positions in that path; without them
    the probe is a function of the set of tokens (the order-blind control). The path is the same
    for any tokens: ``own_cls=True`` over LV-MAE tokens is ``--probe_positions own``, where the
    encoder's ``[CLS]`` is not used.
    """

    def __init__(self, in_dim: int, num_outputs: int, num_heads: int, own_cls: bool = False,
                 width: int | None = None, mlp_ratio: float = 4.0, positions: bool | None = None):
        super().__init__()
        width = width or in_dim
        positions = own_cls if positions is None else positions
        if not own_cls and width != in_dim:
            raise ValueError("the attentive probe over encoder tokens works at the encoder width")
        if positions and not own_cls:
            raise ValueError("the probe adds positions only with its own [CLS] (own_cls=True)")
        if width % num_heads:
            raise ValueError(f"probe width {width} is not divisible by --probe_heads {num_heads}")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.own_cls, self.positions, self.width = own_cls, positions, width
        if own_cls:
            self.embed = nn.Sequential(nn.Linear(in_dim, width), norm_layer(width))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            nn.init.normal_(self.cls_token, std=0.02)
        self.block = Block(width, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
        self.norm = norm_layer(width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, cls: torch.Tensor | None, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, L, _ = tokens.shape
        # Zero-fill padding: a masked key still multiplies its value by 0, and 0 * NaN = NaN.
        tokens = tokens.masked_fill(pad[..., None], 0.0)
        if self.own_cls:
            tokens = self.embed(tokens)
            if self.positions:
                tokens = tokens + get_1d_sincos_pos_embed(self.width, L, device=tokens.device).to(tokens.dtype)
            first = self.cls_token.expand(B, -1, -1)
        else:
            first = cls[:, None]
        x = torch.cat([first, tokens], dim=1)
        # Key-padding mask over [CLS] + L tokens: [CLS] (column 0) is always attended, token j
        # sits at column j + 1. SDPA boolean mask, True = attend, broadcast over heads / queries.
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=pad.device), ~pad], dim=1)
        return self.head(self.norm(cls_block(self.block, x, keep)))


def cls_block(block: Block, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``block(x, attn_mask=keep[:, None, None, :])[:, 0]`` computed for the ``[CLS]`` row only.

    Only ``[CLS]`` reaches the classifier, so queries, attention output, MLP and residuals of the
    other rows are dead work: every token still contributes its key and value, and the result is
    the full block's row 0 (tests check the equality). This makes the probe several times
    cheaper. x: [B, S, W], keep: [B, S] bool (True = attend). Returns [B, W].
    """
    attn = block.attn
    B, S, W = x.shape
    h = block.norm1(x)
    w, b = attn.qkv.weight, attn.qkv.bias
    q = torch.nn.functional.linear(h[:, :1], w[:W], None if b is None else b[:W])
    kv = torch.nn.functional.linear(h, w[W:], None if b is None else b[W:])
    q = q.reshape(B, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(B, S, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    o = attn.proj(attn.norm(o.transpose(1, 2).reshape(B, 1, W)))
    c = x[:, :1] + block.ls1(o)
    c = c + block.ls2(block.mlp(block.norm2(c)))
    return c[:, 0]


def default_heads(width: int, max_heads: int = 16, min_head_dim: int = 16) -> int:
    """Heads of a probe with no encoder to copy them from (the raw baseline): the paper encoder's
    16, fewer on narrow inputs so a head keeps at least ``min_head_dim`` dims; divides ``width``.
    (On the 64-d synthetic corpus 4 heads reach ~80% on ``grammar`` where 1 head stays near 50%.)"""
    heads = max(1, min(max_heads, width // min_head_dim))
    while width % heads:
        heads -= 1
    return heads
