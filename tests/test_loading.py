import shutil

import pytest
import torch
from safetensors.torch import save_file

from mimicache.errors import ModelLoadError
from mimicache.models import MimicMotionUNet, PoseNet
from mimicache.pipeline import MimicMotionPipeline
from mimicache.pipeline.weights import load_pipeline, resolve_base_model
from mimicache.testing.models import tiny_checkpoint_state


def test_tiny_bundle_loads_through_the_real_loader(tiny_pipeline, tiny_base):
    pipe = tiny_pipeline
    assert isinstance(pipe, MimicMotionPipeline)
    assert isinstance(pipe.unet, MimicMotionUNet)
    assert isinstance(pipe.pose_net, PoseNet)
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae_scale_factor == 8
    # weights come from the checkpoint (float16 values), not a random init
    state = tiny_checkpoint_state()
    got = pipe.unet.state_dict()["conv_in.weight"]
    assert torch.equal(got, state["unet.conv_in.weight"].float())
    assert torch.equal(pipe.pose_net.final_proj.weight, state["pose_net.final_proj.weight"].float())


def test_fp16_variant_is_preferred_like_the_published_loader(tiny_base):
    files = resolve_base_model(tiny_base[0])
    assert files.vae_weights.name == "diffusion_pytorch_model.fp16.safetensors"
    assert files.image_encoder_weights.name == "model.fp16.safetensors"


@pytest.mark.parametrize("keep", ["fp16", "full"])
def test_folders_with_one_kind_of_weights_load(tmp_path, tiny_base, keep):
    base, ckpt = tiny_base
    copy = tmp_path / "svd"
    shutil.copytree(base, copy)
    for path in copy.rglob("*.safetensors"):
        if ("fp16" in path.name) != (keep == "fp16"):
            path.unlink()
    pipe = load_pipeline(copy, ckpt)
    assert resolve_base_model(copy).variant["vae"] == ("fp16" if keep == "fp16" else None)
    assert pipe.vae.dtype == torch.float32


def _write_state(path, state):
    torch.save(state, path)
    return path


def _load(tiny_base, ckpt):
    return load_pipeline(tiny_base[0], ckpt)


def test_missing_key_is_refused(tmp_path, tiny_base):
    state = tiny_checkpoint_state()
    del state["unet.conv_in.weight"]
    ckpt = _write_state(tmp_path / "bad.pth", state)
    with pytest.raises(ModelLoadError) as err:
        _load(tiny_base, ckpt)
    msg = str(err.value)
    assert "bad.pth" in msg and "1 missing unet.* keys" in msg and "unet.conv_in.weight" in msg


def test_extra_key_is_refused(tmp_path, tiny_base):
    state = tiny_checkpoint_state()
    state["pose_net.extra.weight"] = torch.zeros(2)
    ckpt = _write_state(tmp_path / "extra.pth", state)
    with pytest.raises(
        ModelLoadError, match=r"1 unexpected pose_net\.\* keys.*pose_net\.extra\.weight"
    ):
        _load(tiny_base, ckpt)


def test_foreign_key_is_refused(tmp_path, tiny_base):
    state = tiny_checkpoint_state()
    state["text_encoder.weight"] = torch.zeros(2)
    ckpt = _write_state(tmp_path / "foreign.pth", state)
    with pytest.raises(ModelLoadError, match=r"neither unet\.\* nor pose_net\.\*"):
        _load(tiny_base, ckpt)


def test_wrong_shape_is_refused(tmp_path, tiny_base):
    state = tiny_checkpoint_state()
    state["unet.conv_out.bias"] = torch.zeros(5, dtype=torch.float16)
    ckpt = _write_state(tmp_path / "shape.pth", state)
    with pytest.raises(
        ModelLoadError, match=r"wrong shape.*unet\.conv_out\.bias: file \(5,\) vs model \(4,\)"
    ):
        _load(tiny_base, ckpt)


class Payload:
    """Any non-tensor object makes a pickle that weights_only refuses."""


def test_pickled_objects_are_refused(tmp_path, tiny_base):
    state = tiny_checkpoint_state()
    state["unet.payload"] = Payload()
    ckpt = tmp_path / "pickle.pth"
    torch.save(state, ckpt)
    with pytest.raises(ModelLoadError, match="refused for safety"):
        _load(tiny_base, ckpt)


def test_safetensors_checkpoint_loads(tmp_path, tiny_base):
    ckpt = tmp_path / "mm.safetensors"
    save_file(tiny_checkpoint_state(), str(ckpt))
    pipe = _load(tiny_base, ckpt)
    assert pipe.pose_net.scale.dtype == torch.float32


def test_missing_and_truncated_files_get_clear_errors(tmp_path, tiny_base):
    with pytest.raises(ModelLoadError, match="not found; set ckpt_path"):
        _load(tiny_base, tmp_path / "absent.pth")
    good = tiny_base[1].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="could not be read"):
        _load(tiny_base, cut)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(tmp_path / "no-such-folder", tiny_base[1])


def test_hub_id_offline_gets_a_clear_error(tiny_base, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not fetch base model"):
        load_pipeline("nobody/not-a-cached-model", tiny_base[1])


def test_incomplete_base_folder(tmp_path, tiny_base):
    copy = tmp_path / "svd"
    shutil.copytree(tiny_base[0], copy)
    for path in (copy / "vae").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(ModelLoadError, match="no weights found"):
        load_pipeline(copy, tiny_base[1])
