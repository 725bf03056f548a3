"""How any model is called on a batch: the one place that tells image models from k-space ones.

A model class says what it takes in its ``takes`` attribute, so the model config's ``_target_``
decides it:

- ``"image"`` (``Unet``): the normalized zero-filled image (B, 1, h, w) -> normalized image;
- ``"kspace"`` (``VarNet``): masked k-space, mask and center-line count -> the image in the
  file's units, normalized here with the zero-filled image's mean and std.

Either way the caller gets the same thing back: a (B, 1, h, w) float32 image on the zero-filled
image's normalized scale, which the loss, validation and evaluation treat alike.
"""

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from mri_recon.data.transforms import NORMALIZE_EPS, Sample
from mri_recon.errors import UserError
from mri_recon.runtime import Runtime


def takes(model: nn.Module | type) -> str:
    """What a model (or model class) takes: its class's ``takes``, "image" for a class without
    one (such as fastmri.models.Unet, which the benchmarks train through the same step)."""
    return getattr(model, "takes", "image")


def model_takes(model_cfg: DictConfig) -> str:
    """What the configured model takes ("image" or "kspace"), without building it."""
    return takes(hydra.utils.get_class(model_cfg._target_))


def kspace_output(model: nn.Module, batch: Sample, runtime: Runtime) -> torch.Tensor:
    """(B, 1, h, w) normalized output of a k-space model; k-space of different widths in one
    batch (a list, see ``device_collate``) goes through the model one sample at a time."""
    crop = tuple(batch.image.shape[-2:])
    device = runtime.device
    kspace, masks = batch.masked_kspace, batch.mask
    if isinstance(kspace, list):
        kspace, masks = [k[None] for k in kspace], [m[None] for m in masks]
    else:
        kspace, masks = [kspace], [masks]
    num_low = torch.as_tensor(batch.num_low_frequencies).reshape(-1).to(device)
    outputs, start = [], 0
    for part, mask in zip(kspace, masks, strict=True):
        part = part.to(device, non_blocking=True)
        multicoil = part if part.dim() == 4 else part[:, None]  # single-coil: one coil
        stop = start + len(part)
        try:
            output = model(multicoil, mask.to(device), num_low[start:stop], crop)
        except UserError as error:  # input the model cannot use: name the files
            names = sorted(set(batch.fname[start:stop]))
            raise UserError(f"{', '.join(names)}: {error}") from error
        outputs.append(output.float())
        start = stop
    output = torch.cat(outputs)[:, None]
    mean = batch.mean.to(device).reshape(-1, 1, 1, 1)
    std = batch.std.to(device).reshape(-1, 1, 1, 1)
    return (output - mean) / (std + NORMALIZE_EPS)


def model_output(model: nn.Module, takes: str, batch: Sample, runtime: Runtime) -> torch.Tensor:
    """The (B, 1, h, w) float32 normalized output of ``model`` (or its DDP/compiled wrapper)
    for ``batch``, under the runtime's autocast; ``takes``: ``takes(model)``."""
    with runtime.autocast():
        if takes == "kspace":
            return kspace_output(model, batch, runtime)
        return model(runtime.images(batch.image)).float()
