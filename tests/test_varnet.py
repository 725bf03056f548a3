"""VarNet: parity with fastmri.models.VarNet, single-coil, the model interface, the loss group,
several checkpoints in one evaluation, and its one-line errors."""

import json
from pathlib import Path

import h5py
import hydra
import numpy as np
import pytest
import torch
from fastmri.losses import SSIMLoss
from fastmri.models import Unet as FastmriUnet
from fastmri.models import VarNet as FastmriVarNet
from fastmri.models.varnet import SensitivityModel
from torch.nn import functional as F

from mri_recon.baselines.coil_maps import MapSettings, estimate_maps
from mri_recon.checkpoints import import_fastmri_varnet, load_model
from mri_recon.data.loaders import TrainingData
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.evaluation.run import evaluate
from mri_recon.fourier import centering_ramps, crop_readout, fft2c, ifft2c
from mri_recon.models.interface import model_output
from mri_recon.models.varnet import (
    PROXIMAL_WEIGHT_START,
    ProximalCascade,
    VarNet,
    center_lines,
    combine,
    from_fastmri,
    sense_start,
)
from mri_recon.runtime import Runtime
from mri_recon.training.settings import check_config
from mri_recon.training.state import TrainState

from .conftest import compose_config, run_cli, train_in_process
from .test_tv import column_mask, phantom, smooth_maps

TINY_VARNET = ["debug=tiny", "model=varnet", "model.num_cascades=2"]
# experiment=varnet_multicoil's maps and start
EXPERIMENT_MAPS = ["model.sens_chans=0", "model.sens_maps=espirit", "model.start=sense"]


