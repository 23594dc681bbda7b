"""LV-MAE: a masked-embedding autoencoder over sequences of short-video embeddings.

Paper Sec. 3.2 and App. 7. A long video is a sequence ``E = {e_i}`` of segment embeddings
(one per 5-s segment, produced by a frozen video-text encoder). A subset ``M`` is masked; the
encoder sees ``[CLS]`` + the visible tokens only (Eq. 1); the decoder sees the encoded visible
tokens and a shared learnable mask token ``m`` at every masked position, all with positional
embeddings (Eq. 2); the loss is the MSE on the masked tokens (Eq. 3). Sequences are padded to
the batch maximum and ``[PAD]`` positions are removed from attention by key-padding masks.

Everything is batched: masking, gathering the visible tokens, scattering them back for the
decoder and the loss run as tensor ops on the device, with no loop over samples.

Objectives (``objective``; docs/contrastive.md). ``mae`` is the above. ``contrastive`` (the
masked video-text contrastive recipe of Papalampidi et al., CVPR 2024, at the segment level):
the encoder runs on the visible segments only, its output tokens are pooled (``pooling``: the
mean of the segment tokens, the paper's, or ``[CLS]``), projected linearly to the text space
(``text_dim``) and L2-normalized; no decoder is built. ``mae+contrastive``: both heads on one
encoder pass. The learnable temperature is CLIP's: ``logit_scale`` holds ``log(1 / 0.07)`` at
initialization and the scale ``exp(logit_scale)`` is clamped at 100.
"""
from __future__ import annotations

import inspect
import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from util.hub import StrictHubMixin
from util.pos_embed import get_1d_sincos_pos_embed

MASKINGS = ("random", "semantic", "semantic_inverse")
# How segment embeddings enter the encoder. "none": added to the sin-cos positions as they are
# (the paper's Eq. 1 and the authors' code). "sqrt_dim": multiplied by sqrt(input_dim) first and
# reconstructions divided by it (the sqrt(d_model) embedding scale of Vaswani et al.).
INPUT_SCALES = ("sqrt_dim", "none")
# The default form for new models: "none", chosen on validation by the pretraining ablation
# (docs/pretraining.md, "Ablation"; at its best lr it carries the synthetic grammar far better
# than "sqrt_dim" at its best) and the paper's and authors' form. Checkpoints whose model_config
# lacks the key were all trained with "sqrt_dim" and load as such (util.checkpoint).
DEFAULT_INPUT_SCALE = "none"
OBJECTIVES = ("mae", "contrastive", "mae+contrastive")
POOLINGS = ("mean", "cls")
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
LOGIT_SCALE_MAX = 100.0                 # CLIP's clamp of the scale exp(logit_scale)


def has_decoder(objective: str) -> bool:
    return "mae" in objective.split("+")


def has_text_head(objective: str) -> bool:
    return "contrastive" in objective.split("+")


def num_visible(lengths: torch.Tensor, mask_ratio: float, reconstruct: bool = True) -> torch.Tensor:
    """Visible segments per sample: ``int(n * (1 - ratio))`` as Python computes it (float64,
    truncation), clamped to ``[1, n - 1]``; samples with ``n < 2`` keep everything visible.

    ``reconstruct=False`` (the contrastive objective, which needs no masked token): the ratio
    may be 0 (nothing masked) and the count is clamped to ``[1, n]``."""
    if not (0.0 < mask_ratio < 1.0 if reconstruct else 0.0 <= mask_ratio < 1.0):
        raise ValueError(f"--mask_ratio must be in {'(0, 1)' if reconstruct else '[0, 1)'}, got {mask_ratio}")
    n = lengths.to(torch.float64)
    keep = torch.trunc(n * (1.0 - mask_ratio)).to(torch.long)
    keep = torch.minimum(torch.clamp(keep, min=1), lengths - 1 if reconstruct else lengths)
    return torch.where(lengths < 2, lengths, keep)


