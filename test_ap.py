r"""Attentive probing (paper App. 8, Table 7) of a frozen LV-MAE encoder or of the raw segment
embeddings: one transformer block over [CLS] + tokens, LayerNorm, linear on [CLS].
Everything lives in ``engine_probe.py``; ``--help`` lists the flags.

    python test_ap.py --dataset lvu --task genre --data_path stores/lvu --checkpoint output/checkpoint-last.pth \
        --backbone lvmae --seeds 3 --output_dir output/probe
"""
from engine_probe import cli

if __name__ == "__main__":
    cli("ap")
