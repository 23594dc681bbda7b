"""LV-MAE model: the batched forward equals a slow per-sample reference; mask semantics."""
import math

import pytest
import torch
import torch.nn.functional as F

import models_lvmae
from models_lvmae import LVMAE, make_mask, num_visible, preset_config
from util.pos_embed import get_1d_sincos_pos_embed

D = 12


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2,
               max_len=32, input_dim=D)
    cfg.update(kw)
    return LVMAE(**cfg).eval()


def ragged(lengths, garbage=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    x = torch.randn(len(lengths), L, D, generator=g)
    lengths = torch.tensor(lengths)
    if garbage:  # padding full of garbage, NaN and inf: none of it may reach any output
        pad = torch.arange(L)[None] >= lengths[:, None]
        junk = torch.randn(x.shape, generator=g) * 1e6
        junk[..., 0] = float("nan")
        junk[..., 1] = float("inf")
        x = torch.where(pad[..., None], junk, x)
    return x, lengths


# --- slow reference: one sample at a time, no padding, no gather tricks ----------------------------
def run_blocks(blocks, x):
    for blk in blocks:
        x = blk(x)
    return x


def scale_of(model):
    """The documented input scale: sqrt(input dim) for "sqrt_dim", 1 for "none" (the paper's form)."""
    return {"sqrt_dim": math.sqrt(D), "none": 1.0}[model.config["input_scale"]]


def reference_sample(model, x, mask):
    """x: [n, D] real segments of one video, mask: [n] bool. Returns (loss sum, pred [n, D], #masked)."""
    n = x.shape[0]
    pos = get_1d_sincos_pos_embed(model.embed_dim, n, cls_token=True)
    dpos = get_1d_sincos_pos_embed(model.decoder_embed_dim, n, cls_token=True)
    h = model.input_proj(x * scale_of(model)) + pos[1:]
    vis_idx = [i for i in range(n) if not mask[i]]
    enc_in = torch.cat([model.cls_token[0] + pos[:1], h[vis_idx]], dim=0)[None]
    latent = model.norm(run_blocks(model.blocks, enc_in))[0]
    z = model.decoder_embed(latent)
    rows = [z[0]]
    k = 1
    for i in range(n):
        if mask[i]:
            rows.append(model.mask_token[0, 0])
        else:
            rows.append(z[k])
            k += 1
    dec = torch.stack(rows) + dpos
    out = model.decoder_pred(model.decoder_norm(run_blocks(model.decoder_blocks, dec[None])))[0, 1:] / scale_of(model)
    per_token = ((out - x) ** 2).mean(-1)
    return (per_token * mask).sum(), out, int(mask.sum())


def reference_features(model, x):
    n = x.shape[0]
    pos = get_1d_sincos_pos_embed(model.embed_dim, n, cls_token=True)
    h = torch.cat([model.cls_token[0] + pos[:1], model.input_proj(x * scale_of(model)) + pos[1:]])[None]
    return model.norm(run_blocks(model.blocks, h))[0]


@pytest.mark.parametrize("input_scale", ["sqrt_dim", "none"])
@pytest.mark.parametrize("input_dim", [D, None])
def test_batched_equals_per_sample_reference(input_dim, input_scale):
    model = tiny(input_dim=input_dim, embed_dim=D if input_dim is None else 16, input_scale=input_scale)
    assert model.config["input_scale"] == input_scale  # recorded: a checkpoint reloads the same function
    x, lengths = ragged([7, 3, 11, 2, 1, 5])
    with torch.no_grad():
        loss, pred, mask = model(x, lengths, mask_ratio=0.4)
        tokens, pad = model.forward_features(x, lengths)
    assert torch.isfinite(loss) and torch.isfinite(pred).all() and torch.isfinite(tokens).all()
    total, count = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        with torch.no_grad():
            s, ref_pred, m = reference_sample(model, x[b, :n], mask[b, :n])
            ref_feat = reference_features(model, x[b, :n])
        total, count = total + s, count + m
        torch.testing.assert_close(pred[b, :n], ref_pred, atol=1e-5, rtol=1e-4)
        assert (pred[b, n:] == 0).all()
        torch.testing.assert_close(tokens[b, :n + 1], ref_feat, atol=1e-5, rtol=1e-4)
        assert (tokens[b, n + 1:] == 0).all() and pad[b, n + 1:].all() and not pad[b, :n + 1].any()
    torch.testing.assert_close(loss, total / count, atol=1e-6, rtol=1e-5)


def test_explicit_mask_is_padding_invariant():
    model = tiny()
    x, lengths = ragged([9, 4, 13])
    mask = torch.zeros(3, 13, dtype=torch.bool)
    mask[0, [1, 4, 8]] = True
    mask[1, [2]] = True
    mask[2, [0, 5, 6, 12]] = True
    with torch.no_grad():
        _, pred, m = model(x, lengths, mask=mask)
        for b, n in enumerate(lengths.tolist()):
            _, alone, m1 = model(x[b:b + 1, :n], lengths[b:b + 1], mask=mask[b:b + 1, :n])
            torch.testing.assert_close(pred[b, :n], alone[0], atol=1e-5, rtol=1e-4)
            assert torch.equal(m[b, :n], m1[0])


def test_gradients_match_reference_and_ignore_padding():
    model = tiny().train()
    x, lengths = ragged([6, 3, 9])
    mask = make_mask(torch.nan_to_num(x), lengths, 0.5, "random", noise=torch.rand(3, 9, generator=torch.Generator().manual_seed(3)))
    loss, _, _ = model(x, lengths, mask=mask)
    grads = torch.autograd.grad(loss, model.blocks[0].attn.qkv.weight)[0]
    assert torch.isfinite(grads).all()
    ref_model = tiny().train()
    ref_model.load_state_dict(model.state_dict())
    total, count = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        s, _, m = reference_sample(ref_model, x[b, :n], mask[b, :n])
        total, count = total + s, count + m
    ref_grads = torch.autograd.grad(total / count, ref_model.blocks[0].attn.qkv.weight)[0]
    torch.testing.assert_close(grads, ref_grads, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.4, 0.5, 0.7, 0.75, 0.9, 0.99])