def kspace_and_mask(coils: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random masked k-space (1, coils, H, W) and its (1, W) mask: 8 center columns, every 4th."""
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, coils, height, width, dtype=torch.complex64, generator=generator)
    mask = torch.zeros(1, width, dtype=torch.bool)
    mask[:, ::4] = True
    mask[:, width // 2 - 4 : width // 2 + 4] = True
    return kspace * mask[:, None, None, :], mask


@pytest.mark.parametrize("size", [(8, 256, 144), (15, 640, 368)], ids=["demo", "release"])
def test_same_network_as_fastmri_with_its_weights(size: tuple[int, int, int]) -> None:
    """In float64 to 1e-6 (the networks, not round-off), and in float32 to 1e-5 after one
    warm-up call of each: oneDNN's first float32 convolution call on a CPU with AMX sometimes
    differs by 1e-4 relative from its later calls (fastmri's network alone, measured)."""
    torch.manual_seed(0)
    theirs = FastmriVarNet(num_cascades=2, sens_chans=2, chans=4).eval()
    ours = VarNet(num_cascades=2, chans=4, sens_chans=2, norm="instance").eval()
    ours.load_state_dict(from_fastmri(theirs.state_dict(), pools=4, sens_pools=4))
    kspace, mask = kspace_and_mask(*size)
    fastmri_mask = mask[:, None, None, :, None]
    for dtype, tolerance in ((torch.float64, 1e-6), (torch.float32, 1e-5)):
        theirs, ours = theirs.to(dtype), ours.to(dtype)
        data = kspace.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        with torch.no_grad():
            theirs(torch.view_as_real(data), fastmri_mask, 8)  # warm-up
            expected = theirs(torch.view_as_real(data), fastmri_mask, 8)
            ours(data, mask, torch.tensor([8]), size[1:])  # warm-up
            for num_low in (8, 0):  # given, and found from the mask as fastMRI finds it
                output = ours(data, mask, torch.tensor([num_low]), size[1:])
                torch.testing.assert_close(
                    output, expected, rtol=0, atol=tolerance * expected.max()
                )


def test_fastmri_varnet_weights_become_a_file_mri_recon_eval_takes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = FastmriVarNet(num_cascades=3, pools=2, chans=4, sens_pools=3, sens_chans=2).eval()
    torch.save(theirs.state_dict(), tmp_path / "state_dict.pt")  # as fastMRI publishes them
    out = tmp_path / "varnet.safetensors"
    result = run_cli(
        "mri-recon-share", f"fastmri_varnet={tmp_path / 'state_dict.pt'}", f"out={out}"
    )
    assert result.stdout.strip() == f"wrote {out}"
    both = run_cli(
        "mri-recon-share", f"fastmri_varnet={out}", f"checkpoint={out}", f"out={out}", check=False
    )
    assert both.returncode == 2 and both.stderr.strip().startswith("error: expected checkpoint=")
    ours, train_cfg = load_model(out, torch.device("cpu"))
    assert (train_cfg.model.num_cascades, train_cfg.model.num_pool_layers) == (3, 2)
    assert (train_cfg.model.sens_chans, train_cfg.model.sens_pool_layers) == (2, 3)
    kspace, mask = kspace_and_mask(4, 64, 40)
    with torch.no_grad():
        expected = theirs(torch.view_as_real(kspace), mask[:, None, None, :, None], 8)
        output = ours(kspace, mask, torch.tensor([8]), (64, 40))
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-5 * expected.max())


def test_what_is_not_a_fastmri_varnet_state_dict_is_one_line(tmp_path: Path) -> None:
    varnet_cfg = compose_config("train", ["model=varnet"])
    torch.save(FastmriUnet(1, 1, 4, 2).state_dict(), tmp_path / "unet.pt")
    out = tmp_path / "out.safetensors"
    cases = [
        (tmp_path / "unet.pt", out, "is not a fastmri.models.VarNet state dict"),
        (tmp_path / "missing.pt", out, "does not exist"),
        (tmp_path / "unet.pt", tmp_path / "out.pt", "ending in .safetensors"),
    ]
    for path, target, message in cases:
        with pytest.raises(UserError, match=message) as error:
            import_fastmri_varnet(path, target, varnet_cfg)
        assert "\n" not in str(error.value)
    assert not out.exists()


def test_center_lines_are_found_as_fastmri_finds_them() -> None:
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, 17:23] = True  # 6 around the center
    mask[1, 18:30] = True  # asymmetric: 2 left of center, 10 right
    mask[2, ::2] = True  # no run
    ours = center_lines(mask, torch.zeros(3, dtype=torch.long)).sum(dim=-1)
    pad, counts = SensitivityModel(2, 1).get_pad_and_num_low_freqs(mask[:, None, None, :, None])
    assert ours.tolist() == counts.tolist()
    assert center_lines(mask, torch.tensor([10, 10, 10])).sum(dim=-1).tolist() == [10, 10, 10]


class NoRefinement(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(image)


def test_single_coil_has_no_sensitivity_network_and_keeps_data_consistency() -> None:
    model = VarNet(num_cascades=1, chans=4, num_pool_layers=2, challenge="singlecoil").eval()
    assert model.sens_net is None
    assert not any(name.startswith("sens_net") for name in model.state_dict())
    kspace, mask = kspace_and_mask(1, 32, 32)
    model.cascades[0].model = NoRefinement()
    with torch.no_grad():
        output = model(kspace, mask, torch.tensor([8]), (32, 32))
    expected = torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
    ).abs()[:, 0]
    torch.testing.assert_close(output, expected)  # the measured lines kept exactly


def test_sens_chans_0_takes_the_center_lines_coil_images_as_maps() -> None:
    """No sensitivity U-Net: each coil's image of the center lines, normalized to unit RSS."""
    model = VarNet(num_cascades=1, chans=4, num_pool_layers=2, sens_chans=0).eval()
    assert not any(name.startswith("sens_net") for name in model.state_dict())
    kspace, mask = kspace_and_mask(4, 32, 32)
    maps = model.sens_net(kspace, mask, torch.tensor([8]))
    images = ifft2c(kspace * center_lines(mask, torch.tensor([8]))[:, None, None, :])
    expected = images / images.abs().square().sum(dim=1, keepdim=True).sqrt()
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(maps.abs().square().sum(dim=1), torch.ones(1, 32, 32))


