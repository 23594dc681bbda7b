"""Loss normalization (`--loss_norm`): the weight the training loop gives each masked token,
measured through the real epoch loop (`engine_pretrain.train_one_epoch`, the real windows and
sampler) with a stand-in model whose loss is one parameter per video times its masked tokens:
after backward, that parameter's gradient is the total weight of the video's masked tokens."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from datasets.pretrain import PretrainWindows, StepBatchSampler, collate_windows
from engine_pretrain import train_one_epoch
from models_lvmae import make_mask, num_visible

SHORT = 25  # windows of <= 25 segments (<= 125 s): where no long-range structure lives


class LongVideos:
    """A store stand-in: ``n`` videos of 300 segments; every vector holds its video's number."""

    def __init__(self, n, length=300):
        self.video_ids = [f"v{i}" for i in range(n)]
        self.length = length
        self.manifest = {"stride_seconds": 5.0}

    def lengths(self, ids):
        return np.full(len(ids), self.length, dtype=np.int64)

    def get(self, vid, start, stop):
        return np.full((stop - start, 1), float(vid[1:]), dtype=np.float32)


class TokenWeights(nn.Module):
    """loss = sum over masked tokens of theta[video] / num_masked (the model's contract)."""

    def __init__(self, n):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.register_buffer("tokens", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("window", torch.zeros(n, dtype=torch.long))

    def forward(self, x, lengths, mask_ratio, masking, noise, num_masked, cos_loss):
        mask = make_mask(x, lengths, mask_ratio, masking, noise)
        ids = x[:, 0, 0].long()
        self.tokens.index_add_(0, ids, mask.sum(1).double())
        self.window[ids] = lengths
        total = (self.theta[ids][:, None] * mask).sum()
        norm = mask.sum() if num_masked is None else torch.as_tensor(num_masked, dtype=total.dtype)
        return total / norm.clamp(min=1), None, mask


class SumGradients:
    """An "optimizer" that adds up the gradients of every step instead of stepping."""

    def __init__(self, param):
        self.param, self.param_groups = param, [{"params": [param], "lr": 0.0}]
        self.total = torch.zeros_like(param)

    def step(self):
        self.total += self.param.grad

    def zero_grad(self, set_to_none=True):
        self.param.grad = None


def weights(num_videos, loss_norm, group, batch_size=16, accum_iter=1, seed=0):
    """Per-video total weight, masked tokens and window length over one epoch."""
    ds = PretrainWindows(LongVideos(num_videos), seed=seed)  # U[10, 1280] s windows, 5-s segments
    sampler = StepBatchSampler(ds.window_lengths, len(ds), batch_size, accum_iter, seed=seed, group_by_length=group)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_windows)
    model = TokenWeights(num_videos)
    opt = SumGradients(model.theta)
    args = SimpleNamespace(accum_iter=accum_iter, mask_ratio=0.5, masking="random", cos_loss=False, amp="none",
                           loss_norm=loss_norm, lr=1e-3, min_lr=0.0, warmup_epochs=0, epochs=1)
    train_one_epoch(model, loader, opt, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), 0, args,
                    show_progress=False)
    return opt.total, model.tokens, model.window, sampler


def short_over_long(num_videos, loss_norm, group):
    """Per-token weight of short windows' tokens over that of the other windows' tokens."""
    w, tokens, window, _ = weights(num_videos, loss_norm, group)
    short = window <= SHORT
    return ((w[short].sum() / tokens[short].sum()) / (w[~short].sum() / tokens[~short].sum())).item()


@pytest.mark.parametrize("group", [True, False])
def test_epoch_normalization_weighs_every_masked_token_the_same(group):
    ratio = short_over_long(4000, "epoch", group)
    print(f"epoch, group_by_length={group}: short / long per-token weight {ratio:.3f}")
    assert ratio == pytest.approx(1.0, rel=0.05)


def test_step_normalization_with_grouping_overweights_short_windows():
    """What `--loss_norm step` (the normalization before `epoch`) does with the default grouping:
    steps of short windows have few masked tokens, so each of them weighs more."""
    ratio = short_over_long(4000, "step", True)
    print(f"step, grouped: short / long per-token weight {ratio:.3f}")
    assert ratio > 3


@pytest.mark.parametrize("loss_norm", ["epoch", "step", "authors"])
def test_normalizers_are_the_documented_counts(loss_norm):
    """Per video, the weight of each masked token is 1 / the documented normalizer, computed here
    from the sampler's plan: the epoch's mean masked tokens per step, the step's masked tokens,
    or the micro-batch's own masked tokens x accum_iter (the authors' code)."""
    accum = 2
    w, tokens, window, sampler = weights(200, loss_norm, True, batch_size=4, accum_iter=accum)
    lengths = torch.as_tensor(sampler.lengths(0))
    masked = lengths - num_visible(lengths, 0.5)  # per item
    expected = torch.zeros(len(lengths), dtype=torch.float64)
    steps = sampler.steps(0)
    epoch_norm = masked[torch.as_tensor(steps)].sum().item() / len(steps)
    for step in steps:
        for micro in np.split(step, accum):
            norm = {"epoch": epoch_norm, "step": masked[step].sum().item(),
                    "authors": masked[micro].sum().item() * accum}[loss_norm]
            for i in micro:
                expected[i] += masked[i].item() / norm
    assert torch.equal(window, lengths) and torch.equal(tokens, masked.double())  # each item once
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