def masking_scores(x: torch.Tensor, valid: torch.Tensor, masking: str,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position score; the positions with the lowest scores are masked first (stable sort,
    so equal scores mask the lower index first). Padding and, for the semantic variants, the
    first segment get ``+inf`` and are never masked.

    - ``random``: ``-noise`` (MAE: sort the noise ascending, keep the lowest).
    - ``semantic`` (the paper's text): cosine similarity to the preceding segment, so the
      segments least similar to their predecessor are masked.
    - ``semantic_inverse`` (the authors' code): minus that similarity, so the most redundant
      segments are masked.
    """
    B, L = valid.shape
    if masking == "random":
        if noise is None:
            noise = torch.rand(B, L, device=x.device)
        score = -noise.to(torch.float32)
    elif masking in ("semantic", "semantic_inverse"):
        sim = F.cosine_similarity(x[:, 1:].float(), x[:, :-1].float(), dim=-1, eps=1e-8)
        sim = torch.cat([torch.full((B, 1), float("inf"), device=x.device), sim], dim=1)
        score = sim if masking == "semantic" else -sim
        score[:, 0] = float("inf")
    else:
        raise ValueError(f"unknown --masking {masking!r}; choose from {MASKINGS}")
    return score.masked_fill(~valid, float("inf"))


def make_mask(x: torch.Tensor, lengths: torch.Tensor, mask_ratio: float, masking: str = "random",
              noise: torch.Tensor | None = None, reconstruct: bool = True) -> torch.Tensor:
    """``[B, L]`` bool, True = masked (hidden from the encoder); always False at padding.
    ``reconstruct``: as in ``num_visible``."""
    B, L = x.shape[:2]
    valid = torch.arange(L, device=x.device)[None] < lengths[:, None]
    score = masking_scores(x, valid, masking, noise)
    order = torch.sort(score, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(L, device=x.device).expand(B, L))
    num_masked = lengths - num_visible(lengths, mask_ratio, reconstruct)
    return (rank < num_masked[:, None]) & valid


class LVMAE(nn.Module, StrictHubMixin, library_name="lvmae", tags=["video", "long-video", "lvmae"],
            repo_url="https://github.com/amazon-science/lv-mae"):
    """Asymmetric encoder-decoder over ``[B, L, D]`` padded sequences of segment embeddings.

    ``LVMAE.from_pretrained(dir)`` / ``model.save_pretrained(dir)``: the Hub format (util.hub)."""

    def __init__(self, embed_dim: int = 1024, depth: int = 32, num_heads: int = 16,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, max_len: int = 256, input_dim: int | None = None,
                 input_scale: str = DEFAULT_INPUT_SCALE, objective: str = "mae", text_dim: int | None = None,
                 pooling: str = "mean"):
        super().__init__()
        if input_scale not in INPUT_SCALES:
            raise ValueError(f"unknown --input_scale {input_scale!r}; choose from {INPUT_SCALES}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown --objective {objective!r}; choose from {OBJECTIVES}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown --pooling {pooling!r}; choose from {POOLINGS}")
        if has_text_head(objective) and not text_dim:
            raise ValueError(f"--objective {objective} needs text_dim (the text database's dim)")
        # Exactly the constructor arguments: what checkpoints store as "model_config".
        self.config = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth,
                           decoder_num_heads=decoder_num_heads, mlp_ratio=float(mlp_ratio), max_len=max_len,
                           input_dim=input_dim or embed_dim, input_scale=input_scale, objective=objective,
                           text_dim=int(text_dim) if has_text_head(objective) else None, pooling=pooling)
        self.objective, self.pooling = objective, pooling
        self.embed_dim, self.decoder_embed_dim = embed_dim, decoder_embed_dim
        self.input_dim = input_dim or embed_dim
        self.max_len = max_len
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # --- encoder (Eq. 1) ---
        self.input_proj = nn.Linear(self.input_dim, embed_dim) if self.input_dim != embed_dim else nn.Identity()
        # Segment embeddings arrive L2-normalized (|x| = 1, ~1/sqrt(D) per dimension) while the
        # sin-cos positions are ~0.7 per dimension. With "sqrt_dim" the content has unit RMS per
        # dimension and is not drowned by the positions at initialization; reconstructions are
        # scaled back, so pred and the loss stay in the units of x. The paper's Eq. 1-3 and the
        # authors' code ("none") add the unit-norm embeddings unscaled. When input_dim ==
        # embed_dim, input_proj is the identity, so no weights can undo a scale: it is part of
        # the function and recorded in model_config.
        self.input_scale = input_scale
        self.input_factor = math.sqrt(self.input_dim) if input_scale == "sqrt_dim" else 1.0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)

        # --- decoder (Eq. 2): only for a reconstruction objective (DDP sees no unused parameter) ---
        if has_decoder(objective):
            self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
            self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio,
                                                       qkv_bias=True, norm_layer=norm_layer)
                                                 for _ in range(decoder_depth)])
            self.decoder_norm = norm_layer(decoder_embed_dim)
            self.decoder_pred = nn.Linear(decoder_embed_dim, self.input_dim)

        # --- text head (contrastive objectives): pooled tokens -> text space, CLIP's temperature ---
        if has_text_head(objective):
            self.text_proj = nn.Linear(embed_dim, int(text_dim), bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

        # Positions are a function of (width, length), recomputed rather than stored, so a
        # checkpoint loads into a model with a larger max_len.
        self.register_buffer("pos_embed", get_1d_sincos_pos_embed(embed_dim, max_len, cls_token=True)[None],
                             persistent=False)
        self.register_buffer("decoder_pos_embed",
                             get_1d_sincos_pos_embed(decoder_embed_dim, max_len, cls_token=True)[None],
                             persistent=False)
        self.initialize_weights()

    def initialize_weights(self):
        nn.init.normal_(self.cls_token, std=0.02)
        if has_decoder(self.objective):
            nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"cls_token", "mask_token", "logit_scale"}

    # ------------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-fill padding (so NaN / inf there cannot reach any output) and build ``valid``."""
        B, L, D = x.shape
        if D != self.input_dim:
            raise ValueError(f"input embeddings have dim {D}, the model expects {self.input_dim} (--input_size)")
        if L > self.max_len:
            raise ValueError(f"sequence of {L} segments exceeds max_len={self.max_len} (--num_patches); "
                             "use util.long_video for longer videos")
        lengths = lengths.to(device=x.device, dtype=torch.long)
        valid = torch.arange(L, device=x.device)[None] < lengths[:, None]
        return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)), valid

    @staticmethod
    def _key_padding(pad: torch.Tensor) -> torch.Tensor:
        """``pad: [B, S]`` True = padding -> SDPA boolean mask ``[B, 1, 1, S]``, True = attend."""
        return (~pad)[:, None, None, :]

    def forward_encoder(self, x: torch.Tensor, visible: torch.Tensor):
        """Encode ``[CLS]`` + the visible tokens (Eq. 1).

        x: [B, L, D] (padding already zero), visible: [B, L] bool.
        Returns latent [B, 1+K, E] after ``norm`` (K = max visible count in the batch, visible
        tokens in their original order), pad [B, 1+K] bool (True = padding).
        """
        B, L, _ = x.shape
        num_vis = visible.sum(1)
        K = int(num_vis.max()) if B else 0
        # Visible positions first, in order: sort key (not visible, position) -- no Python loop.
        key = (~visible).long() * L + torch.arange(L, device=x.device)[None]
        ids_keep = torch.argsort(key, dim=1)[:, :K]
        # Gather before projecting: masked and padded positions never pay for input_proj.
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        x = self.input_proj(x * self.input_factor) + self.pos_embed[0, 1:][ids_keep].to(x.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1)
        pad = torch.arange(K + 1, device=x.device)[None] > num_vis[:, None]
        attn_mask = self._key_padding(pad)
        for blk in self.blocks:
            x = blk(x, attn_mask=attn_mask)
        return self.norm(x), pad

    def forward_decoder(self, latent: torch.Tensor, visible: torch.Tensor, valid: torch.Tensor):
        """Reconstruct every position (Eq. 2): encoded visible tokens back in place, the shared
        mask token ``m`` elsewhere, positions added to all. Returns pred [B, L, D]."""
        B, L = visible.shape
        x = self.decoder_embed(latent)
        # Column of each visible position in the encoder sequence (cumulative count - 1).
        col = (torch.cumsum(visible.long(), dim=1) - 1).clamp(min=0)
        tokens = torch.gather(x[:, 1:], 1, col[..., None].expand(-1, -1, x.shape[-1])) if x.shape[1] > 1 \
            else x.new_zeros(B, L, x.shape[-1])
        tokens = torch.where(visible[..., None], tokens, self.mask_token.to(x.dtype))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed[:, :L + 1].to(x.dtype)
        pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        attn_mask = self._key_padding(pad)
        for blk in self.decoder_blocks:
            x = blk(x, attn_mask=attn_mask)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:] / self.input_factor
        return torch.where(valid[..., None], pred, torch.zeros((), dtype=pred.dtype, device=pred.device))

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                     num_masked: torch.Tensor | float | None = None, cos_loss: bool = False) -> torch.Tensor:
        """Sum over masked real tokens of the per-token loss, divided by ``num_masked`` (default:
        the masked tokens of this batch; the training loop passes the count of the whole optimizer
        step so DDP / accumulation match one big batch). Per token: mean over dims of
        ``(pred - x)^2`` (Eq. 3 divided by D), or ``1 - cos(pred, x)`` with ``cos_loss``."""
        pred = pred.float()
        if cos_loss:
            per_token = 1.0 - F.cosine_similarity(pred, x.float(), dim=-1, eps=1e-8)
        else:
            per_token = (pred - x.float()).pow(2).mean(dim=-1)
        total = (per_token * mask).sum()
        if num_masked is None:
            num_masked = mask.sum()
        num_masked = torch.as_tensor(num_masked, dtype=total.dtype, device=total.device)
        # clamp: a batch with nothing masked gives 0 (with a graph), never 0/0.
        return total / num_masked.clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask_ratio: float = 0.5,
                masking: str = "random", noise: torch.Tensor | None = None,
                num_masked: torch.Tensor | float | None = None, mask: torch.Tensor | None = None,
                cos_loss: bool = False, with_embedding: bool = False):
        """x: [B, L, D] padded, lengths: [B]. Returns ``loss, pred [B, L, D], mask [B, L]``
        (mask True = hidden from the encoder). ``mask`` given explicitly overrides masking.

        ``with_embedding`` (contrastive objectives) returns ``loss, pred, mask, emb, scale``
        from the same encoder pass: ``emb`` [B, text_dim] the L2-normalized text-space embedding
        of the visible segments, ``scale`` the clamped ``exp(logit_scale)``; ``loss`` and ``pred``
        are None without a decoder (``contrastive``), whose ratio may then be 0."""
        x, valid = self._check(x, lengths)
        decode = has_decoder(self.objective)
        if with_embedding and not has_text_head(self.objective):
            raise ValueError(f"a model trained with objective {self.objective!r} has no text head")
        if not (decode or with_embedding):
            raise ValueError(f"a model of objective {self.objective!r} has no decoder; call it with_embedding=True")
        if mask is None:
            mask = make_mask(x, valid.sum(1), mask_ratio, masking, noise, reconstruct=decode)
        else:
            mask = mask.to(device=x.device, dtype=torch.bool) & valid
        visible = valid & ~mask
        latent, pad = self.forward_encoder(x, visible)
        loss = pred = None
        if decode:
            pred = self.forward_decoder(latent, visible, valid)
            loss = self.forward_loss(x, pred, mask, num_masked, cos_loss)
        if not with_embedding:
            return loss, pred, mask
        return loss, pred, mask, self.project_text(latent, pad), self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def project_text(self, latent: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, 1+K, E]`` (``[CLS]`` first; ``pad`` True = padding) -> the pooled,
        projected, L2-normalized ``[B, text_dim]`` (pooling: mean of the segment tokens, or [CLS])."""
        if self.pooling == "cls":
            pooled = latent[:, 0]
        else:
            keep = (~pad[:, 1:]).to(latent.dtype)[..., None]
            pooled = (latent[:, 1:] * keep).sum(1) / keep.sum(1).clamp(min=1)
        return F.normalize(self.text_proj(pooled).float(), dim=-1, eps=1e-12)

    def text_space_embedding(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Unmasked encoder -> ``[B, text_dim]`` L2-normalized (the checkpoint's pooling): the video
        side of retrieval. ``x`` [B, L, D] padded, ``padding_mask`` [B, L] True = padding."""
        if not has_text_head(self.objective):
            raise ValueError(f"a model trained with objective {self.objective!r} has no text head")
        lengths = (~padding_mask.to(torch.bool)).sum(1)
        x, valid = self._check(x, lengths)
        latent, pad = self.forward_encoder(x, valid)
        return self.project_text(latent, pad)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor):
        """Unmasked encoder output after the final norm: tokens [B, 1+L, E] (``[CLS]`` first,
        zero at padding) and pad [B, 1+L] bool (True = padding)."""
        x, valid = self._check(x, lengths)
        latent, pad = self.forward_encoder(x, valid)
        latent = latent.masked_fill(pad[..., None], 0.0)
        L = x.shape[1]
        if latent.shape[1] < L + 1:  # every sample shorter than the padded width
            latent = F.pad(latent, (0, 0, 0, L + 1 - latent.shape[1]))
            pad = F.pad(pad, (0, L + 1 - pad.shape[1]), value=True)
        return latent, pad


