"""Several processes: process group, ranks, one run directory, balanced volume shards, gathering.

    torchrun --nproc_per_node=N -m mri_recon.train ...     # NCCL on GPUs, gloo on CPU
    mri-recon-train -m hydra/launcher=slurm hydra.launcher.gpus_per_node=N ...   # Submitit

Ranks come from torchrun's environment, or from Submitit's (Slurm or its local executor), which
``adopt_submitit_environment`` turns into torchrun's variables. Without either (WORLD_SIZE unset)
every helper here is a no-op for a single process.
"""

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its node: the index of its GPU (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """How many processes of the job run on this node (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes logs, TensorBoard, checkpoints and reports."""
    return rank() == 0


def setup(device_type: str) -> None:
    """Join the process group of torchrun's or Submitit's processes: NCCL for CUDA, gloo else."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("process group: rank %d of %d (%s)", rank(), world_size(), backend)


def adopt_submitit_environment() -> None:
    """In a Submitit job of several tasks (one per GPU), set torchrun's variables (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from the job's, and keep the log file to
    rank 0. Outside Submitit, or under torchrun, nothing changes."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "WORLD_SIZE" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment()
    if environment.world_size > 1:
        environment.export(set_cuda_visible_devices=False)
    if not is_main():  # Hydra set up every task's logging: only rank 0 writes the file
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def hydra_overrides(args: list[str], task: str, project_dir: str) -> list[str]:
    """Extra Hydra overrides so all ranks share one run directory and only rank 0 writes there.

    Hydra's timestamped directory could differ between ranks started a second apart, so under
    torchrun the default becomes runs/<task>/ddp_<torchrun run id> (shared by all ranks).
    """
    if world_size() == 1:
        return []
    extra = []
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
        extra.append(f"hydra.run.dir={project_dir}/runs/{task}/ddp_{run_id}")
    if not is_main():
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return extra


def shard_volumes(slice_counts: dict[str, int], num_shards: int) -> list[list[str]]:
    """Split volumes into ``num_shards`` lists with balanced slice totals (largest first, each
    to the lightest shard), so no rank waits long for the others at the gather (fastMRI #48)."""
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    loads = [0] * num_shards
    for name in sorted(slice_counts, key=lambda n: (-slice_counts[n], n)):
        lightest = loads.index(min(loads))
        shards[lightest].append(name)
        loads[lightest] += slice_counts[name]
    return [sorted(shard) for shard in shards]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just [obj] without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def my_volume_indices(file_names: list[str]) -> list[int]:
    """Indices of the items (one file name each) whose volumes fall to this rank."""
    if world_size() == 1:
        return list(range(len(file_names)))
    counts: dict[str, int] = {}
    for name in file_names:
        counts[name] = counts.get(name, 0) + 1
    mine = set(shard_volumes(counts, world_size())[rank()])
    return [index for index, name in enumerate(file_names) if name in mine]


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (so every rank stops at the same step)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
