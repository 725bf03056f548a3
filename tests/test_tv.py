"""The TV compressed-sensing solver: adjoints, convergence, recovery, batching, coil maps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastmri.data.subsample import RandomMaskFunc
from skimage.data import shepp_logan_phantom
from skimage.metrics import structural_similarity
from skimage.transform import resize

from mri_recon.baselines import coil_maps, tv
from mri_recon.baselines.coil_maps import (
    MapSettings,
    center_columns,
    espirit_covariance,
    espirit_kernels,
    espirit_maps,
    estimate_maps,
)
from mri_recon.baselines.tv import (
    SenseOperator,
    TVSettings,
    gradient,
    gradient_adjoint,
    slices_per_chunk,
    solve_tv,
    tv_objective,
    tv_reconstruct,
    tv_volume,
    tv_volume_lambdas,
)
from mri_recon.data.transforms import Sample
from mri_recon.fourier import fft2c, ifft2c

SIZE = 64


def phantom(size: int = SIZE) -> torch.Tensor:
    """A noiseless piecewise-constant Shepp-Logan phantom (size, size), max 1."""
    image = resize(shepp_logan_phantom(), (size, size), order=0, anti_aliasing=False)
    return torch.from_numpy(image / image.max()).to(torch.complex64)


def column_mask(
    acceleration: int, center_fraction: float, seed: int, width: int = SIZE
) -> torch.Tensor:
    mask, _ = RandomMaskFunc([center_fraction], [acceleration])((1, width, 1), seed=seed)
    return mask.reshape(1, width)


def smooth_maps(coils: int, size: int = SIZE) -> torch.Tensor:
    """Smooth unit-norm coil maps (1, coils, size, size) around a ring."""
    rows, cols = torch.meshgrid(
        torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij"
    )
    maps = []
    for coil in range(coils):
        angle = 2 * np.pi * coil / coils
        distance2 = (rows - size * 0.6 * np.sin(angle)) ** 2 + (
            cols - size * 0.6 * np.cos(angle)
        ) ** 2
        maps.append(
            torch.exp(-distance2 / (2 * (0.5 * size) ** 2)) * torch.exp(1j * torch.tensor(angle))
        )
    maps = torch.stack(maps)
    return (maps / maps.abs().pow(2).sum(0).sqrt())[None].to(torch.complex64)


def test_fft_and_operator_adjoints() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 12, dtype=torch.complex64, generator=generator)
    k = torch.randn(2, 3, 16, 12, dtype=torch.complex64, generator=generator)
    g = torch.randn(2, 2, 16, 12, dtype=torch.complex64, generator=generator)
    maps = torch.randn(2, 3, 16, 12, dtype=torch.complex64, generator=generator)
    operator = SenseOperator((torch.rand(2, 12, generator=generator) > 0.5).float(), maps)
    inner = torch.vdot
    torch.testing.assert_close(
        inner(operator.forward(x).flatten(), k.flatten()),
        inner(x.flatten(), operator.adjoint(k).flatten()),
    )
    torch.testing.assert_close(
        inner(gradient(x).flatten(), g.flatten()), inner(x.flatten(), gradient_adjoint(g).flatten())
    )
    torch.testing.assert_close(ifft2c(fft2c(x)), x)


@pytest.mark.parametrize("centered", [True, False])
def test_the_coil_step_needs_the_columns_fft_alone(centered: bool) -> None:
    """The data-consistency step with 1-D FFTs along the columns equals its 2-D form,
    F^H ((y + rho F v) / (M + rho)), since the mask and rho do not vary along the rows."""
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(2, 3, 16, 12, dtype=torch.complex64, generator=generator)
    mask = (torch.rand(2, 12, generator=generator) > 0.5).float()
    operator = SenseOperator(mask, None, centered=centered)
    y = operator.mask * torch.randn(2, 3, 16, 12, dtype=torch.complex64, generator=generator)
    rho = torch.tensor([0.1, 3.0]).reshape(2, 1, 1, 1)
    two_d = operator.ifft((y + rho * operator.fft(v)) / (operator.mask + rho))
    rows = operator.ifft_rows(y)
    one_d = operator.ifft_columns((rows + rho * operator.fft_columns(v)) / (operator.mask + rho))
    torch.testing.assert_close(one_d, two_d, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(operator.ifft_columns(rows), operator.ifft(y), rtol=1e-5, atol=1e-5)


def test_objective_converges_within_configured_iterations() -> None:
    mask = column_mask(4, 0.08, seed=1)
    kspace = mask[:, None, None, :] * fft2c(phantom()[None, None])
    noise = torch.randn(kspace.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    kspace = kspace + mask[:, None, None, :] * noise
    operator = SenseOperator(mask, None)
    configured = TVSettings(lam=0.01, iterations=100, tolerance=0.0)
    objectives = []
    for iterations in (10, 100, 1000):
        x, _ = solve_tv(kspace, operator, TVSettings(configured.lam, iterations, 0.0))
        objectives.append(tv_objective(x, operator, kspace, configured.lam).item())
    start = tv_objective(operator.adjoint(kspace), operator, kspace, configured.lam).item()
    assert start > objectives[0] > objectives[1]
    assert abs(objectives[1] - objectives[2]) / objectives[2] < 1e-3


def test_residual_balancing_recovers_from_a_poor_penalty() -> None:
    """baseline.balance: with rho 100x below the configured rule (0.1 lam instead of 10 lam),
    balancing brings 100 iterations far closer to the converged objective than the fixed rho."""
    mask = column_mask(4, 0.08, seed=1)
    kspace = mask[:, None, None, :] * fft2c(phantom()[None, None])
    noise = torch.randn(kspace.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    kspace = kspace + mask[:, None, None, :] * noise
    operator, lam = SenseOperator(mask, None), 0.1

    def gap(settings: TVSettings) -> float:
        x, _ = solve_tv(kspace, operator, settings)
        return (tv_objective(x, operator, kspace, lam).item() - converged) / converged

    converged_x, _ = solve_tv(kspace, operator, TVSettings(lam, 3000, 0.0))
    converged = tv_objective(converged_x, operator, kspace, lam).item()
    fixed = gap(TVSettings(lam, 100, 0.0, rho_per_lam=0.1))
    balanced = gap(TVSettings(lam, 100, 0.0, rho_per_lam=0.1, balance=10.0))
    assert balanced < fixed / 10 and balanced < 0.01


def test_noiseless_phantom_recovered_at_4x() -> None:
    truth = phantom(128)
    mask = column_mask(4, 0.08, seed=2, width=128)
    kspace = mask[:, None, :] * fft2c(truth[None])
    settings = TVSettings(lam=1e-3, iterations=300, tolerance=0.0)
    recon = tv_reconstruct(kspace, mask, (128, 128), settings)[0].numpy()
    zero_filled = ifft2c(kspace)[0].abs().numpy()
    target = truth.abs().numpy()
    assert structural_similarity(target, recon, data_range=1.0) > 0.95
    assert structural_similarity(target, zero_filled, data_range=1.0) < 0.75


def test_batched_and_single_slice_solves_agree() -> None:
    images = torch.stack([phantom(), phantom().flip(0), phantom().T.contiguous()])
    masks = torch.cat([column_mask(4, 0.08, seed=s) for s in range(3)])
    kspace = masks[:, None, :] * fft2c(images)
    settings = TVSettings(lam=0.01, iterations=60, tolerance=1e-3)
    batched = tv_reconstruct(kspace, masks, (SIZE, SIZE), settings)
    for index in range(3):
        single = tv_reconstruct(
            kspace[index : index + 1], masks[index : index + 1], (SIZE, SIZE), settings
        )
        torch.testing.assert_close(batched[index : index + 1], single, rtol=1e-4, atol=1e-6)


def test_result_does_not_depend_on_raw_units() -> None:
    mask = column_mask(4, 0.08, seed=3)
    kspace = mask[:, None, :] * fft2c(phantom()[None])
    settings = TVSettings(lam=0.01, iterations=50, tolerance=0.0)
    unit = tv_reconstruct(kspace, mask, (SIZE, SIZE), settings)
    tiny = tv_reconstruct(kspace * 1e-4, mask, (SIZE, SIZE), settings)
    torch.testing.assert_close(tiny * 1e4, unit, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", ["walsh", "espirit", "center_lines"])
def test_sensitivities_match_true_maps_and_sense_tv_recovers(method: str) -> None:
    truth = phantom(128)
    maps = smooth_maps(6, 128)
    mask = column_mask(4, 0.08, seed=4, width=128)
    kspace = mask[:, None, None, :] * fft2c(maps * truth)
    estimated, _, used = estimate_maps(kspace, mask, MapSettings(method=method))
    assert used == method
    torch.testing.assert_close(estimated.abs().pow(2).sum(dim=1), torch.ones(1, 128, 128))
    support = truth.abs() > 0.05
    agreement = (estimated.conj() * maps).sum(dim=1).abs()[0][support]
    # The center lines' maps are their coil images: as blurred (and ringing) as 10 lines make
    # them, so a few pixels near the edge of the object agree less.
    center_lines = method == "center_lines"
    assert agreement.mean() > (0.998 if center_lines else 0.999)
    assert agreement.min() > (0.9 if center_lines else 0.99)
    settings = TVSettings(lam=1e-3, iterations=100, tolerance=0.0)
    target = truth.abs().numpy()
    with_true_maps = solve_tv(kspace, SenseOperator(mask, maps), settings)[0][0].abs().numpy()
    recon = tv_reconstruct(kspace, mask, (128, 128), settings)[0].numpy()
    zero_filled = ifft2c(kspace)[0].abs().pow(2).sum(dim=0).sqrt().numpy()
    assert structural_similarity(target, with_true_maps, data_range=1.0) > 0.98
    # Estimated from 10 calibration lines, the maps cost some quality, yet far above zero-filled.
    assert structural_similarity(target, recon, data_range=1.0) > 0.85
    assert structural_similarity(target, zero_filled, data_range=1.0) < 0.6


@pytest.mark.parametrize("shape", [(2, 40, 36), (2, 3, 40, 36)])
def test_reconstruction_is_cropped_magnitude(shape: tuple[int, ...]) -> None:
    kspace = torch.randn(shape, dtype=torch.complex64)
    mask = torch.ones(2, 36)
    out = tv_reconstruct(kspace, mask, (20, 20), TVSettings(0.01, 5, 0.0))
    assert out.shape == (2, 20, 20) and out.dtype == torch.float32 and (out >= 0).all()


def test_espirit_is_chosen_where_the_center_is_wide_enough() -> None:
    """auto: ESPIRiT from 6 center columns on, the center lines' maps below; ESPIRiT's
    eigenvalue crops the image to where the coils see signal."""
    truth = phantom(128)
    maps = smooth_maps(6, 128)
    for fraction, expected in ((0.08, "espirit"), (0.03, "center_lines")):
        mask = column_mask(4, fraction, seed=4, width=128)
        kspace = mask[:, None, None, :] * fft2c(maps * truth)
        _, support, used = estimate_maps(kspace, mask, MapSettings())
        assert used == expected
    _, support, _ = estimate_maps(kspace, column_mask(4, 0.08, seed=4, width=128), MapSettings())
    assert support.all()  # smooth maps that cover the whole field of view: no crop


def test_a_slice_with_too_few_lines_is_reported_not_returned_as_garbage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """3 center columns of 128 at 8x: Walsh's maps from them are wrong enough that the solution
    fits the data worse than no image; the guard returns the zero-filled image and logs the
    file and slice."""
    truth, maps = phantom(128), smooth_maps(6, 128)
    mask = column_mask(8, 0.02, seed=4, width=128)
    kspace = mask[:, None, None, :] * fft2c(maps * truth)
    kspace = kspace + mask[:, None, None, :] * 0.05 * torch.randn(
        kspace.shape, generator=torch.Generator().manual_seed(0)
    )
    batch = Sample(
        image=torch.zeros(1, 1, 128, 128),
        target=torch.zeros(1, 1, 128, 128),
        fname=["file_x.h5"],
        slice_num=torch.tensor([7]),
        masked_kspace=kspace,
        mask=mask,
    )
    settings = TVSettings(1e-3, 100, 0.0, maps=MapSettings(method="walsh"))
    result = tv_volume(batch, settings, torch.device("cpu"), batch_size=4)
    assert result.diverged.tolist() == [True]
    operator_maps, _, _ = estimate_maps(kspace, mask, MapSettings(method="walsh"))
    start = (operator_maps.conj() * ifft2c(kspace)).sum(dim=1).abs()  # zero-filled, unscaled
    torch.testing.assert_close(result.images, start, rtol=1e-4, atol=1e-6)
    assert "file_x.h5 slice 7 diverged" in caplog.text
    good = tv_volume(batch, TVSettings(1e-3, 100, 0.0), torch.device("cpu"), batch_size=4)
    assert good.diverged.tolist() == [False] and good.maps == "center_lines"


def test_a_lam_sweep_estimates_each_chunks_maps_once_with_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mri-recon-tune-tv's path: three lam on a 3-slice volume in chunks of 2 estimate the maps
    twice (once a chunk), and each lam's result equals tv_volume's at that lam alone."""
    truth, maps = phantom(), smooth_maps(4, SIZE)
    mask = column_mask(4, 0.16, seed=1).expand(3, -1)
    kspace = mask[:, None, None, :] * fft2c(maps * truth).expand(3, -1, -1, -1)
    batch = Sample(
        image=torch.zeros(3, 1, SIZE, SIZE),
        target=torch.zeros(3, 1, SIZE, SIZE),
        fname=["file_x.h5"] * 3,
        slice_num=torch.arange(3),
        masked_kspace=kspace,
        mask=mask,
    )
    settings, lambdas, cpu = TVSettings(1e-3, 20, 0.0), [1e-4, 1e-3, 1e-2], torch.device("cpu")
    calls = []
    counted = tv.estimate_maps

    def estimate(*args: object) -> tuple:
        calls.append(args)
        return counted(*args)

    monkeypatch.setattr(tv, "estimate_maps", estimate)
    swept = tv_volume_lambdas(batch, settings, lambdas, cpu, batch_size=2)
    assert len(calls) == 2
    for lam, result in zip(lambdas, swept, strict=True):
        alone = tv_volume(batch, TVSettings(lam, 20, 0.0), cpu, batch_size=2)
        torch.testing.assert_close(result.images, alone.images, rtol=0, atol=0)
    assert not torch.equal(swept[0].images, swept[2].images)


