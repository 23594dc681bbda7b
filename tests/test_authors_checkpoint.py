"""An authors' pretraining checkpoint, converted by `python -m preprocessing.import_reference
checkpoint` and loaded with `util.checkpoint.load_pretrained`, computes the authors' function.

The reference is written here from the published code's description (amazon-science/lv-mae:
`models_mae.py`, `data/CombinedData.py`, `engine_pretrain.py`), never from our model: every
sequence padded to `num_patches`; the encoder input is the visible embeddings in *shuffled*
order, each with the position of the segment it came from, `[CLS]` + its position first; an
attention mask where True means "ignore this key" (masked_fill -inf, then softmax); the decoder
puts the encoded visible tokens and mask tokens back in order with `ids_restore`; the loss is
the masked per-token MSE summed over the batch and divided by the batch's masked count. Their
model adds the unit-norm embeddings to the positions unscaled and has no input projection
(`embed_dim == input_size`).
"""
import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import models_lvmae
from preprocessing import import_reference
from util.checkpoint import FORMAT_VERSION, load_pretrained

E, DEPTH, HEADS, DEC, DEC_DEPTH, DEC_HEADS, NUM_PATCHES, RATIO = 64, 2, 4, 32, 2, 4, 32, 0.5
LENGTHS = [29, 20, 7, 3]  # ragged, all shorter than num_patches (the authors pad to it)


# --- the reference -------------------------------------------------------------------------------
def sincos(dim, n):
    """Fixed 1-D sin-cos positions with a zero [CLS] row, in numpy float64 as MAE's utility."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.arange(n, dtype=np.float64)[:, None] * omega[None]
    return np.concatenate([np.zeros((1, dim)), np.concatenate([np.sin(angles), np.cos(angles)], axis=1)], axis=0)


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ignore):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // self.heads)
        weights = scores.masked_fill(ignore[:, None, None, :], float("-inf")).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = RefAttention(dim, heads), RefMlp(dim)

    def forward(self, x, ignore):
        x = x + self.attn(self.norm1(x), ignore)
        return x + self.mlp(self.norm2(x))


class AuthorsMAE(nn.Module):
    """Parameter names as in the authors' state dict (their positions are stored parameters)."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.tensor(sincos(E, NUM_PATCHES), dtype=torch.float32)[None],
                                      requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(E, HEADS) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(E, eps=1e-6)
        self.decoder_embed = nn.Linear(E, DEC)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DEC))
        self.decoder_pos_embed = nn.Parameter(torch.tensor(sincos(DEC, NUM_PATCHES), dtype=torch.float32)[None],
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(RefBlock(DEC, DEC_HEADS) for _ in range(DEC_DEPTH))
        self.decoder_norm = nn.LayerNorm(DEC, eps=1e-6)
        self.decoder_pred = nn.Linear(DEC, E)

    def encoder(self, x, ignore, ids_shuffle=None, lengths=None):
        """x: [B, num_patches, E]; positions follow ids_shuffle (masked path) or the order."""
        if ids_shuffle is None:
            x = x + self.pos_embed[:, 1:]
        else:
            pos = torch.zeros_like(x)
            for i, n in enumerate(lengths):
                pos[i, :n] = self.pos_embed[0, 1:][ids_shuffle[i, :n]]
            x = x + pos
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x, ignore)
        return self.norm(x)

    def decoder(self, latent, ids_restore, num_keep, lengths):
        z = self.decoder_embed(latent)
        B, N1, C = z.shape
        rows, ignores = [], []
        for i, (n, k) in enumerate(zip(lengths, num_keep)):
            full = torch.cat([z[i, 1:k + 1], self.mask_token[0].expand(n - k, -1)])[ids_restore[i, :n]]
            seq = torch.cat([z[i, :1], full]) + self.decoder_pos_embed[0, :n + 1]
            rows.append(torch.cat([seq, seq.new_zeros(N1 - n - 1, C)]))
            ignores.append(torch.arange(N1) > n)
        x, ignore = torch.stack(rows), torch.stack(ignores)
        for blk in self.decoder_blocks:
            x = blk(x, ignore)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    @staticmethod
    def loss(target, pred, mask):
        per_token = ((pred - target) ** 2).mean(dim=-1)
        return (per_token * mask).sum() / mask.sum()