def test_sens_maps_espirit_are_the_tv_baselines_maps_for_each_center_width() -> None:
    """``sens_maps=espirit``: each sample's maps are ``estimate_maps``' ESPIRiT maps of its own
    center columns (10 and 5 here, in one batch), close to the true maps where the object is,
    and the same under bf16 autocast (they are computed in full precision)."""
    truth, true_maps = phantom(128), smooth_maps(6, 128)
    masks = torch.cat(
        [column_mask(4, 0.08, seed=4, width=128), column_mask(8, 0.04, seed=5, width=128)]
    ).bool()
    kspace = masks[:, None, None, :] * fft2c(true_maps * truth)
    model = VarNet(num_cascades=1, chans=4, num_pool_layers=2, sens_chans=0, sens_maps="espirit")
    no_count = torch.zeros(2, dtype=torch.long)
    lines = center_lines(masks, no_count)
    assert lines.sum(dim=-1).tolist() == [10, 4]
    maps = model.sens_net(kspace, masks, no_count)
    for index in range(2):
        alone, _, used = estimate_maps(
            kspace[index : index + 1], lines[index : index + 1], MapSettings(method="espirit")
        )
        assert used == "espirit"
        torch.testing.assert_close(maps[index : index + 1], alone)
    agreement = (maps[:1].conj() * true_maps).sum(dim=1).abs()[0][truth.abs() > 0.05]
    assert agreement.min() > 0.99
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(model.sens_net(kspace, masks, no_count), maps)
        assert model(kspace, masks, no_count, (64, 64)).isfinite().all()


def test_sens_maps_errors_are_one_line() -> None:
    with pytest.raises(UserError, match=r"model.sens_maps: expected one of .*got 'walsh'"):
        VarNet(sens_chans=0, sens_maps="walsh")
    with pytest.raises(UserError, match="sens_maps=espirit takes no sensitivity network"):
        VarNet(sens_chans=8, sens_maps="espirit")