def test_visible_count_rule(ratio):
    lengths = torch.arange(0, 300)
    keep = num_visible(lengths, ratio)
    for n in range(300):
        expected = n if n < 2 else min(max(int(n * (1 - ratio)), 1), n - 1)
        assert keep[n].item() == expected, (n, ratio)


@pytest.mark.parametrize("masking", models_lvmae.MASKINGS)
def test_mask_counts_and_padding(masking):
    x, lengths = ragged([10, 1, 2, 7, 0 + 3], garbage=False)
    mask = make_mask(x, lengths, 0.5, masking)
    valid = torch.arange(x.shape[1])[None] < lengths[:, None]
    assert not (mask & ~valid).any()
    assert torch.equal(mask.sum(1), lengths - num_visible(lengths, 0.5))
    assert mask[1].sum() == 0  # one segment: nothing masked, carries no loss
    assert mask[2].sum() == 1


def test_random_masking_follows_noise():
    x, lengths = ragged([6, 4], garbage=False)
    noise = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2], [0.7, 0.1, 0.4, 0.2, 0.0, 0.0]])
    mask = make_mask(x, lengths, 0.5, "random", noise=noise)
    # lowest noise kept (MAE): sample 0 keeps {0, 5, 3}, sample 1 keeps {1, 3}
    assert mask[0].tolist() == [False, True, True, False, True, False]
    assert mask[1].tolist() == [True, False, True, False, False, False]


def _sequence_with_similarities(sims):
    """Unit vectors whose cosine to their predecessor is exactly ``sims[i-1]`` (2-D rotations)."""
    angles = [0.0]
    for s in sims:
        angles.append(angles[-1] + math.acos(s))
    v = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    return F.pad(v, (0, D - 2))[None]


def test_semantic_masking_picks_documented_indices():
    sims = [0.9, 0.2, 0.5, 0.3, 0.95, 0.1, 0.7]  # cos(e_i, e_{i-1}) for i = 1..7
    x = _sequence_with_similarities(sims)
    lengths = torch.tensor([8])
    # 50% of 8 -> 4 visible, 4 masked. semantic: the 4 least similar to their predecessor:
    # i=6 (0.1), i=2 (0.2), i=4 (0.3), i=3 (0.5); segment 0 never.
    mask = make_mask(x, lengths, 0.5, "semantic")
    assert torch.nonzero(mask[0]).flatten().tolist() == [2, 3, 4, 6]
    # semantic_inverse masks the most redundant: 0.95 (i=5), 0.9 (i=1), 0.7 (i=7), 0.5 (i=3)
    mask = make_mask(x, lengths, 0.5, "semantic_inverse")
    assert torch.nonzero(mask[0]).flatten().tolist() == [1, 3, 5, 7]
    assert make_mask(x, lengths, 0.5, "semantic").equal(make_mask(x, lengths, 0.5, "semantic"))


