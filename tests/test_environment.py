"""The conda environment and requirements.txt pin the same packages."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pins(lines):
    return {re.sub(r"\s+", "", line) for line in lines if line and not line.startswith("#")}


def test_conda_env_has_the_same_pins_as_requirements():
    req = pins(line.strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    yaml = (REPO / "requirements.yaml").read_text()
    conda = pins(m.group(1).strip() for m in re.finditer(r"^\s+- '(.+)'$", yaml, re.M))
    assert req and req == conda
    assert all("==" in p for p in req)