def test_a_cpu_solves_in_chunks_that_glibc_keeps_on_its_heap() -> None:
    """On a CPU a chunk's (B, C, H, W) complex tensors stay within 32 MiB (larger ones are mapped
    and page-faulted afresh each time: three times slower); a GPU takes the configured batch."""
    release = torch.zeros(3, 15, 640, 368, dtype=torch.complex64)  # 28 MiB a slice
    demo = torch.zeros(3, 8, 256, 144, dtype=torch.complex64)  # 2.25 MiB a slice
    assert slices_per_chunk(release, 16, torch.device("cpu")) == 1
    assert slices_per_chunk(demo, 16, torch.device("cpu")) == 14
    assert slices_per_chunk(demo, 4, torch.device("cpu")) == 4
    assert slices_per_chunk(release, 16, torch.device("cuda")) == 16


@pytest.mark.parametrize("shape", [(40, 30, 5, 3), (41, 29, 6, 6), (10, 9, 6, 5), (64, 48, 6, 1)])
def test_espirit_covariance_from_a_small_grid_is_the_full_size_sum(shape: tuple) -> None:
    """The covariance computed on the small grid its band limit needs, then zero-padded in
    k-space, equals the sum over kernels of g g^H with every kernel image made at full size."""
    height, width, rows, columns = shape
    kernels = torch.randn(
        2, 4, 3, rows, columns, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)
    )
    top, left = height // 2 - rows // 2, width // 2 - columns // 2
    padding = (left, width - left - columns, top, height - top - rows)
    images = ifft2c(F.pad(kernels, padding))  # (B, K, C, H, W)
    direct = torch.einsum("bkchw,bkdhw->bhwcd", images, images.conj())
    direct = direct * (height * width / (rows * columns))
    found = espirit_covariance(kernels, height, width)
    torch.testing.assert_close(found, direct, rtol=0, atol=1e-4)


