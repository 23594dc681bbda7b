"""The synthetic corpus: layout, determinism, and that its planted structure is really there."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from datasets import synthetic
from datasets.store import EmbeddingStore

ARGS = ["--num_videos", "700", "--num_pretrain", "20", "--num_movies", "2", "--dim", "64", "--num_scenes", "16"]


@pytest.fixture(scope="module", params=["plain", "grown"])
def corpus(request, tmp_path_factory):
    """700 labelled videos; "grown": 100 drawn as usual and 600 through --extra_videos, so the
    difficulty tests below also pin the extra videos' difficulty."""
    out = tmp_path_factory.mktemp("syn") / "corpus"
    args = ARGS if request.param == "plain" else [*ARGS[:1], "100", *ARGS[2:], "--extra_videos", "600"]
    synthetic.main(["--out", str(out), *args])
    return out


def split(corpus, task, name):
    return pd.read_csv(corpus / "tasks" / task / f"{name}.csv", dtype={"video_id": str})


def linear_probe(x_tr, y_tr, x_te, y_te, regression=False):
    """Standardized features, L2-regularized linear model fit to convergence (LBFGS)."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    xtr, xte = torch.tensor((x_tr - mu) / sd), torch.tensor((x_te - mu) / sd)
    torch.manual_seed(0)
    head = torch.nn.Linear(xtr.shape[1], 1 if regression else int(y_tr.max()) + 1).double()
    opt = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    ytr = torch.tensor(y_tr)

    def closure():
        opt.zero_grad()
        out = head(xtr)
        loss = (torch.nn.functional.mse_loss(out[:, 0], ytr) if regression
                else torch.nn.functional.cross_entropy(out, ytr)) + 1e-2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        out = head(xte)
    return float(((out[:, 0].numpy() - y_te) ** 2).mean()) if regression else float((out.argmax(1).numpy() == y_te).mean())


def features(store, vids, protos, kind, shuffle=False):
    rng = np.random.default_rng(0)
    rows = []
    for v in vids:
        x = store.get(v)
        if shuffle:
            x = x[rng.permutation(len(x))]
        if kind == "mean":
            rows.append(x.mean(0))
        else:  # order-aware: histogram of scene -> next-scene transitions (nearest prototype)
            s = (x @ protos.T).argmax(1)
            change = s[1:] != s[:-1]
            h = np.zeros((len(protos), len(protos)))
            np.add.at(h, (s[:-1][change], s[1:][change]), 1.0)
            rows.append(h.ravel() / max(1.0, h.sum()))
    return np.stack(rows).astype(np.float64)


def probe(corpus, task, kind, shuffle=False):
    store = EmbeddingStore(corpus / "benchmark")
    protos = np.load(corpus / "prototypes.npy")
    tr, te = split(corpus, task, "train"), split(corpus, task, "test")
    reg = task == "pace"
    y_tr = tr.label.to_numpy(np.float64 if reg else np.int64)
    y_te = te.label.to_numpy(np.float64 if reg else np.int64)
    return linear_probe(features(store, tr.video_id, protos, kind, shuffle), y_tr,
                        features(store, te.video_id, protos, kind, shuffle), y_te, reg)


def test_layout(corpus):
    tasks = json.loads((corpus / "tasks" / "tasks.json").read_text())
    assert tasks["grammar"] == {"type": "classification", "num_classes": 4, "chance": 0.25}
    assert tasks["pace"]["type"] == "regression"
    bench, pre = EmbeddingStore(corpus / "benchmark"), EmbeddingStore(corpus / "pretrain")
    assert len(bench) == 700 and len(pre) == 22 and not set(bench.video_ids) & set(pre.video_ids)
    assert bench.manifest["encoder"] == "synthetic:seed0" and bench.dim == 64
    ids = [set(split(corpus, "grammar", s).video_id) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(bench.video_ids)
    assert max(pre.lengths()) >= 240  # the movies are long: >= 20 min of 5-s segments
    captions = pd.read_csv(corpus / "captions.csv", dtype={"video_id": str})
    assert len(captions) == bench.lengths().sum() + pre.lengths().sum()
    grammars = np.load(corpus / "grammars.npy")
    # grammars come in inverse pairs
    np.testing.assert_array_equal(grammars[2][grammars[0]], np.arange(16))


def test_deterministic_by_seed(tmp_path):
    small = ["--num_videos", "20", "--num_pretrain", "3", "--num_movies", "0", "--dim", "16", "--num_scenes", "8"]
    synthetic.main(["--out", str(tmp_path / "a"), *small])
    synthetic.main(["--out", str(tmp_path / "b"), *small])
    synthetic.main(["--out", str(tmp_path / "c"), *small, "--seed", "1"])
    a, b, c = (EmbeddingStore(tmp_path / d / "benchmark") for d in "abc")
    np.testing.assert_array_equal(a.get("syn000003"), b.get("syn000003"))
    assert not np.allclose(a.get("syn000003")[:1], c.get("syn000003")[:1])
    with pytest.raises(SystemExit, match="--overwrite"):
        synthetic.main(["--out", str(tmp_path / "a"), *small])


def test_mean_pool_is_near_chance_where_order_is_far_above(corpus):
    mean_acc = probe(corpus, "grammar", "mean")
    order_acc = probe(corpus, "grammar", "bigram")
    blind_acc = probe(corpus, "grammar", "bigram", shuffle=True)
    assert mean_acc < 0.25 + 0.12, mean_acc            # chance 0.25
    assert order_acc > 0.9, order_acc
    assert blind_acc < 0.5 + 0.12, blind_acc           # order-blind statistics cannot beat 50%
    assert probe(corpus, "style", "mean") > 0.9        # the control task a mean pool solves


def test_pace_needs_order(corpus):
    chance = json.loads((corpus / "tasks" / "tasks.json").read_text())["pace"]["chance"]
    store = EmbeddingStore(corpus / "benchmark")
    protos = np.load(corpus / "prototypes.npy")

    def change_rate(vids, shuffle=False):  # one order-aware number: scene changes per segment
        rng = np.random.default_rng(0)
        out = []
        for v in vids:
            s = (store.get(v) @ protos.T).argmax(1)
            s = rng.permutation(s) if shuffle else s
            out.append([1.0 / max((s[1:] != s[:-1]).mean(), 1e-2)])
        return np.array(out)

    tr, te = split(corpus, "pace", "train"), split(corpus, "pace", "test")
    mse = linear_probe(change_rate(tr.video_id), tr.label.to_numpy(), change_rate(te.video_id), te.label.to_numpy(),
                       regression=True)
    mse_shuffled = linear_probe(change_rate(tr.video_id, True), tr.label.to_numpy(),
                                change_rate(te.video_id, True), te.label.to_numpy(), regression=True)
    assert mse < 0.6 * chance, (mse, chance)
    assert mse_shuffled > 0.8 * chance, (mse_shuffled, chance)


def test_extra_videos_grow_the_labelled_set_and_change_nothing_else(tmp_path):
    small = ["--num_videos", "30", "--num_pretrain", "5", "--num_movies", "1", "--dim", "16", "--num_scenes", "8"]
    synthetic.main(["--out", str(tmp_path / "base"), *small])
    synthetic.main(["--out", str(tmp_path / "grown"), *small, "--extra_videos", "40"])
    base, grown = tmp_path / "base", tmp_path / "grown"
    for f in sorted((base / "pretrain").rglob("*")):  # the pretraining corpus: byte for byte
        if f.is_file():
            assert f.read_bytes() == (grown / f.relative_to(base)).read_bytes(), f
    for f in ("prototypes.npy", "grammars.npy", "scene_captions.txt", "tasks/tasks.json"):
        assert (base / f).read_bytes() == (grown / f).read_bytes(), f
    for f in ["latents.csv", "captions.csv"] + [f"tasks/{t}/{s}.csv" for t in ("grammar", "style", "pace")
                                                for s in ("train", "val", "test")]:
        old, new = (base / f).read_text().splitlines(), (grown / f).read_text().splitlines()
        assert new[:len(old)] == old and len(new) > len(old), f  # the old rows, then the extra videos
    a, b = EmbeddingStore(base / "benchmark"), EmbeddingStore(grown / "benchmark")
    assert len(b) == 70 and set(a.video_ids) < set(b.video_ids)
    for v in a.video_ids:
        np.testing.assert_array_equal(a.get(v), b.get(v))
    latents = pd.read_csv(grown / "latents.csv", dtype={"video_id": str})
    extra = latents[latents.video_id.isin(set(b.video_ids) - set(a.video_ids))]
    assert sorted(extra.video_id) == [f"syn{i:06d}" for i in range(30, 70)]
    assert extra.split.value_counts().to_dict() == {"train": 28, "val": 6, "test": 6}  # 70 / 15 / 15 on their own
    assert json.loads((grown / "corpus.json").read_text())["benchmark_videos"] == 70
    # the demo's use: the extra videos only tighten validation and test, the training split stays
    synthetic.main(["--out", str(tmp_path / "vt"), *small, "--extra_videos", "40",
                    "--extra_fractions", "0", ".25", ".75"])
    for name, extra_count in (("train", 0), ("val", 10), ("test", 30)):
        old = pd.read_csv(base / "tasks" / "grammar" / f"{name}.csv", dtype={"video_id": str})
        new = pd.read_csv(tmp_path / "vt" / "tasks" / "grammar" / f"{name}.csv", dtype={"video_id": str})
        assert len(new) == len(old) + extra_count and new.video_id[:len(old)].tolist() == old.video_id.tolist()
    with pytest.raises(SystemExit, match="sum to 1"):
        synthetic.main(["--out", str(tmp_path / "bad"), *small, "--extra_videos", "4",
                        "--extra_fractions", "1", "1", "0"])


def test_external_prototypes_scale_the_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(32)
    protos = base + 0.15 * rng.standard_normal((6, 32))  # close together: cosines ~0.98
    np.save(tmp_path / "p.npy", protos)
    (tmp_path / "c.txt").write_text("\n".join(f"caption {i}" for i in range(6)))
    out = tmp_path / "ext"
    synthetic.main(["--out", str(out), "--num_videos", "40", "--num_pretrain", "0", "--num_movies", "0",
                    "--prototypes", str(tmp_path / "p.npy"), "--scene_captions", str(tmp_path / "c.txt"),
                    "--encoder_name", "clip:tiny"])
    store = EmbeddingStore(out / "benchmark")
    assert store.manifest["encoder"] == "clip:tiny" and store.dim == 32
    caps = pd.read_csv(out / "captions.csv", dtype={"video_id": str})
    unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    hits = []
    for vid, group in caps.groupby("video_id"):
        decoded = (store.get(vid) @ unit.T).argmax(1)
        hits.append(decoded == group.caption.str.split().str[-1].astype(int).to_numpy())
    assert np.concatenate(hits).mean() > 0.95  # noise scaled to d_min keeps scenes decodable
    with pytest.raises(SystemExit, match="captions"):
        synthetic.main(["--out", str(tmp_path / "x"), "--prototypes", str(tmp_path / "p.npy")])
