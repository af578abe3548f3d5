"""``mimicache doctor``: ready on the tiny bundle, each problem a FAIL or warning with its fix."""

import blake3
import pytest
import torch

from mimicache.cli import doctor
from mimicache.cli.main import main
from tests.engine_fixtures import figure_video, reference_image, write_config


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    image, video = reference_image(root / "ref.png"), figure_video(root / "walk.mp4")
    return root, write_config(root / "c.yaml", tiny_bundle, image, video)


def _doctor(capsys, config, root, *extra):
    code = main(
        ["doctor", "--inference_config", str(config), "--output_dir", str(root / "out"),
         "--feature_cache_dir", str(root / "cache"), *extra]
    )  # fmt: skip
    return code, capsys.readouterr().out


def _lines(out, status):
    return [line for line in out.splitlines() if line.startswith(status)]


def test_ready_on_the_tiny_bundle(capsys, workspace, tiny_bundle):
    root, config = workspace
    code, out = _doctor(capsys, config, root)
    assert code == 0
    assert _lines(out, "FAIL") == []
    assert "ready to run: 0 problems" in out
    digest = blake3.blake3(tiny_bundle.ckpt_path.read_bytes()).hexdigest()[:16]
    (line,) = [ln for ln in out.splitlines() if "checkpoint" in ln]
    assert line.startswith("ok") and str(tiny_bundle.ckpt_path) in line and digest in line
    assert "tensors match the model" in line
    assert (
        len([ln for ln in _lines(out, "ok") if "DWPose" in ln and "opens in ONNX Runtime" in ln])
        == 2
    )
    assert "libx264 encoder" in out
    assert any("output folder" in ln and "free" in ln for ln in _lines(out, "ok"))


def test_missing_weight_file_fails_with_the_fix(capsys, workspace, tiny_bundle, tmp_path):
    root, _ = workspace
    image, video = root / "ref.png", root / "walk.mp4"
    config = write_config(tmp_path / "c.yaml", tiny_bundle, image, video)
    text = config.read_text().replace(
        str(tiny_bundle.ckpt_path), str(tmp_path / "models" / "MimicMotion_1-1.pth")
    )
    config.write_text(text)
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 1
    (fail,) = _lines(out, "FAIL")
    assert "checkpoint" in fail and "MimicMotion_1-1.pth missing (config key ckpt_path)" in fail
    fix = f"hf download tencent/MimicMotion MimicMotion_1-1.pth --local-dir {tmp_path / 'models'}"
    assert f"checkpoint: {fix}" in out
    assert "a run would fail: 1 problem" in out


def test_missing_config_and_renamed_weights(capsys, workspace, tiny_bundle, tmp_path):
    root, _ = workspace
    code, out = _doctor(capsys, tmp_path / "nope.yaml", root, "--no_digests")
    assert code == 1 and "nope.yaml not found" in out and "--inference_config PATH" in out
    config = write_config(tmp_path / "c.yaml", tiny_bundle, root / "ref.png", root / "gone.mp4")
    config.write_text(config.read_text().replace("yolox_l", "detector"))
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 1
    assert "set dwpose.det_model_path in the config to an existing file" in out
    assert "1 missing file" in out and "gone.mp4" in out


def test_cuda_asked_for_without_cuda(capsys, workspace, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root, config = workspace
    code, out = _doctor(capsys, config, root, "--device", "cuda", "--no_digests")
    assert code == 1
    assert "--device cuda but CUDA is not available" in out
    assert "download.pytorch.org/whl/cu" in out


def test_missing_h264_encoder_fails(capsys, workspace, monkeypatch):
    import av

    def codec(name, mode="r"):
        raise ValueError(name)

    monkeypatch.setattr(av.codec, "Codec", codec)
    root, config = workspace
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 1
    (fail,) = _lines(out, "FAIL")
    assert "libx264 (encoder)" in fail
    assert "pip install --force-reinstall av" in out


def test_unwritable_output_fails_but_unwritable_cache_warns(capsys, workspace, monkeypatch):
    root, config = workspace
    out_dir = str(root / "out")
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: not str(path).startswith(out_dir))
    (root / "out").mkdir(exist_ok=True)
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 1 and "output folder" in _lines(out, "FAIL")[0]
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: "cache" not in str(path))
    (root / "cache").mkdir(exist_ok=True)
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 0
    assert any("feature cache" in ln and "not writable" in ln for ln in _lines(out, "warn"))


