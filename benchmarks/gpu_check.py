"""Every CUDA path of the project in one command (``make gpu-check``): a few minutes on one or
more NVIDIA GPUs, one JSON line, exit code 1 on any failure.

    python benchmarks/gpu_check.py                 # CUDA; prints "no GPU" and exits 0 without one
    python benchmarks/gpu_check.py --device cpu    # the same sequence at tiny sizes (gloo), as make test runs it

Sections, in order (each is reported as ok / skipped with the package it needs / failed with
the error; later sections run after a failure):

1. ``versions``: PyTorch >= 2.5, timm >= 1.0.26 (the first that passes a boolean mask to SDPA
   safely), numpy, pandas, tqdm, tensorboard -- an older or missing one fails, naming it.
   PyAV, decord and transformers are optional: only the sections needing them are skipped.
2. ``pretrain``: steps of the real loop (the pretraining sampler, collate, fused AdamW,
   ``engine_pretrain.train_one_epoch``) of ``lvmae_d32`` on a 1024-d synthetic store in bf16:
   real tokens/s, peak memory, model FLOP utilisation against a bf16 matmul peak measured in
   the same run; the same through ``torch.compile`` (``main_pretrain --compile``), whether it
   pays, and that the compiled run's state dict keeps the uncompiled keys.
3. ``pretrain_cli``: ``main_pretrain.py`` in one process, fp32, a few steps (the reference of 4
   and the checkpoint of 5).
4. ``ddp``: with more than one GPU visible, ``torchrun --nproc_per_node=<all>`` on NCCL, fp32,
   the same global batch: per-epoch train and validation losses equal the one-process run's
   within ``DDP_RTOL`` (parameters: the largest difference is reported).
5. ``probes``: attentive and linear probes and ``extract_features.py`` on the device with bf16
   autocast, on that checkpoint.
6. ``extraction``: a tiny random CLIP and LanguageBind extraction (fp16 on CUDA), when PyAV
   and transformers are importable.

With ``--device cpu`` the sizes are tiny, the multi-process part is 2 gloo processes, and
``torch.compile`` uses its ``eager`` backend (graph capture without code generation, which
takes minutes on a shared CPU); on CUDA it uses inductor. Under 5 minutes on one GPU.
"""
from __future__ import annotations

# Only the standard library at import time: the check must run (and say what is missing)
# with whatever Python the machine has (``make gpu-check`` uses $(PYTHON), not the .venv).
import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {"torch": "2.5", "timm": "1.0.26", "numpy": None, "pandas": None, "tqdm": None, "tensorboard": None}
OPTIONAL = {"av": "PyAV (av)", "decord": "decord", "transformers": "transformers"}
DDP_RTOL = {"cuda": 1e-3, "cpu": 1e-5}  # per-epoch losses, N processes vs one (float summation order)


class CheckFailed(Exception):
    """A check that did not pass; the message says what and which package or value."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def check_versions() -> dict:
    """Raise CheckFailed naming every required package that is missing or too old."""
    found, problems = {}, []
    for package, minimum in REQUIRED.items():
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{package} is missing" + (f" (need >= {minimum})" if minimum else ""))
            continue
        found[package] = version
        if minimum and _version_tuple(version) < _version_tuple(minimum):
            problems.append(f"{package} {version} is older than {minimum}")
    if problems:
        raise CheckFailed("; ".join(problems))
    optional = {name: importlib.util.find_spec(module) is not None for module, name in OPTIONAL.items()}
    return {"status": "ok", **found, "optional_importable": optional}


def gpu_present() -> bool:
    """CUDA through torch when torch imports; without torch, an NVIDIA driver on the machine."""
    if importlib.util.find_spec("torch") is not None:
        import torch
        return torch.cuda.is_available()
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


class Run:
    """What every section needs: device, sizes, the work directory and earlier results."""

    def __init__(self, device: str, work: Path):
        import torch
        self.device, self.work = device, work
        self.cuda = device.startswith("cuda")
        self.gpus = torch.cuda.device_count() if self.cuda else 0
        tiny = ["--embed_dim", "32", "--depth", "1", "--num_heads", "2", "--decoder_embed_dim", "32",
                "--decoder_depth", "1", "--decoder_num_heads", "2"]
        if self.cuda:
            self.dim, self.pretrain_model, self.steps, self.warmup = 1024, ["--model", "lvmae_d32"], 20, 5
            self.small_model, self.compile_backend, self.peak_n = ["--model", "lvmae_tiny"], "inductor", 8192
            self.corpus = ["--num_videos", "300", "--num_pretrain", "540", "--num_movies", "60"]
        else:
            self.dim, self.pretrain_model, self.steps, self.warmup = 32, ["--model", "lvmae_tiny", *tiny], 2, 1
            self.small_model, self.compile_backend, self.peak_n = ["--model", "lvmae_tiny", *tiny], "eager", 256
            self.corpus = ["--num_videos", "120", "--num_pretrain", "60", "--num_movies", "2"]
        self.results: dict = {}

    @property
    def corpus_dir(self) -> Path:
        return self.work / "corpus"


def _quiet(fn, *args, **kwargs):
    """Run a CLI's main in-process with its chatter kept off stdout (the JSON line's)."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            return fn(*args, **kwargs)
        except BaseException:
            sys.stderr.write(out.getvalue()[-4000:])
            raise