def random_sense_problem(size: int) -> tuple[torch.Tensor, ...]:
    """A noiseless problem the coils determine: image (1, 1, size, size), random unit-norm maps
    (1, 4, size, size), a (1, 1, 1, size) mask of every other column and the 4 center ones, and
    the masked k-space (1, 4, size, size)."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(1, 4, size, size, dtype=torch.complex64, generator=generator)
    maps = maps / maps.abs().square().sum(dim=1, keepdim=True).sqrt()
    image = torch.randn(1, 1, size, size, dtype=torch.complex64, generator=generator)
    sampled = torch.zeros(1, 1, 1, size)
    sampled[..., ::2] = 1
    sampled[..., size // 2 - 2 : size // 2 + 2] = 1
    return image, maps, sampled, torch.fft.fft2(maps * image, norm="ortho") * sampled


def test_sense_start_is_the_least_squares_solution() -> None:
    """``sense_start`` fits the data better with every iteration and reaches the least-squares
    image of a dense solver (here the true one: the coils determine it), as coil k-space; fully
    sampled, one iteration is exact."""
    image, maps, sampled, measured = random_sense_problem(16)
    basis = torch.eye(256, dtype=torch.complex64).reshape(256, 1, 16, 16)
    dense = (torch.fft.fft2(maps * basis, norm="ortho") * sampled).reshape(256, -1).T
    solution = torch.linalg.lstsq(dense, measured.reshape(-1, 1)).solution.reshape(image.shape)
    torch.testing.assert_close(solution, image, rtol=1e-3, atol=1e-3)
    misfits = []
    for iterations in (1, 3, 10, 40):
        found = sense_start(measured, sampled, maps, iterations)
        misfits.append(float(((found - measured) * sampled).norm() / measured.norm()))
    assert misfits == sorted(misfits, reverse=True) and misfits[-1] < 1e-4
    expected = torch.fft.fft2(maps * solution, norm="ortho")
    close = {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(found, expected, **close)
    full = torch.fft.fft2(maps * image, norm="ortho")
    torch.testing.assert_close(sense_start(full, torch.ones_like(sampled), maps, 1), full)
    torch.testing.assert_close(sense_start(measured, sampled, maps, 200), expected, **close)


def test_sense_start_stays_put_once_solved() -> None:
    """Single-coil (S = 1) is solved in one step, the zero-filled k-space: further steps keep it
    (they divided round-off by round-off and blew it up by 1e6 before CG_TOLERANCE)."""
    _, _, sampled, _ = random_sense_problem(32)
    generator = torch.Generator().manual_seed(1)
    kspace = torch.randn(2, 1, 32, 32, dtype=torch.complex64, generator=generator) * 0.03
    measured, ones = kspace * sampled, torch.ones(2, 1, 32, 32, dtype=torch.complex64)
    for iterations in (1, 2, 10):
        torch.testing.assert_close(sense_start(measured, sampled, ones, iterations), measured)


def test_varnet_with_sense_start_and_no_cascades_returns_the_sense_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``start="sense"`` in the VarNet's modulated frame, its maps given: with no cascades the
    output is the SENSE image's magnitude (here the true image's), where the zero-filled start
    is far from it; the same under bf16 autocast (the start runs in full precision)."""
    image, maps, sampled, _ = random_sense_problem(32)
    mask = sampled.reshape(1, 32).bool()
    kspace = fft2c(maps * image) * sampled  # the centered FFT, as the data come
    no_count = torch.zeros(1, dtype=torch.long)

    def output(start: str) -> torch.Tensor:
        model = VarNet(0, sens_chans=0, start=start, sense_iterations=40)
        monkeypatch.setattr(model.sens_net, "forward", lambda *args: maps)
        return model(kspace, mask, no_count, (32, 32))[0]

    truth = image.abs()[0, 0]
    torch.testing.assert_close(output("sense"), truth, rtol=1e-3, atol=1e-3)
    assert float((output("zero_filled") - truth).norm() / truth.norm()) > 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = output("sense")
    torch.testing.assert_close(in_autocast, output("sense"))
    with pytest.raises(UserError, match=r"model.start: expected one of .*got 'tv'"):
        VarNet(start="tv")
    for wrong in (0, 2.5):
        with pytest.raises(UserError, match=r"model.sense_iterations: expected an integer >= 1"):
            VarNet(start="sense", sense_iterations=wrong)


def test_proximal_cascade_solves_the_regularized_data_consistency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With its U-Net's correction 0, a proximal cascade returns F S x for the x of a dense
    solve of (A^H A + w) x = A^H y + w z, z the coil-combined current image: neither z nor the
    data's own solution; its weight starts at PROXIMAL_WEIGHT_START and gets a gradient."""
    image, maps, sampled, measured = random_sense_problem(16)
    generator = torch.Generator().manual_seed(2)
    guess = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=generator)
    cascade = ProximalCascade(chans=2, pools=1, norm="none", groups=1, iterations=60)
    monkeypatch.setattr(cascade.model, "forward", lambda x: torch.zeros_like(x))
    weight = float(cascade.log_weight.detach().exp())
    assert weight == pytest.approx(PROXIMAL_WEIGHT_START)
    basis = torch.eye(256, dtype=torch.complex64).reshape(256, 1, 16, 16)
    dense = (torch.fft.fft2(maps * basis, norm="ortho") * sampled).reshape(256, -1).T
    normal = dense.conj().T @ dense + weight * torch.eye(256)
    rhs = dense.conj().T @ measured.reshape(-1, 1) + weight * guess.reshape(-1, 1)
    solution = torch.linalg.solve(normal, rhs).reshape(image.shape)
    current = torch.fft.fft2(maps * guess, norm="ortho")
    found = cascade(current, combine(measured, maps), sampled, maps)
    expected = torch.fft.fft2(maps * solution, norm="ortho")
    torch.testing.assert_close(found, expected, rtol=1e-3, atol=1e-3)
    for other in (guess, image):  # the start, and the data's solution (w = 0)
        assert float((solution - other).norm() / other.norm()) > 0.05
    found.abs().sum().backward()
    assert cascade.log_weight.grad is not None and float(cascade.log_weight.grad.abs()) > 0


