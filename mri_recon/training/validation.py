"""One validation pass: L1 loss, fastMRI metrics per volume, and the slices shown as panels."""

from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from mri_recon import distributed
from mri_recon.data.dataset import SliceDataset
from mri_recon.data.transforms import Sample
from mri_recon.metrics import summarize, volume_metrics
from mri_recon.models.interface import model_output, takes
from mri_recon.reconstruct import VolumeCollector, unnormalize
from mri_recon.runtime import Runtime
from mri_recon.training.state import TrainState


class Panel(NamedTuple):
    """One validation slice for TensorBoard: (H, W) images in the file's units."""

    fname: str
    slice_num: int
    target: np.ndarray
    zero_filled: np.ndarray
    output: np.ndarray
    scale: float  # the volume's max (attrs["max"]), else the target's


class ValidationResult(NamedTuple):
    """``metrics``: {"loss": mean loss, "SSIM"/"PSNR"/"NMSE": {"mean", "std"} over volumes};
    ``per_volume``: {file name: {metric: value}}; ``panels``: the requested slices, in order."""

    metrics: dict[str, Any]
    per_volume: dict[str, dict[str, float]]
    panels: list[Panel]


def panel_slices(dataset: SliceDataset, count: int) -> list[tuple[str, int]]:
    """``count`` (file name, slice) pairs spread evenly over the dataset, for the panels."""
    indices = np.linspace(0, len(dataset) - 1, count).astype(int)
    return [(dataset.slices[i][0].name, dataset.slices[i][1]) for i in indices.tolist()]


def batch_panels(
    batch: Sample, output: np.ndarray, target: np.ndarray, wanted: set[tuple[str, int]]
) -> dict[tuple[str, int], Panel]:
    """The panels of the ``wanted`` slices that are in this batch."""
    zero_filled = unnormalize(batch.image, batch)
    panels = {}
    for i, (fname, slice_num) in enumerate(zip(batch.fname, batch.slice_num.tolist(), strict=True)):
        if (fname, slice_num) in wanted:
            scale = float(batch.max_value[i]) or float(target[i].max())
            panels[fname, slice_num] = Panel(
                fname, slice_num, target[i], zero_filled[i], output[i], scale
            )
    return panels


@torch.no_grad()
def validate(
    state: TrainState,
    loader: torch.utils.data.DataLoader,
    runtime: Runtime,
    panel_keys: list[tuple[str, int]],
) -> ValidationResult:
    """Run the run's model once over the validation loader; ``loss`` is the run's loss.

    Under torchrun each rank validates its own whole volumes; the per-volume metrics and panels
    are gathered and summarized in file-name order, so the numbers equal a single process's.
    """
    model = state.model.eval()
    predictions, targets = VolumeCollector(), VolumeCollector()
    panels: dict[tuple[str, int], Panel] = {}
    loss_sum, count, wanted = 0.0, 0, set(panel_keys)
    bar = tqdm(
        loader, desc="validation", leave=False, unit="batch", disable=not distributed.is_main()
    )
    for batch in bar:
        output = model_output(model, takes(model), batch, runtime)
        target = batch.target.to(runtime.device)
        loss_sum += state.loss(output, target, batch).item() * len(batch.fname)
        count += len(batch.fname)
        output_np, target_np = unnormalize(output, batch), unnormalize(batch.target, batch)
        predictions.add(output_np, batch.fname, batch.slice_num)
        targets.add(target_np, batch.fname, batch.slice_num)
        panels |= batch_panels(batch, output_np, target_np, wanted)
    truth = targets.volumes()
    mine = {name: volume_metrics(truth[name], pred) for name, pred in predictions.volumes().items()}

    per_volume: dict[str, dict[str, float]] = {}
    total_loss, total_count = 0.0, 0
    for part, part_panels, part_loss, part_count in distributed.gather(
        (mine, panels, loss_sum, count)
    ):
        per_volume.update(part)
        panels.update(part_panels)
        total_loss, total_count = total_loss + part_loss, total_count + part_count
    summary = summarize([per_volume[name] for name in sorted(per_volume)])
    metrics = {"loss": total_loss / total_count, **summary}
    return ValidationResult(
        metrics, per_volume, [panels[key] for key in panel_keys if key in panels]
    )