def section_pretrain(run: Run) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_pretrain
    import torch
    from bench_model import matmul_peak
    peak = matmul_peak(run.device, n=run.peak_n, dtype=torch.bfloat16)
    out = {"model": run.pretrain_model[1], "input_dim": run.dim, "amp": "bf16",
           "bf16_matmul_peak_gflops_per_s": round(peak / 1e9, 1), "compile_backend": run.compile_backend}
    for name, compile_flag in (("eager", []), ("compiled", ["--compile", run.compile_backend])):
        train_args, info = bench_pretrain.parse_train_args(
            ["--data_path", str(run.corpus_dir / "pretrain"), *run.pretrain_model, "--amp", "bf16",
             "--device", run.device, "--num_workers", "2" if run.cuda else "0", *compile_flag], str(run.work))
        stats = bench_pretrain.run_mode(train_args, info, True, run.steps, run.warmup, {"bf16": peak})
        stats["mfu_bf16"] = stats.pop("fraction_of_bf16_peak")
        out[name] = stats
    if not out["compiled"]["state_dict_keys_uncompiled"]:
        raise CheckFailed("the compiled model's state_dict has _orig_mod. keys: checkpoints would not load")
    out["compile_speedup"] = round(out["compiled"]["real_tokens_per_s"] / out["eager"]["real_tokens_per_s"], 3)
    out["compile_pays"] = out["compile_speedup"] > 1.0
    return out


def _pretrain_argv(run: Run, out: Path, batch_size: int) -> list[str]:
    return ["--data_path", str(run.corpus_dir / "pretrain"), *run.small_model, "--epochs", "2", "--warmup_epochs",
            "1", "--blr", "5e-2", "--num_workers", "0", "--no_progress", "--duration_max", "200", "--val_fraction",
            "0.2", "--amp", "none", "--device", run.device, "--output_dir", str(out), "--batch_size",
            str(batch_size), "--keep_every", "0"]


def _world(run: Run) -> int:
    return run.gpus if run.cuda else 2


def section_pretrain_cli(run: Run) -> dict:
    import main_pretrain
    world = max(_world(run), 1)
    result = _quiet(main_pretrain.main, _pretrain_argv(run, run.work / "single", 4 * world))
    run.results["checkpoint"] = result["checkpoint"]
    run.results["single_history"] = result["history"]
    return {"status": "ok", "epochs": len(result["history"]), "train_loss": result["train_loss"],
            "val_loss": result.get("val_loss"), "checkpoint": result["checkpoint"]}


def section_ddp(run: Run) -> dict:
    world = _world(run)
    if world < 2:
        return {"status": "skipped", "reason": f"{world} GPU visible: torchrun needs more than one"}
    if "single_history" not in run.results:
        raise CheckFailed("no one-process reference (pretrain_cli failed)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           "main_pretrain.py", *_pretrain_argv(run, run.work / "ddp", 4)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CheckFailed(f"torchrun exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    ddp = [json.loads(line) for line in (run.work / "ddp" / "log.txt").read_text().splitlines()]
    rtol = DDP_RTOL["cuda" if run.cuda else "cpu"]
    worst = 0.0
    for a, b in zip(run.results["single_history"], ddp, strict=True):
        for key in ("train_loss", "val_loss"):
            worst = max(worst, abs(b[key] - a[key]) / abs(a[key]))
    import torch
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)["model"]  # noqa: E731
    single, multi = load(run.results["checkpoint"]), load(run.work / "ddp" / "checkpoint-last.pth")
    param_diff = max(float((single[k].float() - multi[k].float()).abs().max()) for k in single)
    out = {"world_size": world, "backend": "nccl" if run.cuda else "gloo", "amp": "none",
           "loss_max_rel_diff": worst, "rtol": rtol, "param_max_abs_diff": param_diff}
    if worst > rtol:
        raise CheckFailed(f"torchrun x{world} losses differ from one process by {worst:.2e} (> {rtol:g}): {out}")
    # The contrastive objective's gathered negatives get their check here once that objective
    # exists: the same N-process vs one-process comparison of its loss and gradients.
    return out


