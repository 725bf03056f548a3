"""torchrun with 2 processes (gloo on the CPU, NCCL on two GPUs): one run directory, sharded
volumes, identical metrics."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mri_recon import distributed

from .conftest import TINY_TRAIN, run_cli, two_process_device


def torchrun(module: str, *overrides: str) -> subprocess.CompletedProcess:
    # torchrun's module, not its console script: a virtual environment made on top of a GPU
    # image's PyTorch (make install WHEELS=DIR) has no torchrun of its own.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            module,
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def test_balanced_shards_cover_every_volume_once() -> None:
    counts = {"a": 35, "b": 30, "c": 20, "d": 16, "e": 15, "f": 2}
    shards = distributed.shard_volumes(counts, 2)
    assert sorted(name for shard in shards for name in shard) == sorted(counts)
    loads = [sum(counts[name] for name in shard) for shard in shards]
    assert abs(loads[0] - loads[1]) <= max(counts.values()) // 2


def test_all_ranks_share_one_run_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("RANK", "0")
    assert distributed.hydra_overrides([], "train", "/p") == ["hydra.run.dir=/p/runs/train/ddp_abc"]
    monkeypatch.setenv("RANK", "1")
    rank1 = distributed.hydra_overrides(["hydra.run.dir=/x"], "train", "/p")
    assert rank1 == ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


def test_ddp_evaluation_equals_single_process(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}"
    common = [*two_process_device("device"), "method=[zero_filled,tv,unet,unet_dc]"]
    # torchrun gives each rank one thread; the single process gets the same, so that the
    # U-Net's convolutions round identically.
    run_cli(
        "mri-recon-eval",
        checkpoint,
        *common,
        f"hydra.run.dir={tmp_path / 'single'}",
        env={"OMP_NUM_THREADS": "1"},
    )
    torchrun("mri_recon.evaluate", checkpoint, *common, f"hydra.run.dir={tmp_path / 'ddp'}")
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["num_volumes"] == single["num_volumes"] == 2
    assert set(single["results"]["4"]) == {"zero_filled", "tv", "unet", "unet_dc"}
    for acceleration, by_method in single["results"].items():
        for method, values in by_method.items():
            for metric in ("NMSE", "PSNR", "SSIM"):
                assert ddp["results"][acceleration][method][metric] == values[metric]


def test_ddp_training_writes_one_run_and_resumes(tiny_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *TINY_TRAIN,
        *two_process_device("trainer.device"),
    ]
    torchrun("mri_recon.train", *common, "trainer.max_epochs=2", "trainer.stop_after_epoch=1")
    assert (run_dir / "checkpoints" / "last.pt").is_file() and not (
        run_dir / "metrics.json"
    ).exists()
    torchrun(
        "mri_recon.train",
        f"hydra.run.dir={run_dir}",
        "trainer.resume=true",
        f"data.cache_dir={tmp_path / 'cache'}",
        *two_process_device("trainer.device"),
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and 0 < metrics["val"]["SSIM"]["mean"] <= 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["run"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 1


def test_ddp_training_with_deferred_steps_equals_plain_steps(
    tiny_root: Path, tmp_path: Path
) -> None:
    """trainer.defer_sync under torchrun: the ranks' collectives (the gradients' all-reduce, the
    stop agreement) keep their order, and the run ends with the plain run's weights."""
    runs = {}
    for name, defer in (("plain", "false"), ("deferred", "true")):
        run_dir = tmp_path / name
        torchrun(
            "mri_recon.train",
            f"data.root={tiny_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
            *TINY_TRAIN,
            *two_process_device("trainer.device"),
            "trainer.max_epochs=2",
            f"trainer.defer_sync={defer}",
        )
        runs[name] = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert runs["plain"]["progress"] == runs["deferred"]["progress"]
    for key, tensor in runs["plain"]["model"].items():
        assert torch.equal(tensor, runs["deferred"]["model"][key]), key
    plain, deferred = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in runs)
    assert plain["val"] == deferred["val"]
