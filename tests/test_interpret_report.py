"""interpret.py end to end on the synthetic corpus built in a tiny CLIP text tower's space: the
caption database CLI (and its refusals with a real tower), the HTML report lists every sampled
video and its masked segments, metrics equal a slow reference, masks are reproducible, thumbnails
come from the source video when it is readable."""
import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser

import av
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import interpret
from datasets import captions, synthetic
from datasets.captions import CaptionDB, CaptionError
from datasets.store import EmbeddingStore, StoreWriter, make_manifest
from models_lvmae import LVMAE
from util.checkpoint import load_pretrained, save_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: local files only
MAX_LEN = 16  # LVU-like synthetic videos (~27 segments) are longer: the window path is exercised


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from preprocessing.encoders import build_encoder
    from preprocessing.make_tiny_encoder import make_tiny_encoder
    root = tmp_path_factory.mktemp("interpret")
    clip_dir = make_tiny_encoder("clip", root / "tiny_clip")
    tower = build_encoder("clip", clip_dir)
    # every caption carries characters HTML must escape
    scenes = [f'{c} <#{k}> & "q{k}"' for k, c in enumerate(synthetic.SCENE_CAPTIONS[:12])]
    (root / "scenes.txt").write_text("\n".join(scenes) + "\n")
    corpus = root / "corpus"  # prototypes = the tiny CLIP text tower's embeddings of the scene captions
    synthetic.main(["--out", str(corpus), "--text_encoder", "clip", "--text_checkpoint", str(clip_dir),
                    "--scene_captions", str(root / "scenes.txt"), "--num_videos", "12",
                    "--num_pretrain", "2", "--num_movies", "0"])
    db = root / "captiondb"
    captions.main(["--captions", str(corpus / "captions.csv"), "--data_path", str(corpus / "benchmark"),
                   "--encoder", "clip", "--checkpoint", str(clip_dir), "--output_dir", str(db),
                   "--chunk_size", "5", "--device", "cpu"])
    torch.manual_seed(0)
    model = LVMAE(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
                  max_len=MAX_LEN, input_dim=tower.dim)
    ckpt = root / "ckpt.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {},
                     "data": {"encoder": tower.name, "dim": tower.dim, "normalized": True}}, ckpt)
    out = root / "out"
    metrics = interpret.main(["--data_path", str(corpus / "benchmark"), "--captions", str(db), "--checkpoint",
                              str(ckpt), "--output_dir", str(out), "--num_videos", "5", "--seed", "3",
                              "--figure_rows", "3", "--device", "cpu"])
    return dict(root=root, clip_dir=clip_dir, tower=tower, corpus=corpus, db=db, ckpt=ckpt, out=out,
                metrics=metrics)


