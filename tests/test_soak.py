"""Long runs: resident memory stays flat over many epochs (slow; `make test-all` runs it)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import soak  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("num_workers, train", [(0, True), (2, False)])
def test_memory_growth_under_five_percent(tiny_root: Path, num_workers: int, train: bool) -> None:
    samples = soak.soak(tiny_root, "multicoil", epochs=40, num_workers=num_workers, train=train)
    assert soak.growth(samples) < 0.05, samples