def test_semantic_ties_go_to_the_lower_index():
    # p, a, b, a, b, q: the similarities at i = 2, 3, 4 are all cos(a, b), bitwise equal
    v = _sequence_with_similarities([0.9, 0.2])[0]  # p, a, b
    q = _sequence_with_similarities([0.95])[0] @ torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0)))[0]
    x = torch.stack([v[0], v[1], v[2], v[1], v[2], v[2] * 0.5 + q[1] * 0.1])[None]
    lengths = torch.tensor([6])
    ratio = 1 / 3  # keep int(6 * (2/3)) = 4, mask 2
    assert torch.nonzero(make_mask(x, lengths, ratio, "semantic")[0]).flatten().tolist() == [2, 3]
    assert torch.nonzero(make_mask(x, lengths, 0.5, "semantic")[0]).flatten().tolist() == [2, 3, 4]
    # inverse: the highest similarities are i=5 and i=1, then the tie -> lowest index 2
    sims = F.cosine_similarity(x[0, 1:], x[0, :-1], dim=-1)
    assert sims[4] > sims[0] > sims[1] == sims[2] == sims[3]
    assert torch.nonzero(make_mask(x, lengths, 0.5, "semantic_inverse")[0]).flatten().tolist() == [1, 2, 5]
    x = torch.ones(1, 6, D)  # every similarity is 1: all tied
    assert torch.nonzero(make_mask(x, lengths, 0.5, "semantic")[0]).flatten().tolist() == [1, 2, 3]
    assert torch.nonzero(make_mask(x, lengths, 0.5, "semantic_inverse")[0]).flatten().tolist() == [1, 2, 3]


def test_loss_normalization_by_external_count():
    model = tiny()
    x, lengths = ragged([8, 5])
    noise = torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, _, mask = model(x, lengths, 0.5, noise=noise)
        loss_ext, _, _ = model(x, lengths, 0.5, noise=noise, num_masked=40)
    torch.testing.assert_close(loss_ext * 40, loss * mask.sum())


def test_nothing_masked_gives_zero_loss_not_nan():
    model = tiny().train()
    x, lengths = ragged([1, 1])
    loss, _, mask = model(x, lengths, 0.5)
    assert mask.sum() == 0 and loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_cos_loss():
    model = tiny()
    x, lengths = ragged([6, 4])
    with torch.no_grad():
        loss, pred, mask = model(x, lengths, 0.5, cos_loss=True)
    valid_x = torch.nan_to_num(x, nan=0.0, posinf=0.0)
    per = 1 - F.cosine_similarity(pred, valid_x, dim=-1)
    torch.testing.assert_close(loss, (per * mask).sum() / mask.sum())


def test_bad_arguments():
    model = tiny()
    x, lengths = ragged([4])
    for ratio in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="--mask_ratio"):
            model(x, lengths, mask_ratio=ratio)
    with pytest.raises(ValueError, match="--masking"):
        model(x, lengths, masking="block")
    with pytest.raises(ValueError, match="unknown --model 'lvmae_huge'"):
        preset_config("lvmae_huge")
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 40, D), torch.tensor([40]))
    with pytest.raises(ValueError, match="--input_size"):
        model(torch.zeros(1, 4, D + 1), torch.tensor([4]))
    with pytest.raises(ValueError, match="unknown --input_scale 'sqrt'"):
        tiny(input_scale="sqrt")


def test_presets_names_and_longer_max_len():
    cfg = preset_config("lvmae_d32", input_dim=768)
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["decoder_embed_dim"], cfg["decoder_depth"],
            cfg["decoder_num_heads"], cfg["input_dim"]) == (1024, 32, 16, 512, 8, 16, 768)
    assert preset_config("lvmae_d16")["depth"] == 16 and preset_config("lvmae_d24")["depth"] == 24
    assert preset_config("lvmae_tiny", depth=3)["depth"] == 3
    for name in ("lvmae_tiny", "lvmae_d16", "lvmae_d24", "lvmae_d32"):
        assert callable(models_lvmae.__dict__[name])
    model = tiny()
    names = set(model.state_dict())
    assert {"cls_token", "mask_token", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "norm.weight",
            "decoder_embed.weight", "decoder_blocks.0.attn.proj.weight", "decoder_norm.weight",
            "decoder_pred.weight"} <= names
    assert not any("pos_embed" in n for n in names)  # positions recomputed, not stored
    longer = tiny(max_len=512)
    longer.load_state_dict(model.state_dict())
    x, lengths = ragged([10, 6])
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x, lengths)[0], longer.forward_features(x, lengths)[0])
    assert LVMAE(**model.config).config == model.config


def test_pos_embed_matches_mae_formula():
    pe = get_1d_sincos_pos_embed(8, 5, cls_token=True)
    assert pe.shape == (6, 8) and (pe[0] == 0).all()
    pos, i = 3, 1
    omega = 1 / 10000 ** (2 * i / 8)
    assert math.isclose(pe[1 + pos, i].item(), math.sin(pos * omega), rel_tol=1e-6)
    assert math.isclose(pe[1 + pos, 4 + i].item(), math.cos(pos * omega), rel_tol=1e-6)
