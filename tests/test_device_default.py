"""--device defaults to auto (CUDA when available, else CPU) in every script that takes it, and the
resolved device is printed at start. (Every other test passes --device cpu explicitly.)"""
from types import SimpleNamespace

import pytest
import torch

import engine_probe
import extract_features
import interpret
import main_pretrain
from datasets import captions
from preprocessing import extract
from util.cli import resolve_device_flag

PARSERS = {"probes (test_ap, test_lp, sweep_probes)": engine_probe.get_args_parser("ap"),
           "extract_features": extract_features.get_args_parser(), "interpret": interpret.get_args_parser(),
           "captions": captions.get_args_parser(), "preprocessing.extract": extract.get_args_parser(),
           "main_pretrain": main_pretrain.get_args_parser()}


@pytest.mark.parametrize("name", PARSERS)
def test_default_is_auto(name):
    assert PARSERS[name].get_default("device") == "auto"


@pytest.mark.parametrize("cuda,want", [(False, "cpu"), (True, "cuda:0")])
def test_auto_resolves_and_is_printed(monkeypatch, capsys, cuda, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    args = SimpleNamespace(device="auto")
    assert resolve_device_flag(args) == want and args.device == want
    assert capsys.readouterr().out == f"device: {want} (--device auto)\n"
    resolve_device_flag(SimpleNamespace(device="cpu"))
    assert capsys.readouterr().out == "device: cpu\n"


def test_a_script_prints_its_device_first(tmp_path, capsys):
    from pretrain_fixtures import write_store
    from models_lvmae import LVMAE
    from util.checkpoint import save_checkpoint
    store = write_store(tmp_path / "s", [3, 4])
    model = LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                  max_len=8, input_dim=8)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config,
                     "data": {"encoder": "test:tiny", "dim": 8, "normalized": False}}, tmp_path / "c.pth")
    extract_features.main(["--data_path", str(store), "--checkpoint", str(tmp_path / "c.pth"), "--output_dir",
                           str(tmp_path / "f")])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"device: {'cuda:0' if torch.cuda.is_available() else 'cpu'} (--device auto)"