def test_small_gpu_suggests_the_memory_options(monkeypatch):
    from types import SimpleNamespace

    card = SimpleNamespace(name="RTX 4090", total_memory=24 * 10**9, major=8, minor=9)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: card)
    (gpu,) = [c for c in doctor.torch_checks(None) if c.area == "GPU"]
    assert gpu.status == doctor.WARN and "RTX 4090, 22 GiB" in gpu.detail
    assert gpu.fix == "add --offload model (and --decode_chunk_size 4) to mimicache run"
    text = doctor.report([gpu, doctor.Check("torch", doctor.OK, "2.x")])
    assert f"to fix:\n  GPU: {gpu.fix}" in text
    assert text.endswith("ready to run: 0 problems, 1 warning")


def test_uncached_hub_model_offline_advises_the_hf_commands(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check = doctor.hub_model_check("mimicache-tests/not-a-cached-repo")
    assert check.status == doctor.FAIL and "HF_HUB_OFFLINE" in check.detail
    assert check.fix == (
        "hf download mimicache-tests/not-a-cached-repo (gated: accept the licence, then hf auth login)"
    )


def _swap(config, old, new):
    config.write_text(config.read_text().replace(str(old), str(new)))
    return config


class _Payload:
    """Any non-tensor object makes a pickle that safe loading refuses."""


def _bad_checkpoint(capsys, workspace, tiny_bundle, tmp_path, name, state):
    root, _ = workspace
    ckpt = tmp_path / name
    torch.save(state, ckpt)
    config = write_config(tmp_path / "c.yaml", tiny_bundle, root / "ref.png", root / "walk.mp4")
    code, out = _doctor(capsys, _swap(config, tiny_bundle.ckpt_path, ckpt), root, "--no_digests")
    assert code == 1 and "a run would fail: 1 problem" in out
    (fail,) = _lines(out, "FAIL")
    return fail, out


def test_checkpoint_with_wrong_keys_fails(capsys, workspace, tiny_bundle, tmp_path):
    state = torch.load(tiny_bundle.ckpt_path, weights_only=True)
    state["unet.conv_in.renamed"] = state.pop("unet.conv_in.weight")
    fail, out = _bad_checkpoint(capsys, workspace, tiny_bundle, tmp_path, "keys.pth", state)
    assert "checkpoint" in fail and "keys.pth does not match the MimicMotion model" in fail
    assert "1 missing unet.* keys" in fail and "unet.conv_in.renamed" in fail
    assert "checkpoint: set ckpt_path to MimicMotion_1-1.pth" in out


def test_checkpoint_that_would_run_code_fails(capsys, workspace, tiny_bundle, tmp_path):
    state = torch.load(tiny_bundle.ckpt_path, weights_only=True)
    state["unet.payload"] = _Payload()
    fail, out = _bad_checkpoint(capsys, workspace, tiny_bundle, tmp_path, "code.pth", state)
    assert "code.pth holds code" in fail and "refused for safety" in fail
    assert "save_file(" in out and str(tmp_path / "code.safetensors") in out


def test_garbage_onnx_file_fails(capsys, workspace, tiny_bundle, tmp_path):
    root, _ = workspace
    garbage = tmp_path / "yolox_l.onnx"
    garbage.write_bytes(b"not an onnx model" * 64)
    config = write_config(tmp_path / "c.yaml", tiny_bundle, root / "ref.png", root / "walk.mp4")
    config = _swap(config, tiny_bundle.det_model_path, garbage)
    code, out = _doctor(capsys, config, root, "--no_digests")
    assert code == 1
    (fail,) = _lines(out, "FAIL")
    assert "DWPose" in fail and f"cannot load DWPose ONNX model {garbage}" in fail
    assert "download yolox_l.onnx again" in out and "dwpose.det_model_path" in out


def test_the_gpu_advice_pins_the_torch_the_install_script_pins():
    import re
    from pathlib import Path

    from mimicache.cli.doctor import TORCH_CUDA, TORCH_VERSION

    script = (Path(__file__).resolve().parents[1] / "scripts" / "install.sh").read_text()
    pinned = re.search(r"MIMICACHE_TORCH_VERSION:-([0-9.]+)\}", script).group(1)
    assert pinned == TORCH_VERSION and f'"torch=={pinned}"' in TORCH_CUDA