def section_probes(run: Run) -> dict:
    if "checkpoint" not in run.results:
        raise CheckFailed("no checkpoint (pretrain_cli failed)")
    import numpy as np

    import engine_probe
    import extract_features
    corpus, out = run.corpus_dir, {}
    for probe in ("ap", "lp"):
        argv = ["--dataset", "synthetic", "--annotations", str(corpus / "tasks"), "--task", "style",
                "--data_path", str(corpus / "benchmark"), "--backbone", "lvmae", "--checkpoint",
                run.results["checkpoint"], "--output_dir", str(run.work / "probe"), "--device", run.device,
                "--amp", "bf16", "--epochs", "2"]
        result = _quiet(engine_probe.main, argv, probe)[0]
        out[probe] = {"metric": result["metric"], "test": round(result["test"][result["metric"]], 4)}
    features = run.work / "features"
    _quiet(extract_features.main, ["--data_path", str(corpus / "benchmark"), "--checkpoint", run.results["checkpoint"],
                                   "--output_dir", str(features), "--device", run.device, "--amp", "bf16"])
    cls = np.load(features / "cls.npy")
    if not np.isfinite(cls).all():
        raise CheckFailed(f"extract_features.py wrote non-finite features to {features / 'cls.npy'}")
    out["extract_features"] = {"videos": int(cls.shape[0]), "dim": int(cls.shape[1])}
    return {"status": "ok", "amp": "bf16", **out}


def section_extraction(run: Run) -> dict:
    missing = [name for module, name in OPTIONAL.items() if module != "decord" and importlib.util.find_spec(module) is None]
    if missing:
        return {"status": "skipped", "reason": f"needs {' and '.join(missing)}"}
    import numpy as np

    from datasets.store import EmbeddingStore
    from preprocessing import extract
    from preprocessing.make_tiny_encoder import make_tiny_encoder
    from preprocessing.synthetic_videos import write_video
    videos = run.work / "videos"
    videos.mkdir(exist_ok=True)
    write_video(videos / "ip.mp4", seconds=7, fps=10, size=(64, 48))
    write_video(videos / "bframes.mp4", seconds=6, fps=25, size=(160, 96), crf=18, bframes=3, preset="medium")
    dtype = "float16" if run.cuda else "float32"
    out = {"dtype": dtype, "reader": "auto"}
    for backend in ("clip", "languagebind"):
        if backend == "languagebind" and importlib.util.find_spec("languagebind") is None:
            out[backend] = {"status": "skipped", "reason": "needs languagebind"}
            continue
        model = make_tiny_encoder(backend, run.work / f"tiny_{backend}", dim=16, image_size=32)
        summary = _quiet(extract.main, [str(videos), "--encoder", backend, "--checkpoint", str(model), "--out",
                                        str(run.work / f"store_{backend}"), "--device", run.device, "--dtype", dtype,
                                        "--num_workers", "1", "--batch_size", "4", "--no_progress"])
        if summary["done"] != 2 or summary["failed"]:
            raise CheckFailed(f"{backend} extraction: {summary['done']} of 2 videos done, {summary['failed']} failed")
        store = EmbeddingStore(run.work / f"store_{backend}")
        vectors = np.concatenate([store.get(v) for v in store.video_ids])
        if not np.isfinite(vectors).all():
            raise CheckFailed(f"{backend} extraction in {dtype} wrote non-finite vectors")
        out[backend] = {"segments": int(len(vectors)), "segments_per_s": summary["segments_per_s"]}
    return {"status": "ok", **out}


# The sections in order. A new CUDA path gets its section here (the contrastive objective's
# gathered negatives: in section_ddp, see there).
SECTIONS = (("pretrain", section_pretrain), ("pretrain_cli", section_pretrain_cli), ("ddp", section_ddp),
            ("probes", section_probes), ("extraction", section_extraction))


def run_sections(device: str, work: Path) -> dict:
    from datasets import synthetic
    run = Run(device, work)
    _quiet(synthetic.main, ["--out", str(run.corpus_dir), "--dim", str(run.dim), *run.corpus])
    report = {}
    for name, section in SECTIONS:
        start = time.perf_counter()
        try:
            result = section(run)
            result.setdefault("status", "ok")
        except (Exception, SystemExit) as e:  # every section is reported, whatever failed before it
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report[name] = result
        print(f"gpu_check: {name} {result['status']} ({result['seconds']} s)", file=sys.stderr)
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (every visible GPU) or cpu (tiny sizes, gloo)")
    p.add_argument("--work_dir", default=None, help="keep the corpus, runs and stores here (default: a temporary one)")
    p.add_argument("--output", default=None, help="also append the JSON line to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from util.logging import emit_json_line  # stdlib only: works when the checked packages do not
    result = {"gpu_check": args.device, "python": sys.version.split()[0]}
    if args.device.startswith("cuda") and not gpu_present():
        result.update(ok=True, status="no GPU", reason="no CUDA device visible; nothing checked (--device cpu runs "
                                                      "the same sequence at tiny sizes)")
        print("gpu_check: no GPU (no CUDA device visible); nothing to check", file=sys.stderr)
    else:
        try:
            result["versions"] = check_versions()
        except CheckFailed as e:
            result.update(ok=False, versions={"status": "failed", "error": str(e)})
        else:
            import torch
            result["torch_cuda"] = torch.version.cuda
            result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
                if args.device.startswith("cuda") else []
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(args.work_dir or tmp)
                work.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                result.update(run_sections(args.device, work))
                result["seconds"] = round(time.perf_counter() - start, 1)
            result["ok"] = all(result[name]["status"] != "failed" for name, _ in SECTIONS)
    emit_json_line(result, args.output)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
