"""benchmarks/gpu_check.py: its CPU mode (the same sequence as on CUDA at tiny sizes, 2 gloo
processes) passes here, ``make gpu-check`` without a GPU says so and exits 0, and the version
and optional-package checks name the package at fault."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.slow
def test_cpu_mode_runs_every_section(tmp_path):
    result = gpu_check.main(["--device", "cpu", "--work_dir", str(tmp_path)])
    assert result["ok"], result
    assert {name: result[name]["status"] for name, _ in gpu_check.SECTIONS} == {
        "pretrain": "ok", "pretrain_cli": "ok", "ddp": "ok", "probes": "ok", "extraction": "ok"}
    pretrain = result["pretrain"]
    assert pretrain["compiled"]["state_dict_keys_uncompiled"] and pretrain["eager"]["real_tokens_per_s"] > 0
    assert 0 < pretrain["eager"]["mfu_bf16"] and isinstance(pretrain["compile_pays"], bool)
    # the same windows and steps on 2 gloo processes: the losses agree to float summation order
    assert result["ddp"]["world_size"] == 2 and result["ddp"]["loss_max_rel_diff"] <= gpu_check.DDP_RTOL["cpu"]
    assert result["extraction"]["clip"]["segments"] == result["extraction"]["languagebind"]["segments"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, make gpu-check runs the whole check")
def test_make_gpu_check_without_a_gpu_says_so_and_exits_0():
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no GPU" in proc.stderr
    assert '"status": "no GPU"' in proc.stdout.splitlines()[-1]


def test_versions_fail_naming_the_package(monkeypatch):
    real = gpu_check.importlib.metadata.version

    def fake(package):
        if package == "tensorboard":
            raise gpu_check.importlib.metadata.PackageNotFoundError(package)
        return {"torch": "2.4.1+cu121", "timm": "1.0.25"}.get(package) or real(package)

    monkeypatch.setattr(gpu_check.importlib.metadata, "version", fake)
    with pytest.raises(gpu_check.CheckFailed) as e:
        gpu_check.check_versions()
    assert str(e.value) == "torch 2.4.1+cu121 is older than 2.5; timm 1.0.25 is older than 1.0.26; tensorboard is missing"
    result = gpu_check.main(["--device", "cpu"])  # nothing else runs, exit code 1
    assert not result["ok"] and result["versions"]["status"] == "failed" and "pretrain" not in result


def test_sections_needing_an_optional_package_are_skipped_naming_it(monkeypatch, tmp_path):
    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    assert gpu_check.section_extraction(gpu_check.Run("cpu", tmp_path)) == {"status": "skipped",
                                                                            "reason": "needs PyAV (av)"}
    assert gpu_check.check_versions()["optional_importable"]["PyAV (av)"] is False
