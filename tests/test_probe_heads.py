"""Probe heads (models_probe.py) and the batch gathering of datasets/labelled.py: padding and
[CLS] are handled exactly (the authors' probe had an off-by-one in its attention mask)."""
import numpy as np
import pytest
import torch

from datasets.labelled import LabelledSequences
from models_probe import AttentiveProbe, LinearProbe, cls_block, default_heads, masked_mean
from util.pos_embed import get_1d_sincos_pos_embed
from util.long_video import VideoFeatures

torch.manual_seed(0)


def padded(lengths, dim, fill=float("nan"), seed=0):
    """Random tokens [B, L, D] with ``fill`` at padding, and pad [B, L]."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    x = torch.randn(len(lengths), L, dim, generator=g)
    pad = torch.arange(L)[None] >= torch.tensor(lengths)[:, None]
    return x.masked_fill(pad[..., None], fill), pad


@pytest.mark.parametrize("own_cls", [False, True])
def test_attentive_probe_equals_unpadded_per_sample_reference(own_cls):
    """Each sample's output equals the sample run alone without padding, whatever (even NaN)
    fills the padding of its batch."""
    torch.manual_seed(1)
    head = AttentiveProbe(32, 5, num_heads=4, own_cls=own_cls).eval()
    lengths = [1, 4, 9, 6]
    x, pad = padded(lengths, 32)
    cls = torch.randn(len(lengths), 32)
    with torch.no_grad():
        out = head(cls, x, pad)
        for i, n in enumerate(lengths):
            alone = head(cls[i:i + 1], x[i:i + 1, :n], pad[i:i + 1, :n])
            torch.testing.assert_close(out[i:i + 1], alone, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("own_cls", [False, True])
def test_attentive_probe_mask_has_no_off_by_one(own_cls):
    """The last real token is attended and the first padding position is not: a mask shifted by
    the [CLS] column would get exactly these two wrong."""
    torch.manual_seed(2)
    head = AttentiveProbe(16, 3, num_heads=2, own_cls=own_cls).eval()
    x, pad = padded([5, 8], 16, fill=0.0)
    cls = torch.randn(2, 16)
    bump = 3.0 * torch.randn(16)  # not a constant: LayerNorm would remove a constant shift
    with torch.no_grad():
        base = head(cls, x, pad)
        last_real = x.clone()
        last_real[0, 4] += bump
        assert not torch.allclose(head(cls, last_real, pad)[0], base[0], atol=1e-4)
        first_pad = x.clone()
        first_pad[0, 5] += bump
        torch.testing.assert_close(head(cls, first_pad, pad), base)
        if not own_cls:  # the encoder's [CLS] is the query: it must matter
            assert not torch.allclose(head(cls + bump, x, pad), base, atol=1e-4)


def test_raw_probe_sees_order_but_lvmae_probe_takes_positions_from_the_encoder():
    torch.manual_seed(3)
    x, pad = padded([6], 16, fill=0.0)
    flipped = x.flip(1)
    cls = torch.zeros(1, 16)
    with torch.no_grad():
        raw = AttentiveProbe(16, 3, num_heads=2, own_cls=True).eval()
        assert not torch.allclose(raw(cls, x, pad), raw(cls, flipped, pad), atol=1e-4)
        enc = AttentiveProbe(16, 3, num_heads=2).eval()  # no positions of its own: a set function
        torch.testing.assert_close(enc(cls, x, pad), enc(cls, flipped, pad), rtol=1e-5, atol=1e-5)


def test_cls_block_is_row_zero_of_the_full_timm_block():
    torch.manual_seed(4)
    head = AttentiveProbe(48, 2, num_heads=6)
    x = torch.randn(7, 11, 48)
    keep = torch.rand(7, 11) > 0.4
    keep[:, 0] = True
    full = head.block(x, attn_mask=keep[:, None, None, :])[:, 0]
    torch.testing.assert_close(cls_block(head.block, x, keep), full, rtol=1e-5, atol=1e-5)
    # and its gradient flows into every parameter the full block's row 0 depends on
    cls_block(head.block, x, keep).sum().backward()
    assert all(p.grad is not None for p in head.block.parameters())


def test_linear_probe_mean_excludes_cls_and_padding():
    torch.manual_seed(5)
    head = LinearProbe(8, 3)
    lengths = [3, 1, 5]
    x, pad = padded(lengths, 8)  # NaN padding
    cls = torch.randn(3, 8)
    expected = torch.stack([x[i, :n].mean(0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(masked_mean(x, pad), expected)
    out = head(cls, x, pad)
    torch.testing.assert_close(out, head.head(expected))
    torch.testing.assert_close(head(cls * 100 + 5, x, pad), out)  # [CLS] never enters the mean


def test_default_heads_divide_width():
    for width in (8, 32, 64, 100, 128, 768, 1024):
        h = default_heads(width)
        assert width % h == 0 and 1 <= h <= 16
    assert default_heads(1024) == 16 and default_heads(64) == 4


def test_labelled_sequences_batch_matches_slow_gather():
    rng = np.random.default_rng(0)
    lengths = np.array([3, 1, 7, 2, 5])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.standard_normal((offsets[-1], 4)).astype(np.float32)
    feats = VideoFeatures([f"v{i}" for i in range(5)], rng.standard_normal((5, 4)).astype(np.float32), tokens, offsets)
    data = LabelledSequences(feats, np.arange(5) % 2)
    idx = torch.tensor([4, 1, 2])
    cls, x, pad, y = data.batch(idx)
    assert x.shape == (3, 7, 4) and pad.shape == (3, 7)
    for row, i in enumerate(idx.tolist()):
        n = lengths[i]
        np.testing.assert_array_equal(x[row, :n].numpy(), tokens[offsets[i]:offsets[i + 1]])
        assert (x[row, n:] == 0).all() and pad[row, n:].all() and not pad[row, :n].any()
        np.testing.assert_array_equal(cls[row].numpy(), feats.cls[i])
    assert y.tolist() == [0, 1, 0]
    seen = torch.cat([b[3] for b in data.batches(2, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted((np.arange(5) % 2).tolist())


def test_own_cls_without_positions_is_order_blind_and_positions_need_own_cls():
    """--probe_positions none on raw embeddings (own [CLS], Linear + LayerNorm, no positions) is a
    set function; with positions it is not; the encoder path cannot take the probe's positions."""
    torch.manual_seed(6)
    x, pad = padded([7], 16, fill=0.0)
    cls = torch.zeros(1, 16)
    with torch.no_grad():
        blind = AttentiveProbe(16, 3, num_heads=2, own_cls=True, positions=False).eval()
        torch.testing.assert_close(blind(cls, x, pad), blind(cls, x.flip(1), pad), rtol=1e-5, atol=1e-5)
        seeing = AttentiveProbe(16, 3, num_heads=2, own_cls=True, positions=True).eval()
        seeing.load_state_dict(blind.state_dict())  # same weights: only the positions differ
        assert not torch.allclose(seeing(cls, x, pad), seeing(cls, x.flip(1), pad), atol=1e-4)
        # the positions are exactly MAE's sin-cos rows added after Linear + LayerNorm
        tokens = blind.embed(x) + get_1d_sincos_pos_embed(16, 7)
        keep = torch.ones(1, 8, dtype=torch.bool)
        first = blind.cls_token.expand(1, -1, -1)
        expected = seeing.head(seeing.norm(cls_block(seeing.block, torch.cat([first, tokens], 1), keep)))
        torch.testing.assert_close(seeing(cls, x, pad), expected)
    with pytest.raises(ValueError, match="own \\[CLS\\]"):
        AttentiveProbe(16, 3, num_heads=2, own_cls=False, positions=True)


