"""Hugging Face Hub format for LV-MAE: ``LVMAE.save_pretrained(dir)`` / ``LVMAE.from_pretrained(dir
or repo id)`` / ``push_to_hub`` through ``huggingface_hub.PyTorchModelHubMixin``.

What differs from the stock mixin (huggingface_hub 0.36):

- Loading is strict by default (the mixin's default is ``strict=False``, which silently keeps
  random weights for a missing key): a missing, unexpected or mis-shaped key is an error naming the
  directory. ``strict=False`` is still accepted for callers who mean it.
- Loading goes through ``util.checkpoint`` (``load_pretrained``), the loader of every consumer:
  the same ``format_version`` upgrades and the same refusal of a ``config.json`` without the data's
  encoder. A repo id is first fetched with ``snapshot_download`` (the ``config.json``,
  ``model.safetensors`` and model card only), then read the same way.
- The returned model keeps the whole ``config.json`` (data, objective, recipe) as its hub config,
  so ``save_pretrained`` of a loaded model writes a directory that loads again.

``config.json`` layout: ``util.checkpoint`` ("exported model directories").
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import PyTorchModelHubMixin

HUB_FILES = ["config.json", "model.safetensors", "README.md"]


class StrictHubMixin(PyTorchModelHubMixin):
    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download: bool = False,
                         proxies=None, resume_download=None, local_files_only: bool = False, token=None,
                         map_location: str = "cpu", strict: bool = True, config: dict | None = None,
                         **model_kwargs):
        from util.checkpoint import load_pretrained  # util.checkpoint imports models_lvmae, which imports this

        path = Path(model_id)
        if not path.is_dir():
            from huggingface_hub import snapshot_download
            path = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                          force_download=force_download, proxies=proxies, token=token,
                                          local_files_only=local_files_only, allow_patterns=HUB_FILES))
        # The mixin fills model_kwargs with config.json's constructor arguments; the rest are the caller's.
        overrides = {k: v for k, v in model_kwargs.items() if not config or k not in config or config[k] != v}
        unknown = set(overrides) - {"max_len"}
        if unknown:
            # config.json fills in every constructor argument; overriding one would load weights
            # into another architecture.
            raise TypeError(f"from_pretrained: only max_len can be overridden, not {sorted(unknown)}")
        model, _ = load_pretrained(path, device=map_location, max_len=overrides.get("max_len"), frozen=False,
                                   strict=strict)
        return model

