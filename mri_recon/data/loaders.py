"""Datasets and DataLoaders built from the `data` and `mask` config groups."""

import os
import signal
from collections import defaultdict
from collections.abc import Iterator

import hydra
import torch
from fastmri.data.subsample import MaskFunc
from omegaconf import DictConfig, OmegaConf

from mri_recon import distributed
from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.transforms import (
    DeviceTransform,
    Sample,
    ZeroFilledTransform,
    device_collate,
)
from mri_recon.errors import UserError
from mri_recon.models.interface import model_takes
from mri_recon.runtime import epoch_seed
from mri_recon.training.stopping import STOP_SIGNALS


def build_mask_func(mask_cfg: DictConfig) -> MaskFunc:
    """Instantiate a fastmri mask function (``_target_`` + center_fractions + accelerations)."""
    fractions, accelerations = list(mask_cfg.center_fractions), list(mask_cfg.accelerations)
    if len(fractions) != len(accelerations):
        raise UserError(
            f"mask: center_fractions {fractions} and accelerations {accelerations} must have the "
            "same length (one center fraction per acceleration)"
        )
    for fraction, acceleration in zip(fractions, accelerations, strict=True):
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction < 1
        ):
            raise UserError(f"mask.center_fractions: expected values in (0, 1), got {fraction!r}")
        if (
            isinstance(acceleration, bool)
            or not isinstance(acceleration, int | float)
            or acceleration < 1
        ):
            raise UserError(f"mask.accelerations: expected values >= 1, got {acceleration!r}")
        if fraction > 1 / acceleration:
            raise UserError(
                f"mask: center fraction {fraction} keeps more than 1/{acceleration} of the columns"
            )
    return hydra.utils.instantiate(mask_cfg, _convert_="all")


def build_dataset(
    data_cfg: DictConfig,
    split: str,
    mask_func: MaskFunc | None,
    fixed_masks: bool,
    keep_kspace: bool = False,
    on_device: bool = False,
) -> SliceDataset:
    """The slices of one split (``train``, ``val``, ``test``, ...) with the zero-filled transform.

    Test/challenge files (stored ``mask``, no target) are read with their own mask.
    ``keep_kspace`` adds the masked k-space and mask to each sample (for the TV baseline);
    ``on_device`` leaves the images to ``DeviceTransform`` (the samples hold k-space and mask).
    """
    if data_cfg.root is None:
        raise UserError(
            f"data.root: set it to the folder holding {data_cfg.challenge}_{split}/ "
            "(e.g. data.root=/data/fastmri/knee)"
        )
    folder = split_folder(data_cfg.root, data_cfg.challenge, split)
    dataset = SliceDataset(
        folder,
        data_cfg.challenge,
        ZeroFilledTransform(data_cfg.challenge, mask_func, fixed_masks, keep_kspace, on_device),
        require_target=split in (data_cfg.train_split, data_cfg.val_split),
        cache_dir=data_cfg.cache_dir,
        skip_bad_files=data_cfg.skip_bad_files,
    )
    if split == data_cfg.train_split:
        dataset.subsample(data_cfg.sample_rate, data_cfg.volume_sample_rate, data_cfg.subset_seed)
    return dataset


def fixed_mask_datasets(
    data_cfg: DictConfig, mask_cfg: DictConfig, split: str, keep_kspace: bool
) -> Iterator[tuple[int, SliceDataset]]:
    """For each (center_fraction, acceleration) pair of ``mask_cfg``: that acceleration and the
    split's dataset under file-seeded masks of that pair alone (for evaluation and tuning)."""
    for center_fraction, acceleration in zip(
        mask_cfg.center_fractions, mask_cfg.accelerations, strict=True
    ):
        single = OmegaConf.merge(
            mask_cfg, {"center_fractions": [center_fraction], "accelerations": [acceleration]}
        )
        mask_func = build_mask_func(single)
        yield int(acceleration), build_dataset(data_cfg, split, mask_func, True, keep_kspace)


def slice_transform(dataset: torch.utils.data.Dataset) -> object | None:
    """The transform of a dataset, or of the dataset a ``Subset`` takes its items from."""
    if isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return getattr(dataset, "transform", None)