def authors_batch(videos, noises):
    """What their dataset yields (random masking), stacked: everything padded to num_patches."""
    out = {k: [] for k in ("inputs", "ignore", "target", "mask", "ids_shuffle", "ids_restore", "num_keep")}
    for x, noise in zip(videos, noises):
        n = len(x)
        keep = int(n * (1 - RATIO))
        ids_shuffle = torch.argsort(noise)
        ids_restore = torch.argsort(ids_shuffle)
        mask = torch.ones(n)
        mask[:keep] = 0
        mask = mask[ids_restore]
        pad = NUM_PATCHES - n
        out["inputs"].append(torch.cat([x[ids_shuffle[:keep]], torch.zeros(NUM_PATCHES - keep, E)]))
        out["ignore"].append(torch.cat([torch.zeros(keep + 1, dtype=torch.bool),
                                        torch.ones(NUM_PATCHES - keep, dtype=torch.bool)]))
        out["target"].append(torch.cat([x, torch.zeros(pad, E)]))
        out["mask"].append(torch.cat([mask, torch.zeros(pad)]))
        out["ids_shuffle"].append(torch.cat([ids_shuffle, torch.zeros(pad, dtype=torch.long)]))
        out["ids_restore"].append(torch.cat([ids_restore, torch.zeros(pad, dtype=torch.long)]))
        out["num_keep"].append(keep)
    return {k: torch.stack(v) if k != "num_keep" else v for k, v in out.items()}


