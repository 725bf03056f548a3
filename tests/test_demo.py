"""The demo head: its layers, its texture, and an acquisition without the inverse crime."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from mri_recon.data.demo import (
    HEAD_LAYERS_MM,
    TISSUES,
    Acquisition,
    acquire,
    fine_texture,
    head_layers,
    synthesize_slab,
)
from mri_recon.errors import UserError

from .conftest import make_tiny_data

SMALL = Acquisition(
    image_size=64,
    kspace_width=72,
    acquired_columns=68,
    field_of_view_mm=240.0,
    num_slices=2,
    slice_spacing_mm=4.0,
    snr=1e9,
    signal_scale=3e-4,
    num_coils=1,
    supersampling=2,
)


def test_head_layers_wrap_the_brain_in_order() -> None:
    outside_mm = np.linspace(0.0, 40.0, 801, dtype=np.float32).reshape(1, 1, -1)
    brain = (outside_mm == 0).astype(np.float32)
    layers = head_layers(np.random.default_rng(0), outside_mm, brain)

    total = brain + sum(layers.values())
    assert np.all(total <= 1.0 + 1e-6)
    nominal_mm = sum(thickness for _, thickness in HEAD_LAYERS_MM)
    assert np.allclose(total[outside_mm < 0.5 * nominal_mm], 1.0)  # no gaps inside the head
    assert np.all(total[outside_mm > 2.0 * nominal_mm] == 0.0)  # air beyond it
    # Inside out: CSF, the inner table, marrow, the outer table, fat, skin.
    first_mm = {name: outside_mm[layers[name] > 0.5].min() for name in layers}
    last_mm = {name: outside_mm[layers[name] > 0.5].max() for name in layers}
    assert first_mm["csf"] < first_mm["bone"] < first_mm["marrow"] < last_mm["bone"]
    assert last_mm["marrow"] < last_mm["bone"] < first_mm["fat"] < first_mm["skin"]


def test_head_thickness_varies_between_volumes() -> None:
    outside_mm = np.linspace(0.0, 40.0, 801, dtype=np.float32).reshape(1, 1, -1)
    brain = (outside_mm == 0).astype(np.float32)
    skins = [head_layers(np.random.default_rng(seed), outside_mm, brain)["skin"] for seed in (0, 1)]
    assert np.abs(skins[0] - skins[1]).max() > 0.5


def test_texture_is_fine_and_of_unit_spread() -> None:
    texture = fine_texture(np.random.default_rng(0), (2, 256, 256), correlation_px=2.0)
    assert 0.85 < texture.std() < 1.15
    neighbour = np.corrcoef(texture[..., :-1].ravel(), texture[..., 1:].ravel())[0, 1]
    far = np.corrcoef(texture[..., :-12].ravel(), texture[..., 12:].ravel())[0, 1]
    assert neighbour > 0.7 and abs(far) < 0.1


def test_synthesized_head_is_finer_than_the_acquired_grid() -> None:
    obj, contrast = synthesize_slab(np.random.default_rng(0), SMALL)
    height, width = 2 * SMALL.image_size, SMALL.kspace_width
    assert obj.shape == (SMALL.num_slices, 2 * height, 2 * width)
    assert contrast in ("AXT1", "AXT2", "AXPD") and len(TISSUES) == 7
    quarter = obj.shape[1] // 4
    assert np.all(obj[:, :quarter] == 0) and np.all(obj[:, -quarter:] == 0)  # oversampled readout
    kspace, target = acquire(np.random.default_rng(0), obj, SMALL)
    assert kspace.shape == (SMALL.num_slices, height, width)
    assert target.shape == (SMALL.num_slices, SMALL.image_size, SMALL.image_size)


def edge_overshoot(acq: Acquisition) -> float:
    """Target maximum / plateau of a disk of 1 drawn on the acquisition's object grid."""
    height, width = acq.supersampling * 2 * acq.image_size, acq.supersampling * acq.kspace_width
    rows, cols = np.meshgrid(
        np.arange(height) - height / 2, np.arange(width) - width / 2, indexing="ij"
    )
    disk = (rows**2 + cols**2 < (0.3 * width) ** 2).astype(np.complex64)
    _, target = acquire(np.random.default_rng(0), np.stack([disk, disk]), acq)
    center = acq.image_size // 2
    return target.max() / np.median(target[0, center - 4 : center + 4, center - 4 : center + 4])


def test_sharp_edges_ring_in_the_target() -> None:
    """No inverse crime: a disk drawn on the fine grid reaches the target through truncated
    k-space, so its edge overshoots (Gibbs); drawn on the target's own grid (supersampling=1, the
    inverse crime) it barely does."""
    assert edge_overshoot(SMALL) > 1.08
    assert edge_overshoot(dataclasses.replace(SMALL, supersampling=1)) < 1.06


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("supersampling=0", "supersampling >= 1"),
        ("acquired_columns=500", "image_size <= acquired_columns <= kspace_width"),
        ("challenges=[knee]", "challenges: expected entries"),
    ],
)
def test_bad_generator_settings_are_named(tmp_path: Path, override: str, expected: str) -> None:
    with pytest.raises(UserError, match=re.escape(expected)):
        make_tiny_data(tmp_path, extra=(override,))
    assert not any(tmp_path.iterdir())  # nothing written