def test_espirit_power_iteration_finds_the_dominant_eigenpair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The power iteration, normalized only every few products, gives what normalizing after
    every product gives, and each pixel's dominant eigenvalue of the ESPIRiT covariance and its
    eigenvector (up to phase) where the second eigenvalue is clearly smaller."""
    truth, true_maps = phantom(), smooth_maps(4)
    mask = column_mask(4, 0.16, seed=4)
    kspace = mask[:, None, None, :] * fft2c(true_maps * truth)
    count = int(center_columns(mask.bool())[0])
    settings = MapSettings(calibration_rows=SIZE)
    maps, eigenvalue = espirit_maps(kspace, count, settings)
    monkeypatch.setattr(coil_maps, "NORMALIZE_EVERY", 1)
    every_maps, every_eigenvalue = espirit_maps(kspace, count, settings)
    torch.testing.assert_close(eigenvalue, every_eigenvalue, rtol=0, atol=1e-5)
    torch.testing.assert_close(maps, every_maps, rtol=0, atol=1e-5)
    start = (SIZE - count + 1) // 2
    calibration = kspace[..., start : start + count]
    kernel = (settings.kernel, min(settings.kernel, count // 2))
    covariance = espirit_covariance(espirit_kernels(calibration, kernel, 0.02), SIZE, SIZE)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    clear = (eigenvalue > 0.8) & (values[..., -2] < 0.8 * values[..., -1])
    assert clear.float().mean() > 0.3
    torch.testing.assert_close(eigenvalue[clear], values[..., -1][clear], rtol=1e-3, atol=0)
    alignment = (vectors[..., -1].conj() * maps.permute(0, 2, 3, 1)).sum(dim=-1).abs()
    assert alignment[clear].min() > 0.999


def test_espirit_kernels_span_the_calibration_matrix_s_leading_right_singular_vectors() -> None:
    """The kernels from the Gram matrix's eigenvectors span what the SVD's leading right
    singular vectors span (the covariance depends on nothing else)."""
    generator = torch.Generator().manual_seed(0)
    low_rank = torch.randn(2, 40, 5, dtype=torch.complex64, generator=generator) @ torch.randn(
        2, 5, 6 * 16 * 4, dtype=torch.complex64, generator=generator
    )
    calibration = low_rank.reshape(2, 40, 6, 16, 4).permute(0, 2, 1, 3, 4).reshape(2, 6, 40, 64)
    kernels = espirit_kernels(calibration, (4, 3), 0.02)
    blocks = calibration.unfold(2, 4, 1).unfold(3, 3, 1)
    matrix = blocks.permute(0, 2, 3, 1, 4, 5).reshape(2, -1, 6 * 4 * 3)
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    count = int((singular > 0.02 * singular[:, :1]).sum(dim=1).max())
    assert kernels.shape == (2, count, 6, 4, 3)
    found = kernels.reshape(2, count, -1)
    expected = vh[:, :count]
    torch.testing.assert_close(found.mH @ found, expected.mH @ expected, rtol=0, atol=1e-4)
