"""The symmetric video-text InfoNCE of CLIP, as the masked contrastive recipe uses it
(Papalampidi et al., CVPR 2024; docs/contrastive.md).

For ``B`` pairs with L2-normalized video embeddings ``v_i`` and text embeddings ``t_i`` and the
learnable scale ``s`` (``exp(logit_scale)``, clamped at 100), the logits are ``s * v_i . t_j``
and the loss is the mean of the video->text and text->video cross-entropies with the diagonal as
targets. Pairs that are not each other's negatives -- the same video twice (the sampler repeats
items to fill its last step) or two identical texts -- are removed from the off-diagonal logits
(set to ``-inf``), so a text is never pushed away from a video it also describes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def negatives_mask(video_keys: torch.Tensor, text_keys: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` bool, True where ``j`` is a negative of ``i``: ``i != j``, another video and
    another text. ``video_keys`` / ``text_keys`` ``[B]`` int: equal for the same video / text."""
    same = (video_keys[:, None] == video_keys[None]) | (text_keys[:, None] == text_keys[None])
    eye = torch.eye(len(video_keys), dtype=torch.bool, device=video_keys.device)
    return ~same | eye  # the diagonal stays: it is the positive


def info_nce(video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, video_keys: torch.Tensor | None = None,
             text_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of ``B`` pairs (module docstring): mean over the ``2B`` cross-entropies.
    ``video`` / ``text`` ``[B, D]`` L2-normalized; keys ``[B]`` (None: all distinct)."""
    logits = scale * video.float() @ text.float().T
    if video_keys is not None or text_keys is not None:
        B = len(video)
        ar = torch.arange(B, device=video.device)
        keep = negatives_mask(ar if video_keys is None else video_keys, ar if text_keys is None else text_keys)
        logits = logits.masked_fill(~keep, float("-inf"))
    targets = torch.arange(len(video), device=video.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