def test_corpus_lives_in_the_text_towers_space(setup):
    corpus, tower = setup["corpus"], setup["tower"]
    scenes = (setup["root"] / "scenes.txt").read_text().splitlines()
    text = tower.encode_text(scenes).numpy()
    np.testing.assert_allclose(np.load(corpus / "prototypes.npy"),
                               text / np.linalg.norm(text, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    manifest = json.loads((corpus / "benchmark" / "manifest.json").read_text())
    assert manifest["encoder"] == tower.name and manifest["dim"] == tower.dim


class Cards(HTMLParser):
    """Collects the report's video sections and segment cards (their data-* attributes)."""

    def __init__(self):
        super().__init__()
        self.sections, self.cards, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["data-video"])
        elif "data-segment" in a:
            self.cards.append((a["data-video"], int(a["data-segment"]), a["data-masked"] == "1"))
        elif tag == "img":
            self.images.append(a["src"])


def parse(path):
    p = Cards()
    p.feed(path.read_text())
    return p


def test_caption_db_of_the_synthetic_corpus(setup):
    db = CaptionDB(setup["db"])
    assert db.encoder == setup["tower"].name == "clip:tiny_clip"
    assert len(db.texts) == 12 and db.embeddings.shape == (12, setup["tower"].dim)
    table = pd.read_csv(setup["corpus"] / "captions.csv", dtype={"video_id": str})
    vid = EmbeddingStore(setup["corpus"] / "benchmark").video_ids[0]
    own = table[table.video_id == vid].sort_values("segment").caption.tolist()
    assert [db.texts[i] for i in db.caption_ids(vid, len(own))] == own
    # text embeddings are the tower's, normalized: the prototypes the corpus was built from
    scenes = (setup["root"] / "scenes.txt").read_text().splitlines()
    protos = np.load(setup["corpus"] / "prototypes.npy")[[scenes.index(t) for t in db.texts]]
    np.testing.assert_allclose(db.embeddings, protos / np.linalg.norm(protos, axis=1, keepdims=True), atol=1e-5)


def test_html_lists_every_sampled_video_and_its_masked_segments(setup):
    m = json.loads((setup["out"] / "metrics.json").read_text())
    assert len(m["videos"]) == 5 and m["settings"]["mask_ratio"] == 0.4
    page = parse(setup["out"] / "report.html")
    assert page.sections == [v["video_id"] for v in m["videos"]]
    windowed = 0
    for v in m["videos"]:
        start, stop = v["window"]
        n = stop - start
        assert n == min(v["num_segments"], MAX_LEN)
        windowed += v["num_segments"] > MAX_LEN
        cards = [(s, masked) for vid, s, masked in page.cards if vid == v["video_id"]]
        assert [s for s, _ in cards] == list(range(start, stop))  # consecutive, whole window
        assert sorted(s for s, masked in cards if masked) == sorted(v["masked"])
        assert len(v["masked"]) == n - int(n * 0.6)  # 40% masked as the model counts it
    assert windowed > 0
    assert sum(len(v["masked"]) for v in m["videos"]) == m["num_masked"]
    html = (setup["out"] / "report.html").read_text()
    assert "<#" not in html and "&lt;#" in html and "&amp; &quot;q" in html  # captions escaped
    assert "longer than max_len" in html and "MASKED" in html and "no frame" in html


def test_metrics_equal_a_slow_reference(setup):
    """Own-caption ranks recomputed one segment at a time from the store, the caption vectors and
    the model run on each window with the recorded mask."""
    store = EmbeddingStore(setup["corpus"] / "benchmark")
    db = CaptionDB(setup["db"])
    model, _ = load_pretrained(setup["ckpt"])
    m = json.loads((setup["out"] / "metrics.json").read_text())
    ret = pd.read_csv(setup["out"] / "retrievals.csv", dtype={"video_id": str})
    assert len(ret) == m["num_masked"] == m["num_scored"]
    G = db.embeddings

    def rank(q, target):
        sim = G @ (q / np.linalg.norm(q))
        return 1 + int((sim > sim[target]).sum())

    for v in m["videos"]:
        start, stop = v["window"]
        x = store.get(v["video_id"], start, stop)
        mask = torch.zeros(1, stop - start, dtype=torch.bool)
        mask[0, np.array(v["masked"]) - start] = True
        _, pred, _ = model(torch.from_numpy(x)[None], torch.tensor([stop - start]), mask=mask)
        ids = db.caption_ids(v["video_id"], v["num_segments"])
        rows = ret[ret.video_id == v["video_id"]].set_index("segment")
        for s in v["masked"]:
            r = rows.loc[s]
            assert r.caption == db.texts[ids[s]]
            assert r.original_rank == rank(x[s - start], ids[s])
            assert r.lvmae_rank == rank(pred[0, s - start].numpy(), ids[s])
            assert r.lvmae_top1 == db.texts[int(np.argmax(G @ pred[0, s - start].numpy()))]
    for method, key in [("original", "original"), ("LV-MAE", "lvmae"), ("nearest visible", "nearest_visible"),
                        ("linear interpolation", "linear_interpolation")]:
        for k in (1, 5, 10):
            assert m["methods"][method][f"R@{k}"] == pytest.approx(100 * (ret[f"{key}_rank"] <= k).mean())
    assert m["methods"]["chance"]["R@5"] == pytest.approx(100 * 5 / 12)


def test_masks_and_windows_reproducible_and_independent_of_the_sample(setup, tmp_path):
    m = json.loads((setup["out"] / "metrics.json").read_text())
    pick = [m["videos"][i]["video_id"] for i in (3, 1)]
    again = interpret.main(["--data_path", str(setup["corpus"] / "benchmark"), "--captions", str(setup["db"]),
                            "--checkpoint", str(setup["ckpt"]), "--output_dir", str(tmp_path), "--seed", "3",
                            "--video_ids", *pick, "--no_thumbnails", "--device", "cpu"])
    first = {v["video_id"]: v for v in m["videos"]}
    for v in again["videos"]:
        assert v == first[v["video_id"]]
    assert parse(tmp_path / "report.html").sections == pick


def test_png_figure(setup):
    img = Image.open(setup["out"] / "report.png")
    assert img.format == "PNG" and img.width >= 600 and img.height >= 3 * 200  # 3 rows of 3 segments


def test_thumbnails_from_a_readable_source_video(setup, tmp_path):
    """A 15-s video, red / green / blue for 5 s each; captions given as start/end seconds."""
    video = tmp_path / "rgb.mp4"
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=4)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            frame = np.full((48, 64, 3), colors[i // 20], np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    tower = setup["tower"]
    store = tmp_path / "store"
    texts = ["a red screen", "a green screen", "a blue screen"]
    with StoreWriter(store, "w", make_manifest(tower.name, tower.dim, normalized=False)) as w:
        w.add("rgb", tower.encode_text(texts).numpy(), duration_s=15.0, source=str(video))
    pd.DataFrame({"video_id": "rgb", "start": [0.0, 5.0, 10.0], "end": [5.0, 10.0, 15.0], "caption": texts}) \
        .to_csv(tmp_path / "captions.csv", index=False)
    captions.main(["--captions", str(tmp_path / "captions.csv"), "--data_path", str(store), "--encoder", "clip",
                   "--checkpoint", str(setup["clip_dir"]), "--output_dir", str(tmp_path / "db"), "--device", "cpu"])
    interpret.main(["--data_path", str(store), "--captions", str(tmp_path / "db"), "--checkpoint",
                    str(setup["ckpt"]), "--output_dir", str(tmp_path / "out"), "--num_videos", "1", "--device", "cpu"])
    page = parse(tmp_path / "out" / "report.html")
    assert [s for _, s, _ in page.cards] == [0, 1, 2] and len(page.images) == 3
    for src, color in zip(page.images, colors):
        assert src.startswith("data:image/jpeg;base64,")
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        assert np.abs(rgb.reshape(-1, 3).mean(0) - color).max() < 20


def test_caption_cli_refuses_another_text_tower(setup, tmp_path):
    other = tmp_path / "other_clip"
    shutil.copytree(setup["clip_dir"], other)
    args = ["--captions", str(setup["corpus"] / "captions.csv"), "--data_path", str(setup["corpus"] / "benchmark"),
            "--encoder", "clip", "--output_dir", str(tmp_path / "db")]
    with pytest.raises(CaptionError, match=r"'clip:other_clip'.*was made by 'clip:tiny_clip'"):
        captions.main(args + ["--checkpoint", str(other)])
    narrow = tmp_path / "narrow"  # right encoder name, wrong dim
    with StoreWriter(narrow, "w", make_manifest("clip:tiny_clip", 16, normalized=False)) as w:
        w.add("not_captioned", np.ones((3, 16)), duration_s=15.0)
    with pytest.raises(CaptionError, match=r"gives 32-d text embeddings .*holds 16-d"):
        captions.main(args[:2] + ["--data_path", str(narrow), "--encoder", "clip", "--output_dir",
                                  str(tmp_path / "db"), "--checkpoint", str(setup["clip_dir"])])
    assert not (tmp_path / "db" / "meta.json").exists()


def test_interpret_refuses_a_database_of_another_store(setup, tmp_path):
    store = tmp_path / "store"
    with StoreWriter(store, "w", make_manifest("clip:other", setup["tower"].dim, normalized=False)) as w:
        w.add("v", np.ones((4, setup["tower"].dim)), duration_s=20.0)
    with pytest.raises(CaptionError, match=r"'clip:tiny_clip'.*was made by 'clip:other'"):
        interpret.main(["--data_path", str(store), "--captions", str(setup["db"]), "--checkpoint",
                        str(setup["ckpt"]), "--output_dir", str(tmp_path / "out")])