def start_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the stop signals (Ctrl-C, SIGTERM, Slurm's USR1/USR2,
    which Slurm sends to every process of a job step) are the training process's to handle: it
    checkpoints, then ends the workers. A worker killed by one would fail its next batch.

    (Training masks need no per-worker seeding: ``SeededMasks`` seeds each sample's own.)
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class EpochIndices(torch.utils.data.Sampler):
    """``(epoch, index)`` for each index of ``sampler``, in its order: the epoch reaches the
    workers with every index, so each sample can draw its mask from its own seed."""

    def __init__(self, sampler: torch.utils.data.Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.sampler)


class SeededMasks(torch.utils.data.Dataset):
    """A dataset read by ``(epoch, index)``: before loading a slice, its training mask stream is
    reseeded from (seed, epoch, index). A slice thus gets the same mask whichever worker (or how
    many) loads it, also in a resumed run, so the workers can persist across epochs. Stored and
    file-seeded (validation) masks do not use the stream and are unchanged."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.transform = slice_transform(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> object:
        epoch, index = key
        if isinstance(self.transform, ZeroFilledTransform) and not self.transform.fixed_masks:
            self.transform.reseed([self.seed, epoch, index])
        return self.dataset[index]


# data.num_workers=auto: all but one of this process's cores, within these bounds.
AUTO_WORKERS = (2, 8)


def worker_count(setting: int | str) -> int:
    """``data.num_workers``: a count, or ``auto``: all but one of the cores this process may use
    (a Slurm task's own; the machine's shared among this node's ranks under torchrun), at least
    2 and at most 8 (more only add start-up time and memory)."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0))
    if cores == os.cpu_count():  # not bound to its own cores: share them with the other ranks
        cores //= distributed.local_world_size()
    low, high = AUTO_WORKERS
    return max(low, min(high, cores - 1))


def check_num_workers(setting: object) -> None:
    """Raise UserError unless ``setting`` is auto or an integer >= 0."""
    if setting == "auto":
        return
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise UserError(f"data.num_workers: expected auto or an integer >= 0, got {setting!r}")


def build_loader(
    dataset: torch.utils.data.Dataset,
    data_cfg: DictConfig,
    sampler: torch.utils.data.Sampler | None = None,
    pin_memory: bool = False,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` in ``sampler``'s order (None: in order), whose workers
    persist across epochs (started once, not every epoch) and whose every sample draws its
    training mask from (``seed``, epoch, index); its ``sampler`` is an ``EpochIndices`` (set its
    ``epoch`` before each epoch). Samples holding k-space are collated so that k-space of
    different widths can share a batch."""
    if sampler is None:
        sampler = torch.utils.data.SequentialSampler(dataset)
    keep_kspace = getattr(slice_transform(dataset), "keep_kspace", False)
    workers = worker_count(data_cfg.num_workers)
    return torch.utils.data.DataLoader(
        SeededMasks(dataset, seed),
        collate_fn=device_collate if keep_kspace else None,
        batch_size=data_cfg.batch_size,
        sampler=EpochIndices(sampler),
        num_workers=workers,
        worker_init_fn=start_worker,
        # The workers' base seed comes from here, not from torch's global stream, which a
        # resumed run would then draw from at another point.
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


def volume_loader(dataset: SliceDataset, num_workers: int | str) -> torch.utils.data.DataLoader:
    """A DataLoader whose every batch is one whole volume, slices in order.

    Under torchrun each rank gets its own balanced share of the volumes.
    """
    by_file: dict[str, list[int]] = defaultdict(list)
    for index in distributed.my_volume_indices([path.name for path, _ in dataset.slices]):
        by_file[dataset.slices[index][0].name].append(index)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=list(by_file.values()), num_workers=worker_count(num_workers)
    )


def check_transform_on(setting: object) -> None:
    """Raise UserError unless ``setting`` is auto, workers or device."""
    if setting not in ("auto", "workers", "device"):
        raise UserError(f"data.transform_on: expected auto, workers or device, got {setting!r}")


def transform_on_device(setting: str, device: torch.device) -> bool:
    """Where the zero-filled transform runs: ``auto`` means on the device for CUDA (the workers
    only read and mask) and in the DataLoader workers on CPU."""
    check_transform_on(setting)
    return setting == "device" or (setting == "auto" and device.type == "cuda")


class DeviceBatches:
    """A DataLoader whose batches get the zero-filled transform on the training device."""

    def __init__(self, loader: torch.utils.data.DataLoader, transform: DeviceTransform) -> None:
        self.loader = loader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Sample]:
        return (self.transform(batch) for batch in self.loader)


class TrainingData:
    """The training and validation splits of a run and their loaders.

    Samples hold the masked k-space, mask and center-line count when the model takes k-space.
    Training batches are shuffled with a per-epoch seed (sharded per rank under torchrun) and
    masked with random masks, each slice's drawn from (seed, epoch, slice index); validation
    uses file-seeded masks and, under torchrun, each rank validates its own whole volumes. With
    ``data.transform_on`` = device (``auto`` on CUDA), the workers only read and mask and the
    loaders make the images on ``device``.
    """

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.seed = cfg.seed
        on_device = transform_on_device(cfg.data.transform_on, device)
        kspace = model_takes(cfg.model) == "kspace"  # the model needs the masked k-space
        self.train_set = build_dataset(
            cfg.data, cfg.data.train_split, build_mask_func(cfg.mask), False, kspace, on_device
        )
        self.val_set = build_dataset(
            cfg.data, cfg.data.val_split, build_mask_func(cfg.mask), True, kspace, on_device
        )
        self.generator = torch.Generator()
        self.sampler = None
        if distributed.world_size() > 1:
            self.sampler = torch.utils.data.DistributedSampler(
                self.train_set, shuffle=True, seed=cfg.seed
            )
        pin = device.type == "cuda"
        order = self.sampler
        if order is None:
            order = torch.utils.data.RandomSampler(self.train_set, generator=self.generator)
        self.train_loader = build_loader(self.train_set, cfg.data, order, pin, cfg.seed)
        self.train_indices = self.train_loader.sampler
        names = [path.name for path, _ in self.val_set.slices]
        self.val_loader = build_loader(
            torch.utils.data.Subset(self.val_set, distributed.my_volume_indices(names)),
            cfg.data,
            pin_memory=pin,
        )
        if on_device:
            transform = DeviceTransform(cfg.data.challenge, device)
            self.train_loader = DeviceBatches(self.train_loader, transform)
            self.val_loader = DeviceBatches(self.val_loader, transform)

    def start_epoch(self, epoch: int) -> None:
        """Seed the epoch's shuffle and training masks, so a resumed run replays them exactly."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.train_indices.epoch = epoch  # each sample's mask seed: (seed, epoch, index)
