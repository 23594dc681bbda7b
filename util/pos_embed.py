"""Fixed 1-D sin-cos positional embeddings (MAE's ``get_1d_sincos_pos_embed_from_grid``)."""
from __future__ import annotations

import torch


def get_1d_sincos_pos_embed(embed_dim: int, length: int, cls_token: bool = False,
                            device=None) -> torch.Tensor:
    """``[length (+1), embed_dim]`` float32: first half sin, second half cos of
    ``pos * omega_i`` with ``omega_i = 1 / 10000^(2i / D)``; a zero row first for ``[CLS]``."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos positions need an even embedding dim, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=device) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    pos = torch.arange(length, dtype=torch.float64, device=device)
    out = torch.outer(pos, omega)
    emb = torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, device=device), emb], dim=0)
    return emb
