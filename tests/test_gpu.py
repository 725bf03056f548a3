"""On a CUDA machine (`make gpu-check` runs the suite there): the default device trains on the
GPU, deterministic training repeats to the bit, and the evaluation's data consistency agrees with
the CPU's. Skipped without a GPU; the CUDA branch of device selection is tested on every machine
in test_devices.py."""

from pathlib import Path

import pytest
import torch

from mri_recon.checkpoints import load_checkpoint
from mri_recon.evaluation.consistency import ConsistencySettings, consistent_images

from .conftest import train_in_process
from .test_consistency import multicoil_slice

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("model", ["unet", "varnet", "varnet-espirit"])
def test_training_on_the_default_device_repeats_to_the_bit(
    tiny_root: Path, tmp_path: Path, model: str
) -> None:
    args = ["debug=tiny", f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    args += [f"model={model.split('-')[0]}", "trainer.max_epochs=2"]
    if model.startswith("varnet"):
        args += ["data.challenge=multicoil", "model.num_cascades=2"]
    if model == "varnet-espirit":  # experiment=varnet_multicoil's network, on the GPU
        args += ["model.sens_chans=0", "model.sens_maps=espirit", "model.start=sense"]
        args += ["model.data_consistency=proximal", "model.dc_iterations=3"]
    first = train_in_process(tmp_path / "first", *args)
    second = train_in_process(tmp_path / "second", *args)
    assert first.metrics == second.metrics
    a, b = (
        load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("first", "second")
    )
    assert a["config"]["trainer"]["device"] == "auto"
    for name, tensor in a["model"].items():
        assert tensor.device.type == "cpu"  # saved from the GPU, loaded to the CPU
        assert torch.equal(tensor, b["model"][name]), name


def test_data_consistency_on_the_gpu_equals_the_cpu() -> None:
    """``unet_dc``'s solve (ESPIRiT maps, conjugate gradients) on the evaluation's GPU."""
    truth, kspace, mask = multicoil_slice(64, center_fraction=0.125)
    model = truth.abs()[:, 8:56, 8:56].float() * 0.9
    settings = ConsistencySettings(0.003, 30)
    on_cpu = consistent_images(model, kspace, mask, settings)
    on_gpu = consistent_images(model.cuda(), kspace.cuda(), mask.cuda(), settings).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3 * float(on_cpu.max()))