def test_linear_probe_standardizes_with_training_statistics():
    """Standardized head = target_mean + target_std * Linear((mean - mu) / sd), statistics from
    the training features / targets given, population std; a constant coordinate keeps scale 1."""
    torch.manual_seed(7)
    feats = torch.randn(50, 6, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4, 5, 0]) + 7
    targets = torch.randn(50, dtype=torch.float64) * 3 + 10
    head = LinearProbe(6, 1).standardize(feats, targets)
    np.testing.assert_allclose(head.feature_mean.numpy(), feats.numpy().mean(0), rtol=1e-6)
    sd = feats.numpy().std(0)
    sd[5] = 1.0
    np.testing.assert_allclose(head.feature_std.numpy(), sd, rtol=1e-6)
    assert abs(float(head.target_mean) - targets.numpy().mean()) < 1e-4
    assert abs(float(head.target_std) - targets.numpy().std()) < 1e-4
    x, pad = padded([3, 5], 6, seed=8)
    mean = torch.stack([x[0, :3].mean(0), x[1, :5].mean(0)])
    z = (mean - head.feature_mean) / head.feature_std
    expected = (z @ head.head.weight.T + head.head.bias) * head.target_std + head.target_mean
    torch.testing.assert_close(head(None, x, pad), expected)
    with torch.no_grad():  # a zero linear layer predicts the training mean, in the task's units
        head.head.weight.zero_()
        head.head.bias.zero_()
    torch.testing.assert_close(head(None, x, pad)[:, 0], torch.full((2,), float(head.target_mean)))
    assert set(head.state_dict()) >= {"feature_mean", "feature_std", "target_mean", "target_std"}
