"""Readers (YouCook2, EgoSchema, question tables), retrieval / multiple-choice metrics against slow
loops written here, the ridge map against a direct solve, and both CLIs end to end against an
independent computation of the same numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import engine_retrieval as er
import eval_mcqa
import eval_retrieval
from datasets import questions, synthetic, youcook2
from datasets.egoschema import EgoSchemaError, read_egoschema
from datasets.store import EmbeddingStore, StoreWriter, make_manifest
from datasets.texts import TextDatabase, build_text_database
from models_lvmae import LVMAE
from util.checkpoint import save_checkpoint


# --- YouCook2 --------------------------------------------------------------------------------------
def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


YC = {"database": {
    "vidA": {"subset": "training", "duration": 60.0, "annotations": [
        {"segment": [30, 41], "sentence": "add the salt."}, {"segment": [2, 14], "sentence": " cut the onion "},
        {"segment": [15, 16], "sentence": "stir"}, {"segment": [200, 210], "sentence": "beyond the end"}]},
    "vidB": {"subset": "validation", "duration": 20.0, "annotations": [{"segment": [0, 9], "sentence": "boil water"}]},
    "vidC": {"subset": "testing", "duration": 20.0},
    "vidD": {"subset": "training", "duration": 30.0, "annotations": []},
    "vidE": {"subset": "training", "duration": 30.0, "annotations": [{"segment": [0, 5], "sentence": "x"}]},
}}


def test_youcook2_texts_in_time_order_and_spans(tmp_path):
    yc = youcook2.read_annotations(write_json(tmp_path / "yc.json", YC))
    a = yc.videos.set_index("video_id").loc["vidA"]
    assert a.text == "cut the onion. stir. add the salt. beyond the end."
    assert yc.sentences[yc.sentences.video_id == "vidA"].sentence.tolist() == [
        "cut the onion", "stir", "add the salt.", "beyond the end"]
    assert yc.skipped == {"other subset": 1, "no annotations": 1}
    with StoreWriter(tmp_path / "store", "t", make_manifest("test:tiny", 4)) as w:  # vidE is not in the store
        for vid, n in (("vidA", 12), ("vidB", 4)):
            w.add(vid, np.ones((n, 4), np.float32), duration_s=5.0 * n)
    store = EmbeddingStore(tmp_path / "store")
    texts, spans, splits, counts = youcook2.pair_with_store(yc, store, val_fraction=0.0)
    # an independent rule: 5 s segments [5i, 5i + 5), midpoint 5i + 2.5 inside the span
    expect = {}
    for r in yc.sentences[yc.sentences.video_id.isin(["vidA", "vidB"])].itertuples():
        n = store.num_segments(r.video_id)
        inside = [i for i in range(n) if r.start_s <= 5 * i + 2.5 <= r.end_s]
        if not inside:
            ov = [min(5 * i + 5, r.end_s) - max(5 * i, r.start_s) for i in range(n)]
            inside = [int(np.argmax(ov))] if max(ov) > 0 else []
        if inside:
            expect[r.text_id] = (inside[0], inside[-1] + 1)
    got = {r.text_id: (r.start_segment, r.stop_segment) for r in spans.itertuples()}
    assert got == expect == {"vidA@0": (0, 3), "vidA@1": (3, 4), "vidA@2": (6, 8), "vidB@0": (0, 2)}
    assert counts["spans_outside_store_segments"] == 1 and counts["videos_not_in_store"] == 1
    assert set(texts[texts.kind == "video"].id) == {"vidA", "vidB"}
    assert dict(zip(splits.video_id, splits.split)) == {"vidA": "train", "vidB": "test"}


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d["database"]["vidA"]["annotations"][1].update(segment=[5]), r"vidA' annotation 1: \"segment\""),
    (lambda d: d["database"]["vidA"]["annotations"][0].update(segment=[9, 3]), r"vidA' annotation 0: segment"),
    (lambda d: d["database"]["vidB"]["annotations"][0].update(sentence=""), r"vidB' annotation 0: \"sentence\""),
    (lambda d: d["database"]["vidB"].pop("subset"), r"vidB' has no \"subset\""),
    (lambda d: d["database"]["vidB"].update(duration="long"), r"vidB': \"duration\""),
    (lambda d: d.pop("database"), r"expected \{\"database\""),
])
def test_youcook2_malformed_names_file_and_video(tmp_path, mutate, expect):
    data = json.loads(json.dumps(YC))
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(youcook2.YouCook2Error, match=rf"bad\.json.*{expect}|{expect}.*") as e:
        youcook2.read_annotations(path)
    assert "bad.json" in str(e.value)
    (tmp_path / "torn.json").write_text('{"database": {')
    with pytest.raises(youcook2.YouCook2Error, match=r"torn\.json line 1"):
        youcook2.read_annotations(tmp_path / "torn.json")


# --- EgoSchema and question tables --------------------------------------------------------------------
def ego_files(tmp_path, questions_list, answers):
    return write_json(tmp_path / "questions.json", questions_list), write_json(tmp_path / "subset_answers.json", answers)


def ego_question(uid, n=5):
    return {"q_uid": uid, "question": f"what does c do in {uid}?", "google_drive_id": "x",
            **{f"option {k}": f"c does thing {k}" for k in range(n)}}


def test_egoschema_reader(tmp_path):
    q, a = ego_files(tmp_path, [ego_question("q1"), ego_question("q2"), ego_question("q3")], {"q1": 3, "q3": 0})
    table, counts = read_egoschema(q, a)
    assert counts == {"questions": 2, "unanswered": 1, "answers_without_question": 0}
    assert table.video_id.tolist() == table.question_id.tolist() and len(table) == 10
    q1 = table[table.question_id == "q1"]
    assert q1.option.tolist() == [0, 1, 2, 3, 4] and q1.correct.tolist() == [0, 0, 0, 1, 0]
    checked = questions.check_questions(table, "t")  # the reader's table is a valid question table
    texts = questions.option_texts(checked)
    assert "q1#3" in set(texts.id) and texts.set_index("id").text["q1#3+q"] == "what does c do in q1? c does thing 3"


@pytest.mark.parametrize("qs, answers, expect", [
    ([ego_question("q1", 1)], {"q1": 0}, r"questions\.json: question 'q1': options must be"),
    ([ego_question("q1"), ego_question("q1")], {"q1": 0}, r"questions\.json: question 'q1' appears twice"),
    ([ego_question("q1")], {"q1": 7}, r"subset_answers\.json: the answer of 'q1' is 7, but it has 5 options"),
    ([ego_question("q1")], {"q1": "b"}, r"subset_answers\.json: the answer of 'q1' is 'b'"),
    ([{"question": "?"}], {}, r"questions\.json: entry 0 has no \"q_uid\""),
    ({"q1": 1}, {}, r"questions\.json: expected a list"),
])
def test_egoschema_malformed(tmp_path, qs, answers, expect):
    q, a = ego_files(tmp_path, qs, answers)
    with pytest.raises(EgoSchemaError, match=expect):
        read_egoschema(q, a)


def test_question_table_checks(tmp_path):
    good = pd.DataFrame({"question_id": ["a"] * 3, "video_id": ["v"] * 3, "option": [0, 1, 2], "text": ["x", "y", "z"],
                         "correct": [0, 1, 0]})
    assert len(questions.check_questions(good, "f")) == 3
    for df, expect in ((good.assign(correct=[1, 1, 0]), "exactly one correct"),
                       (good.assign(video_id=["v", "w", "v"]), "several videos"),
                       (good.assign(option=[0, 0, 1]), "repeats an option"), (good.drop(columns="text"), "lacks")):
        df.to_csv(tmp_path / "q.csv", index=False)
        with pytest.raises(questions.QuestionError, match=rf"q\.csv.*{expect}"):
            questions.read_questions(tmp_path / "q.csv")


# --- metrics against slow loops --------------------------------------------------------------------------
def slow_ranks(sim, positive):
    out = []
    for q in range(sim.shape[0]):
        best = max(sim[q, g] for g in range(sim.shape[1]) if positive[q, g])
        out.append(1 + sum(1 for g in range(sim.shape[1]) if not positive[q, g] and sim[q, g] > best))
    return np.array(out)


def test_retrieval_metrics_against_slow_loop():
    rng = np.random.default_rng(0)
    videos = er.normalize(rng.standard_normal((9, 6)))
    text_video = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 2, 5])  # some videos have several texts
    texts = er.normalize(videos[text_video] + 0.8 * rng.standard_normal((12, 6)))
    texts[11] = texts[10]  # identical texts tie
    m = er.retrieval_metrics(texts, videos, text_video)
    sim = texts.astype(np.float64) @ videos.T.astype(np.float64)
    pos = np.array([[text_video[t] == v for v in range(9)] for t in range(12)])
    t2v, v2t = slow_ranks(sim, pos), slow_ranks(sim.T, pos.T)
    for k in (1, 5, 10):
        assert m[f"t2v_R@{k}"] == pytest.approx(np.mean(t2v <= k))
        assert m[f"v2t_R@{k}"] == pytest.approx(np.mean(v2t <= k))
    assert m["t2v_MdR"] == np.median(t2v) and m["v2t_MdR"] == np.median(v2t)
    assert (m["n_texts"], m["n_videos"]) == (12, 9)
    assert 0 < m["t2v_R@1"] < 1  # the test is not trivially perfect or empty
    # identical texts: a video is a positive of every text equal to one of its own
    keys = np.array([0, 1, 2, 3, 4, 5, 6, 1, 8, 9, 10, 10])  # text 7 (video 7) reads as text 1 (video 1)
    mk = er.retrieval_metrics(texts, videos, text_video, keys)
    posk = np.array([[any(keys[u] == keys[t] and text_video[u] == v for u in range(12)) for v in range(9)]
                     for t in range(12)])
    assert posk.sum() == pos.sum() + 4  # texts 1 / 7 and 10 / 11 (videos 2, 5) each gain the other's video
    t2v, v2t = slow_ranks(sim, posk), slow_ranks(sim.T, posk.T)
    assert [mk[f"t2v_R@{k}"] for k in (1, 5, 10)] == pytest.approx([np.mean(t2v <= k) for k in (1, 5, 10)])
    assert [mk[f"v2t_R@{k}"] for k in (1, 5, 10)] == pytest.approx([np.mean(v2t <= k) for k in (1, 5, 10)])
    assert (mk["t2v_MdR"], mk["v2t_MdR"]) == (np.median(t2v), np.median(v2t))


def test_answer_scores_ties_and_padding():
    video = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    opts = np.array([[[1, 0], [0, 1], [0, 0]], [[1, 0], [1, 0], [0, 0]], [[1, 0], [0, 1], [0, 5]]], dtype=np.float64)
    valid = np.array([[True, True, True], [True, True, False], [True, True, False]])
    s = er.answer_scores(video, opts, valid, np.array([0, 1, 0]))
    assert s.tolist() == [1.0, 0.5, 0.0]  # a tie of 2 earns 1/2; a padded option never wins


def test_ridge_against_direct_solve():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5)) * [1, 2, 3, 4, 5] + 3
    y = x @ rng.standard_normal((5, 3)) + 0.1 * rng.standard_normal((40, 3)) - 1
    maps = er.fit_ridge(x, y, [1e-3, 1.0])
    xc = x - x.mean(0)
    s = np.trace(xc.T @ xc) / 5
    for m, lam in zip(maps, [1e-3, 1.0]):
        w = np.linalg.solve(xc.T @ xc + lam * s * np.eye(5), xc.T @ (y - y.mean(0)))
        np.testing.assert_allclose(m.weight, w, rtol=1e-8, atol=1e-10)
        pred = (x - x.mean(0)) @ w + y.mean(0)
        np.testing.assert_allclose(m(x), pred / np.linalg.norm(pred, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


# --- the CLIs end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    synthetic.main(["--out", str(root / "corpus"), "--num_videos", "80", "--num_pretrain", "0", "--num_movies", "0",
                    "--dim", "16", "--num_scenes", "6"])
    store = EmbeddingStore(root / "corpus" / "benchmark")
    rng = np.random.default_rng(0)
    encode = lambda texts: rng.standard_normal((len(texts), 16))  # noqa: E731  (any tower of the store's space)
    texts = pd.read_csv(root / "corpus" / "texts.csv", dtype=str)
    texts = texts[texts.video_id.isin(store.video_ids)]
    build_text_database(texts, encode, store.manifest["encoder"], store.manifest, root / "texts", progress=False)
    qtable = questions.read_questions(root / "corpus" / "order_questions.csv")
    build_text_database(questions.option_texts(qtable), encode, store.manifest["encoder"], store.manifest,
                        root / "order", progress=False)
    (root / "order" / "questions.csv").write_text(qtable.to_csv(index=False))
    torch.manual_seed(0)
    cfg = dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
               max_len=8, input_dim=16)
    ckpts = {}
    for objective in ("mae", "contrastive"):
        model = LVMAE(**cfg, objective=objective, **({"text_dim": 16} if objective != "mae" else {}))
        ckpts[objective] = root / f"{objective}.pth"
        save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0,
                         "args": {"mask_ratio": 0.75}, "data": {"encoder": store.manifest["encoder"], "dim": 16}},
                        ckpts[objective])
    return root, store, ckpts


def slow_video_embeddings(store, vids, model=None):
    """Whole videos one at a time: the raw mean, or text_space_embedding of each sliding window
    weighted by the segments it owns (max_len 8, stride 4, owner = nearest window centre)."""
    out = []
    for v in vids:
        x = store.get(v)
        if model is None:
            out.append(x.mean(0))
            continue
        n, L = len(x), model.max_len
        starts = [0] if n <= L else sorted(set(list(range(0, n - L + 1, L // 2)) + [n - L]))
        acc = 0
        for j, s in enumerate(starts):
            owned = sum(1 for i in range(n) if min(range(len(starts)), key=lambda w: (
                abs(i - (starts[w] + (min(L, n) - 1) / 2)) if starts[w] <= i < starts[w] + min(L, n) else 1e9, w)) == j)
            w = x[s:s + L]
            e = model.text_space_embedding(torch.from_numpy(w)[None], torch.zeros(1, len(w), dtype=torch.bool))
            acc = acc + owned * e[0].double().numpy()
        out.append(acc)
    out = np.array(out, dtype=np.float64)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_eval_retrieval_raw_and_projection_match_slow(corpus, tmp_path):
    root, store, ckpts = corpus
    db = TextDatabase(root / "texts")
    split = er.read_splits(root / "corpus" / "latents.csv")
    test_ids = [i for i in db.ids if split[i] == "test"]
    t = db.embeddings[[db.index(i) for i in test_ids]].astype(np.float64)
    words = [db.texts[db.index(i)] for i in test_ids]  # a text's positives: every video described by the same words
    pos = np.array([[a == b for b in words] for a in words])
    assert pos.sum() > len(test_ids)  # duplicate descriptions are exercised
    from util.checkpoint import load_pretrained
    model, _ = load_pretrained(ckpts["contrastive"])
    assert (store.lengths(test_ids) > model.max_len).any()  # the sliding windows are exercised
    for argv, model_ in ((["--backbone", "raw"], None),
                         (["--backbone", "lvmae", "--checkpoint", str(ckpts["contrastive"])], model)):
        result = eval_retrieval.main(["--data_path", str(root / "corpus" / "benchmark"), "--texts", str(root / "texts"),
                                      "--splits", str(root / "corpus" / "latents.csv"), "--output_dir",
                                      str(tmp_path), "--device", "cpu", *argv])
        m = result["metrics"]["video"]
        with torch.no_grad():
            v = slow_video_embeddings(store, test_ids, model_)
        r_t2v, r_v2t = slow_ranks(t @ v.T, pos), slow_ranks(v @ t.T, pos)
        assert m["t2v_R@1"] == pytest.approx(np.mean(r_t2v <= 1)) and m["v2t_R@5"] == pytest.approx(np.mean(r_v2t <= 5))
        assert m["t2v_MdR"] == np.median(r_t2v) and m["n_texts"] == len(test_ids)
    rows = pd.read_csv(tmp_path / "retrieval.csv")
    assert rows["head"].tolist() == ["none", "projection"] and len(rows) == 2
    assert pd.isna(rows["window"][0]) and rows["window"][1] == model.max_len == 8  # the encoder's window
    tables = (tmp_path / "tables.md").read_text()
    assert "raw mean (no training)" in tables and "LV-MAE contrastive, mask 0.75, window 8 + projection" in tables
    text = er.main([str(tmp_path), "--plot", str(tmp_path / "tradeoff.png")])
    assert "| mask ratio | window |" in text and "| 0.75 | 8 |" in text and (tmp_path / "tradeoff.png").stat().st_size


def test_eval_retrieval_ridge_and_mcqa(corpus, tmp_path):
    root, store, ckpts = corpus
    base = ["--data_path", str(root / "corpus" / "benchmark"), "--output_dir", str(tmp_path), "--device", "cpu"]
    result = eval_retrieval.main([*base, "--texts", str(root / "texts"), "--splits", str(root / "corpus" / "latents.csv"),
                                  "--backbone", "lvmae", "--checkpoint", str(ckpts["mae"])])
    m = result["metrics"]["video"]
    assert result["config"]["head"] == "ridge" and m["ridge_lambda"] in er.RIDGE_LAMBDAS
    assert set(m["val_t2v_R@1_by_lambda"]) == {str(x) for x in er.RIDGE_LAMBDAS}

    qtable = pd.read_csv(root / "order" / "questions.csv", dtype={"question_id": str, "video_id": str})
    metrics = eval_mcqa.main([*base, "--questions", str(root / "order"), "--splits", str(root / "corpus" / "latents.csv"),
                              "--backbone", "raw"])
    split = er.read_splits(root / "corpus" / "latents.csv")
    db = TextDatabase(root / "order")
    credit = []
    for qid, g in qtable[qtable.video_id.map(split) == "test"].groupby("question_id"):
        v = store.get(g.video_id.iloc[0]).mean(0)
        v = v / np.linalg.norm(v)
        s = [float(db.embeddings[db.index(f"{qid}#{o}")] @ v) for o in g.option]
        best = [o for o, x in zip(g.option, s) if x == max(s)]
        credit.append((g.option[g.correct == 1].iloc[0] in best) / len(best))
    assert metrics["accuracy"] == pytest.approx(np.mean(credit)) and metrics["n_questions"] == len(credit)
    ridge = eval_mcqa.main([*base, "--questions", str(root / "order"), "--splits", str(root / "corpus" / "latents.csv"),
                            "--backbone", "lvmae", "--checkpoint", str(ckpts["mae"]), "--ridge_texts", str(root / "texts")])
    assert 0 <= ridge["accuracy"] <= 1 and "ridge_lambda" in ridge
    assert len(pd.read_csv(tmp_path / "mcqa.csv")) == 2
    assert "Zero-shot multiple choice" in (tmp_path / "tables.md").read_text()


def test_youcook2_and_egoschema_clis_with_a_tiny_clip(tmp_path):
    """The readers' CLIs embed with a real (tiny) text tower; span texts are retrieved against
    the segments of their spans."""
    from preprocessing.encoders import build_encoder
    from preprocessing.make_tiny_encoder import make_tiny_encoder
    clip = make_tiny_encoder("clip", tmp_path / "tiny_clip")
    tower = build_encoder("clip", clip)
    rng = np.random.default_rng(0)
    data = {"database": {}}
    with StoreWriter(tmp_path / "store", "t", make_manifest(tower.name, tower.dim)) as w:
        for i in range(12):
            n = 6 + i % 4
            w.add(f"yt{i}", rng.standard_normal((n, tower.dim)).astype(np.float32), duration_s=5.0 * n)
            data["database"][f"yt{i}"] = {"subset": "validation" if i % 3 == 0 else "training", "duration": 5.0 * n,
                                          "annotations": [{"segment": [5 * k, 5 * k + 9], "sentence": f"step {k} of {i}"}
                                                          for k in range(3)]}
    data["database"]["yt0"]["annotations"].append({"segment": [0, 10], "sentence": "a very long step " * 20})
    write_json(tmp_path / "yc.json", data)
    out = youcook2.main(["--annotations", str(tmp_path / "yc.json"), "--data_path", str(tmp_path / "store"),
                         "--encoder", "clip", "--checkpoint", str(clip), "--output_dir", str(tmp_path / "yc_texts")])
    assert out["counts"]["video_truncated"] == 1 and out["counts"]["span_truncated"] == 1
    assert out["counts"]["test_videos"] == 4
    result = eval_retrieval.main(["--data_path", str(tmp_path / "store"), "--texts", str(tmp_path / "yc_texts"),
                                  "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert set(result["metrics"]) == {"video", "span"}
    assert result["metrics"]["span"]["n_texts"] == 13 and result["metrics"]["video"]["n_videos"] == 4
    # a span's gallery vector is the raw mean of its own segments
    spans = pd.read_csv(tmp_path / "yc_texts" / "spans.csv")
    r = spans[spans.text_id == "yt3@1"].iloc[0]
    view = er.WindowView(EmbeddingStore(tmp_path / "store"), {"s": ("yt3", int(r.start_segment), int(r.stop_segment))})
    np.testing.assert_allclose(view.get("s"), EmbeddingStore(tmp_path / "store").get("yt3")[1:3])

    q, a = ego_files(tmp_path, [ego_question("yt1"), ego_question("yt2"), ego_question("nope")],
                     {"yt1": 2, "yt2": 4, "nope": 0})
    counts = questions.main(["--questions", str(q), "--answers", str(a), "--data_path", str(tmp_path / "store"),
                             "--encoder", "clip", "--checkpoint", str(clip), "--output_dir", str(tmp_path / "ego")])
    assert counts["questions_kept"] == 2 and counts["questions_of_videos_not_in_store"] == 1
    for extra in ([], ["--with_question"]):
        m = eval_mcqa.main(["--data_path", str(tmp_path / "store"), "--questions", str(tmp_path / "ego"),
                            "--output_dir", str(tmp_path / "out"), "--device", "cpu", *extra])
        assert m["n_questions"] == 2 and m["chance"] == pytest.approx(0.2)
