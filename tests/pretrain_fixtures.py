"""Shared by tests/test_pretrain_*.py: tiny embedding stores and the tiny-model flags."""
from __future__ import annotations

import numpy as np
import torch

from datasets.store import StoreWriter, make_manifest

# A model small enough that a pretraining epoch on a 40-video store takes well under a second.
TINY_MODEL = ["--model", "lvmae_tiny", "--embed_dim", "16", "--depth", "1", "--num_heads", "2",
              "--decoder_embed_dim", "16", "--decoder_depth", "1", "--decoder_num_heads", "2"]


def write_store(root, lengths, dim=8, encoder="test:tiny", seed=0, segment_seconds=5.0):
    """A store of ``len(lengths)`` videos ``v000...`` with random unit vectors."""
    rng = np.random.default_rng(seed)
    with StoreWriter(root, "t", make_manifest(encoder, dim, segment_seconds=segment_seconds)) as w:
        for i, n in enumerate(lengths):
            w.add(f"v{i:03d}", rng.standard_normal((int(n), dim)).astype(np.float32), duration_s=segment_seconds * n)
    return root


def assert_params_close(a: dict, b: dict, rtol=1e-4, atol=1e-5):
    """State dicts equal up to float summation order. The key third of every ``qkv.bias`` is
    left out: softmax is invariant to it, so its true gradient is 0 and Adam turns the
    summation-order noise of that 0 into steps of size ~lr in either direction."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.qkv.bias"):
            q, _, v = x.chunk(3)
            x = torch.cat([q, v])
            q, _, v = y.chunk(3)
            y = torch.cat([q, v])
        torch.testing.assert_close(y, x, rtol=rtol, atol=atol, msg=k)


def assert_optimizer_close(a: dict, b: dict, rtol=1e-4, atol=1e-6):
    """Adam's moments equal: unlike the parameters (Adam is invariant to a uniform gradient
    scale), ``exp_avg`` catches a loss normalized by the wrong count of masked tokens."""
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sb[i][k], sa[i][k], rtol=rtol, atol=atol, msg=f"param {i} {k}")