def rel(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.fixture(scope="module")
def authors_run(tmp_path_factory):
    """An authors' model with weights moved off init, saved as their main_pretrain.py does, and
    the reference outputs on one ragged batch."""
    tmp = tmp_path_factory.mktemp("authors")
    torch.manual_seed(0)
    ref = AuthorsMAE()
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:  # never the fixed positions
                p.add_(torch.randn_like(p) * 0.1)
    args = argparse.Namespace(num_patches=NUM_PATCHES, input_size=E, depth=DEPTH, num_heads=HEADS,
                              decoder_embed_dim=DEC, decoder_depth=DEC_DEPTH, decoder_num_heads=DEC_HEADS,
                              mask_ratio=RATIO, cos_loss=False, masking_strategy=False, model="mae_vit_base_custom")
    torch.save({"model": ref.state_dict(), "optimizer": torch.optim.AdamW(ref.parameters()).state_dict(),
                "epoch": 150, "scaler": {}, "args": args}, tmp / "checkpoint-150.pth")

    g = torch.Generator().manual_seed(1)
    videos = [nn.functional.normalize(torch.randn(n, E, generator=g), dim=-1) for n in LENGTHS]
    noises = [torch.rand(n, generator=g) for n in LENGTHS]
    b = authors_batch(videos, noises)
    with torch.no_grad():
        latent = ref.encoder(b["inputs"], b["ignore"], b["ids_shuffle"], LENGTHS)
        pred = ref.decoder(latent, b["ids_restore"], b["num_keep"], LENGTHS)
        loss = AuthorsMAE.loss(b["target"], pred, b["mask"])
        full_ignore = torch.stack([torch.arange(NUM_PATCHES + 1) > n for n in LENGTHS])
        features = ref.encoder(b["target"], full_ignore)  # unmasked: every real segment, in order
    return dict(tmp=tmp, ref=ref, videos=videos, noises=noises, batch=b, latent=latent, pred=pred, loss=loss,
                features=features)


def ours_on(model, run):
    L = max(LENGTHS)
    x = torch.zeros(len(LENGTHS), L, E)
    noise = torch.ones(len(LENGTHS), L)
    for i, (v, nz) in enumerate(zip(run["videos"], run["noises"])):
        x[i, :len(v)], noise[i, :len(v)] = v, nz
    lengths = torch.tensor(LENGTHS)
    with torch.no_grad():
        loss, pred, mask = model(x, lengths, mask_ratio=RATIO, noise=noise)
        visible = (torch.arange(L)[None] < lengths[:, None]) & ~mask
        latent, _ = model.forward_encoder(x, visible)
        features, _ = model.forward_features(x, lengths)
    return dict(loss=loss, pred=pred, mask=mask, latent=latent, features=features)


def differences(ours, run):
    """Relative max differences over real positions, the authors' shuffled order undone."""
    b = run["batch"]
    enc_o, enc_t, pred_o, pred_t, feat_o, feat_t = [], [], [], [], [], []
    for i, (n, k) in enumerate(zip(LENGTHS, b["num_keep"])):
        assert torch.equal(ours["mask"][i, :n].float(), b["mask"][i, :n])  # the same masks
        order = torch.argsort(b["ids_shuffle"][i, :k])  # their visible rows back in position order
        enc_t.append(torch.cat([run["latent"][i, :1], run["latent"][i, 1:k + 1][order]]))
        enc_o.append(ours["latent"][i, :k + 1])
        masked = b["mask"][i, :n].bool()
        pred_t.append(run["pred"][i, :n][masked])
        pred_o.append(ours["pred"][i, :n][masked])
        feat_t.append(run["features"][i, :n + 1])
        feat_o.append(ours["features"][i, :n + 1])
    return {"encoder": rel(torch.cat(enc_o), torch.cat(enc_t)),
            "masked_predictions": rel(torch.cat(pred_o), torch.cat(pred_t)),
            "features": rel(torch.cat(feat_o), torch.cat(feat_t)),
            "loss": abs(ours["loss"].item() - run["loss"].item()) / run["loss"].item()}


def test_imported_checkpoint_computes_the_authors_function(authors_run):
    tmp = authors_run["tmp"]
    config = import_reference.main(["checkpoint", str(tmp / "checkpoint-150.pth"), "--out", str(tmp / "ours.pth")])
    assert config["input_scale"] == "none" and config["input_dim"] == config["embed_dim"] == E
    model, ckpt = load_pretrained(tmp / "ours.pth", input_dim=E)
    assert torch.load(tmp / "ours.pth", weights_only=True)["format_version"] == FORMAT_VERSION
    diff = differences(ours_on(model, authors_run), authors_run)
    print("imported vs the authors' forward pass:", diff)
    assert all(v <= 1e-5 for v in diff.values()), diff

    # The same weights in the sqrt(D)-scaled form compute another function (the defect this
    # import fixes): with input_dim == embed_dim no weight can undo the scale.
    scaled = models_lvmae.LVMAE(**{**config, "input_scale": "sqrt_dim"}).eval()
    scaled.load_state_dict(model.state_dict())
    wrong = differences(ours_on(scaled, authors_run), authors_run)
    print("the same weights, sqrt(D)-scaled:", wrong)
    assert min(wrong.values()) > 1e-2, wrong


@pytest.mark.parametrize("key", ["pos_embed", "decoder_pos_embed"])
def test_stored_positions_that_differ_are_refused(authors_run, key, tmp_path):
    ckpt = torch.load(authors_run["tmp"] / "checkpoint-150.pth", weights_only=False)
    ckpt["model"][key] = ckpt["model"][key].clone()
    ckpt["model"][key][0, 5, 3] += 1e-4  # trained or computed by another formula
    torch.save(ckpt, tmp_path / "moved.pth")
    with pytest.raises(SystemExit, match=rf"moved.pth: the stored {key} is not the fixed 1-D sin-cos"):
        import_reference.main(["checkpoint", str(tmp_path / "moved.pth"), "--out", str(tmp_path / "c.pth")])
    assert not (tmp_path / "c.pth").exists()