@pytest.mark.parametrize(
    ("challenge", "maps"),
    [
        ("singlecoil", []),
        ("multicoil", []),
        ("multicoil", ["model.sens_chans=0", "model.sens_maps=espirit"]),
        ("multicoil", EXPERIMENT_MAPS),
        ("multicoil", ["model.sens_chans=0", "model.data_consistency=proximal"]),
        ("singlecoil", ["model.data_consistency=proximal"]),
        (
            "multicoil",
            [*EXPERIMENT_MAPS, "model.data_consistency=proximal", "model.dc_iterations=3"],
        ),
    ],
    ids=[
        "singlecoil",
        "multicoil",
        "multicoil-espirit",
        "multicoil-espirit-sense",
        "multicoil-proximal",
        "singlecoil-proximal",
        "experiment-network",
    ],
)
def test_varnet_trains_and_resumes_exactly(
    tiny_root: Path, tmp_path: Path, challenge: str, maps: list[str]
) -> None:
    common = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    common += [*TINY_VARNET, *maps, f"data.challenge={challenge}", "trainer.max_epochs=2"]
    straight = train_in_process(tmp_path / "straight", *common)
    assert straight.metrics["SSIM"]["mean"] > 0
    train_in_process(tmp_path / "split", *common, "trainer.stop_after_epoch=1")
    resumed = train_in_process(tmp_path / "split", *common, "trainer.resume=true")
    assert resumed.metrics == straight.metrics
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["config"]["loss"]["_target_"] == "mri_recon.losses.StructuralLoss"


def test_batches_of_different_widths_go_through_a_kspace_model(
    tiny_root: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "train",
        [
            *TINY_VARNET,
            f"data.root={tiny_root}",
            f"data.cache_dir={tmp_path}",
            "data.challenge=multicoil",
        ],
    )
    data = TrainingData(cfg, torch.device("cpu"))
    runtime = Runtime.create("cpu", "32")
    state = TrainState.create(cfg, runtime, len(data.train_loader))
    model = state.model.eval()
    batch = next(iter(data.val_loader))
    with torch.no_grad():
        together = model_output(model, "kspace", batch, runtime)
        as_list = batch._replace(masked_kspace=list(batch.masked_kspace), mask=list(batch.mask))
        one_by_one = model_output(model, "kspace", as_list, runtime)
    torch.testing.assert_close(together, one_by_one)
    assert together.shape == batch.target.shape


def test_loss_group() -> None:
    torch.manual_seed(0)
    output, target = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    mean, std = torch.tensor([0.1, 0.2]), torch.tensor([2.0, 3.0])
    batch = Sample(output, target, mean, std, max_value=torch.tensor([10.0, 0.0]))
    settings = {"l1": [], "ssim": [], "l1_ssim": ["loss.ssim_weight=0.25"]}
    losses = {}
    for name, extra in settings.items():
        cfg = compose_config("train", [f"loss={name}", *extra])
        losses[name] = hydra.utils.instantiate(cfg.loss)(output, target, batch)
    assert losses["l1"] == F.l1_loss(output, target)
    units = [x * std.reshape(-1, 1, 1, 1) + mean.reshape(-1, 1, 1, 1) for x in (output, target)]
    data_range = torch.stack([torch.tensor(10.0), units[1][1].max()])  # no max: the target's
    torch.testing.assert_close(losses["ssim"], SSIMLoss()(*units, data_range))
    torch.testing.assert_close(losses["l1_ssim"], 0.25 * losses["ssim"] + 0.75 * losses["l1"])
    assert compose_config("train", ["model=varnet"]).loss._target_.endswith("StructuralLoss")
    assert compose_config("train", []).loss._target_.endswith("L1Loss")


