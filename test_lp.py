r"""Linear probing (paper App. 8, Table 6) of a frozen LV-MAE encoder or of the raw segment
embeddings: mean over the valid segment tokens, linear. Everything lives in ``engine_probe.py``;
``--help`` lists the flags.

    python test_lp.py --dataset lvu --task genre --data_path stores/lvu --checkpoint output/checkpoint-last.pth \
        --backbone lvmae --seeds 3 --output_dir output/probe
"""
from engine_probe import cli

if __name__ == "__main__":
    cli("lp")
