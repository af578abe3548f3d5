import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from mimicache.models import MimicMotionUNet, PoseNet
from mimicache.testing.models import TINY_UNET_CONFIG


def test_pose_net_parameter_names_and_shapes():
    net = PoseNet(noise_latent_channels=320)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    convs = [
        (3, 3, 3),
        (16, 3, 4),
        (16, 16, 3),
        (32, 16, 4),
        (32, 32, 3),
        (64, 32, 4),
        (64, 64, 3),
        (128, 64, 3),
    ]
    for i, (c_out, c_in, k) in enumerate(convs):
        assert shapes[f"conv_layers.{2 * i}.weight"] == (c_out, c_in, k, k)
        assert shapes[f"conv_layers.{2 * i}.bias"] == (c_out,)
    assert shapes["final_proj.weight"] == (320, 128, 1, 1)
    assert shapes["final_proj.bias"] == (320,)
    assert shapes["scale"] == (1,)
    assert len(shapes) == 8 * 2 + 3
    assert net.scale.item() == 2.0


def test_pose_net_output_shape_and_5d_input():
    torch.manual_seed(0)
    net = PoseNet(noise_latent_channels=32)
    torch.nn.init.normal_(net.final_proj.weight)
    x = torch.rand(2, 3, 3, 64, 96) * 2 - 1
    out = net(x)
    assert out.shape == (6, 32, 8, 12)
    assert torch.equal(out, net(x.flatten(0, 1)))
    # untrained PoseNet adds nothing: the projection starts at zero
    assert torch.count_nonzero(PoseNet(32)(x[0])) == 0


def _twin_unets():
    torch.manual_seed(0)
    ours = MimicMotionUNet.from_config(TINY_UNET_CONFIG).eval()
    plain = UNetSpatioTemporalConditionModel.from_config(TINY_UNET_CONFIG).eval()
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def _unet_inputs(frames=3):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, frames, 8, 4, 6, generator=g)
    emb = torch.randn(1, 1, 32, generator=g)
    time_ids = torch.tensor([[6.0, 127.0, 0.0]])
    return sample, emb, time_ids


def test_unet_keys_match_diffusers():
    ours, plain = _twin_unets()
    assert list(ours.state_dict()) == list(plain.state_dict())


@torch.no_grad()
def test_unet_without_pose_latents_is_plain_svd_unet():
    ours, plain = _twin_unets()
    sample, emb, ids = _unet_inputs()
    expected = plain(sample, 10.0, emb, ids).sample
    assert torch.equal(ours(sample, 10.0, emb, ids).sample, expected)
    zeros = torch.zeros(3, 32, 4, 6)
    assert torch.equal(ours(sample, 10.0, emb, ids, pose_latents=zeros).sample, expected)


@torch.no_grad()
def test_unet_adds_pose_latents_after_conv_in():
    ours, plain = _twin_unets()
    sample, emb, ids = _unet_inputs()
    # A pose latent constant over space equals a shift of conv_in's bias in the plain UNet.
    shift = torch.randn(32, generator=torch.Generator().manual_seed(2))
    pose = shift[None, :, None, None].expand(3, 32, 4, 6).contiguous()
    plain.conv_in.bias += shift
    got = ours(sample, 10.0, emb, ids, pose_latents=pose).sample
    torch.testing.assert_close(got, plain(sample, 10.0, emb, ids).sample, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, ours(sample, 10.0, emb, ids).sample)
    assert ours.conv_in.pose_latents is None  # nothing leaks into the next call


def test_unet_rejects_misshapen_pose_latents():
    ours, _ = _twin_unets()
    sample, emb, ids = _unet_inputs()
    with pytest.raises(ValueError, match="pose_latents"):
        ours(sample, 10.0, emb, ids, pose_latents=torch.zeros(2, 32, 4, 6))
