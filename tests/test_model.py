"""The U-Net: every normalization, any image size, GroupNorm group counts."""

import pytest
import torch
from torch import nn

from mri_recon.models.unet import NORMS, Unet, count_parameters, group_count


@pytest.mark.parametrize("norm", NORMS)
def test_unet_keeps_shape_for_every_norm(norm: str) -> None:
    model = Unet(chans=8, num_pool_layers=3, norm=norm)
    image = torch.randn(2, 1, 37, 50)  # not a multiple of 8: padded and cropped back
    assert model(image).shape == (2, 1, 37, 50)


def test_group_norm_uses_requested_groups_reduced_in_narrow_layers() -> None:
    assert group_count(64, 32) == 32
    assert group_count(16, 32) == 16
    with pytest.raises(ValueError, match="does not divide"):
        group_count(48, 32)
    model = Unet(chans=16, num_pool_layers=2, norm="group", groups=32)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert {m.num_groups for m in norms} == {16, 32}


def test_norm_none_has_no_normalization_and_conv_biases() -> None:
    model = Unet(chans=8, num_pool_layers=2, norm="none")
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="model.norm"):
        Unet(norm="weight")


def test_parameter_count_matches_fastmri_layout() -> None:
    # Same layout as fastmri.models.Unet (conv weights without bias before a norm layer).
    from fastmri.models import Unet as FastmriUnet

    ours = count_parameters(Unet(chans=8, num_pool_layers=3, norm="instance"))
    theirs = count_parameters(FastmriUnet(1, 1, chans=8, num_pool_layers=3))
    assert ours == theirs


def test_dropout_only_in_training_mode() -> None:
    model = Unet(chans=4, num_pool_layers=1, drop_prob=0.5).eval()
    image = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(model(image), model(image))


def test_residual_unet_adds_its_input_to_the_same_weights_output() -> None:
    torch.manual_seed(0)
    plain = Unet(chans=4, num_pool_layers=2).eval()
    residual = Unet(chans=4, num_pool_layers=2, residual=True).eval()
    residual.load_state_dict(plain.state_dict())  # same weights: no parameters added
    image = torch.randn(2, 1, 20, 24)
    torch.testing.assert_close(residual(image), image + plain(image))
    with pytest.raises(ValueError, match="model.residual"):
        Unet(in_chans=2, out_chans=1, residual=True)
