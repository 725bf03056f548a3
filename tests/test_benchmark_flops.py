"""The utilization benchmark counts the step's FLOPs and times its convolutions at the step's
shapes: with the L1 loss every counted FLOP of the U-Net's step is in a layer it finds."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def test_the_step_s_convolutions_alone_carry_all_of_its_counted_flops(tiny_root: Path) -> None:
    from benchmark_flops import convolution_inputs, convolutions_alone, default_step, step_flops

    step = default_step(tiny_root, "32", "cpu", ["debug=tiny"])
    inputs = convolution_inputs(step)
    # the first layer gets the image (no gradient flows to it); every later one an activation
    assert not inputs[0][1].requires_grad and all(x.requires_grad for _, x in inputs[1:])
    flops, milliseconds = convolutions_alone(step, rounds=1)
    assert all(p.grad is None for p in step.state.model.parameters())  # the step's stay its own
    assert flops == step_flops(step) > 0 and milliseconds > 0


def test_the_timed_step_gets_the_whole_batch_so_any_loss_works(tiny_root: Path) -> None:
    from benchmark_flops import default_step

    step = default_step(tiny_root, "32", "cpu", ["debug=tiny", "loss=l1_ssim"])
    assert step.batch.mean.numel() == step.batch.image.shape[0]  # the loss needs mean and std
    assert step.milliseconds() > 0