def test_one_report_compares_every_checkpoint(
    trained_run: Path, tiny_root: Path, tmp_path: Path
) -> None:
    varnet_dir = tmp_path / "varnet"
    common = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    train_in_process(varnet_dir, *common, *TINY_VARNET, "trainer.max_epochs=1")
    checkpoints = [trained_run / "checkpoints" / "best.pt", varnet_dir / "checkpoints" / "best.pt"]
    paths = ",".join(str(path) for path in [*checkpoints, checkpoints[0]])
    overrides = [f"checkpoint=[{paths}]", "save_reconstructions=true", "figure_volumes=1"]
    results = evaluate(compose_config("eval", overrides), tmp_path / "eval")
    methods = ["zero_filled", "tv", "unet", "varnet", "unet_2"]
    assert all(list(by_method) == methods for by_method in results.values())
    assert results["4"]["unet"]["SSIM"] == results["4"]["unet_2"]["SSIM"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"| {method} |" in report for method in methods)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(metrics["checkpoints"]) == 3
    paths = map(str, [*checkpoints, checkpoints[0]])
    named = dict(zip(["unet", "varnet", "unet_2"], paths, strict=True))
    assert metrics["models"] == named
    assert all(f"{name} `{path}`" in report for name, path in named.items())
    with h5py.File(next((tmp_path / "eval" / "reconstructions" / "varnet" / "8").iterdir())) as f:
        assert (
            f["reconstruction"].shape == (3, 32, 32) and np.isfinite(f["reconstruction"][()]).all()
        )
    rows = (tmp_path / "eval" / "per_volume.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * len(methods)  # volumes x accelerations x methods
    with pytest.raises(UserError, match="expected entries from .*'unet'.*got 'varnet'"):
        evaluate(
            compose_config("eval", [f"checkpoint={checkpoints[0]}", "method=[varnet]"]), tmp_path
        )


def test_kspace_model_errors_are_one_line(tiny_root: Path, tmp_path: Path) -> None:
    common = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", *TINY_VARNET]
    few_lines = ["mask=random_4x", "mask.center_fractions=[0.01]", "data.challenge=multicoil"]
    with pytest.raises(UserError, match=r"file_demo_\w+\.h5.*sensitivity maps need at least 2"):
        train_in_process(tmp_path / "few", *common, *few_lines)
    cfg = compose_config(
        "train", [*common, "data.challenge=singlecoil", "model.challenge=multicoil"]
    )
    with pytest.raises(UserError, match="model.challenge: 'multicoil', but data.challenge"):
        check_config(cfg)
    cfg = compose_config("train", [*common, "model.sens_chans=6", "model.groups=4"])
    with pytest.raises(UserError, match="model.groups dividing model.sens_chans=6"):
        check_config(cfg)


def test_crop_readout_is_the_k_space_of_the_cropped_image() -> None:
    kspace = torch.randn(2, 4, 64, 40, dtype=torch.complex64)
    cropped = ifft2c(crop_readout(kspace, 32))
    torch.testing.assert_close(cropped, ifft2c(kspace)[..., 16:48, :])
    model = VarNet(num_cascades=1, chans=4, num_pool_layers=2, sens_chans=4, crop_readout=True)
    mask = torch.ones(2, 40, dtype=torch.bool)
    with torch.no_grad():
        assert model(kspace, mask, torch.tensor([8, 8]), (32, 32)).shape == (2, 32, 32)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", [(8, 6), (7, 5), (255, 143)], ids=["even", "odd", "odd-large"])
def test_centering_ramps_turn_the_centered_ffts_into_plain_ones(
    shape: tuple[int, int], dtype: torch.dtype
) -> None:
    kspace_ramp, image_ramp = centering_ramps(*shape, torch.device("cpu"), dtype)
    assert kspace_ramp.dtype == image_ramp.dtype == dtype
    generator = torch.Generator().manual_seed(0)
    kspace, image = torch.randn(2, 2, 3, *shape, dtype=dtype, generator=generator)
    exact = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.complex128 else {}
    plain = torch.fft.ifft2(kspace_ramp * kspace, norm="ortho")
    torch.testing.assert_close(ifft2c(kspace), image_ramp * plain, **exact)
    plain = torch.fft.fft2(image_ramp.conj() * image, norm="ortho")
    torch.testing.assert_close(kspace_ramp * fft2c(image), plain, **exact)