# --- presets ------------------------------------------------------------------------------------
# Depths from the paper's Table 4; widths from the authors' README command (1024-d, 16 heads;
# decoder 512-d, depth 8, 16 heads). Keyword arguments override any preset value.
PRESETS = {
    "lvmae_tiny": dict(embed_dim=128, depth=4, num_heads=4, decoder_embed_dim=128, decoder_depth=2,
                       decoder_num_heads=4),
    "lvmae_d16": dict(embed_dim=1024, depth=16, num_heads=16, decoder_embed_dim=512, decoder_depth=8,
                      decoder_num_heads=16),
    "lvmae_d24": dict(embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_depth=8,
                      decoder_num_heads=16),
    "lvmae_d32": dict(embed_dim=1024, depth=32, num_heads=16, decoder_embed_dim=512, decoder_depth=8,
                      decoder_num_heads=16),
}


def preset_config(name: str, **overrides) -> dict:
    """Full constructor arguments of a preset, explicit (non-None) overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown --model {name!r}; presets: {', '.join(PRESETS)}")
    params = inspect.signature(LVMAE.__init__).parameters
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown model arguments {sorted(unknown)}")
    cfg = {k: p.default for k, p in params.items() if k != "self"}
    cfg.update(PRESETS[name])
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def _preset(name: str, **overrides) -> LVMAE:
    return LVMAE(**preset_config(name, **overrides))


lvmae_tiny = partial(_preset, "lvmae_tiny")
lvmae_d16 = partial(_preset, "lvmae_d16")
lvmae_d24 = partial(_preset, "lvmae_d24")
lvmae_d32 = partial(_preset, "lvmae_d32")

