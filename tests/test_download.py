"""``mimicache download`` and ``hf://`` references, against a hub served on localhost.

The server (tests/hub_server.py) speaks the hub's protocol as huggingface_hub 2.x uses it, with
the three real repositories' names and layouts and tiny files (real ONNX and checkpoint bytes
where something opens them); huggingface_hub itself runs unmodified, pointed at the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mimicache.cli.main import main
from mimicache.config import HubFile, config_to_dict, hub_file, load_config
from mimicache.config.hub import BASE_MODEL_REPO, CHECKPOINT_REPO, DWPOSE_HF_REPO
from mimicache.config.hub_weights import base_model_files
from mimicache.errors import ConfigError, ModelLoadError
from mimicache.storage.sizes import format_size
from tests.hub_server import FakeHub, Repo, real_repos

TOKEN = "hf_test_token"
SVD = "stable-video-diffusion-img2vid-xt-1-1"
# what a run reads of the SVD repository: configs, the fp16 VAE and image encoder
SVD_NEEDED = [
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json",
    "image_encoder/model.fp16.safetensors",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]
NEEDED = sorted([*SVD_NEEDED, "MimicMotion_1-1.pth", "yolox_l.onnx", "dw-ll_ucoco_384.onnx"])


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> list[Repo]:
    served = real_repos(tmp_path_factory.mktemp("dwpose"))
    # what the code asks for is what the hub has
    assert [r.repo_id for r in served] == [BASE_MODEL_REPO, CHECKPOINT_REPO, DWPOSE_HF_REPO]
    return served


def _point_hub_at(monkeypatch, endpoint: str, home: Path) -> None:
    """huggingface_hub reads its settings once, at import: the environment (for subprocesses)
    and its constants (for this process) both name the server and a fresh HF_HOME."""
    from huggingface_hub import close_session, constants

    for name, value in (("HF_ENDPOINT", endpoint), ("HF_HOME", str(home)), ("HF_HUB_OFFLINE", "0")):  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
    }
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value)
    close_session()  # no pooled connection to an earlier test's server


def _go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub(repos, tmp_path, monkeypatch):
    server = FakeHub(repos, token=TOKEN).start()
    _point_hub_at(monkeypatch, server.endpoint, tmp_path / "hf-home")
    monkeypatch.chdir(tmp_path)
    yield server
    from huggingface_hub import close_session

    close_session()
    server.stop()


def _download(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["download", "--dir", "models", "--config", "configs/real.yaml", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _inputs(tmp_path: Path) -> list[str]:
    (tmp_path / "ref.png").write_bytes(b"png")
    (tmp_path / "dance.mp4").write_bytes(b"mp4")
    return ["--ref_image", "ref.png", "--video", "dance.mp4"]


def _served(hub: FakeHub, repo_id: str, name: str) -> bytes:
    return hub.repos[repo_id].files[name]


def test_download_fetches_what_a_run_needs_and_writes_a_config_that_loads(
    hub, tmp_path, capsys, monkeypatch
):
    from mimicache.pipeline.weights import resolve_base_model

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = _download(capsys, *_inputs(tmp_path))
    assert code == 0, err
    assert sorted(Path(name).name for name in hub.downloads()) == sorted(
        Path(name).name for name in NEEDED
    )
    config = load_config("configs/real.yaml")
    assert config.base_model_path == tmp_path / "models" / SVD
    assert config.ckpt_path == tmp_path / "models" / "MimicMotion_1-1.pth"
    assert config.ckpt_path.read_bytes() == _served(hub, CHECKPOINT_REPO, "MimicMotion_1-1.pth")
    assert config.dwpose_det_path == tmp_path / "models" / "DWPose" / "yolox_l.onnx"
    assert config.dwpose_pose_path.read_bytes() == _served(
        hub, DWPOSE_HF_REPO, "dw-ll_ucoco_384.onnx"
    )
    (case,) = config.test_case
    assert (case.ref_image_path, case.ref_video_path) == (
        tmp_path / "ref.png",
        tmp_path / "dance.mp4",
    )
    assert (case.num_frames, case.resolution, case.seed) == (72, 576, 42)
    files = resolve_base_model(config.base_model_path)
    assert files.variant == {"vae": "fp16", "image_encoder": "fp16"}
    base = tmp_path / "models" / SVD
    for name in SVD_NEEDED:
        assert (base / name).read_bytes() == _served(hub, BASE_MODEL_REPO, name)
    assert not (base / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    assert not (base / "svd_xt_1_1.safetensors").exists()
    assert f"fetched {len(NEEDED)} files" in out and "0 already complete" in out
    assert "before running" not in out  # both inputs were given
    assert "mimicache doctor --inference_config configs/real.yaml" in out
    assert out.rstrip().endswith("mimicache run --inference_config configs/real.yaml")


def test_a_second_download_fetches_nothing(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert _download(capsys)[0] == 0
    before = len(hub.requests)
    code, out, err = _download(capsys, "--force")
    assert code == 0, err
    # one listing per repository and nothing else: complete files are known at that commit
    assert hub.requests[before:] == [
        ("hub", "GET", f"/api/models/{repo}") for repo in (BASE_MODEL_REPO, CHECKPOINT_REPO, DWPOSE_HF_REPO)
    ]  # fmt: skip
    assert f"fetched 0 files (0 B), {len(NEEDED)} already complete" in out
    # each file was hashed once, after its download; its stat identity spares the re-run
    verified = json.loads((tmp_path / "models/.cache/mimicache/verified.json").read_text())
    assert len(verified) == len(NEEDED)
    assert out.count("  have ") == len(NEEDED)
    # without the inputs, the test case keeps placeholders and says what to fill in
    case = load_config("configs/real.yaml").test_case[0]
    assert case.ref_image_path.name == "reference_image.png"
    assert "before running, set ref_image_path and ref_video_path" in out


def test_existing_config_is_kept_without_force(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "real.yaml").write_text("mine\n")
    code, _out, err = _download(capsys)
    assert code == 2
    assert err.strip() == (
        "error: configs/real.yaml exists; pass --force to replace it, or --config OTHER.yaml "
        "to write another"
    )
    assert hub.requests == []  # refused before anything was asked of the hub
    assert (tmp_path / "configs" / "real.yaml").read_text() == "mine\n"


def test_a_damaged_file_is_an_error_naming_it_and_the_next_run_repairs_it(
    hub, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.corrupt.add("dw-ll_ucoco_384.onnx")  # the last file: the others are complete by then
    code, out, err = _download(capsys)
    assert code == 2
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    damaged = tmp_path / "models" / "DWPose" / "dw-ll_ucoco_384.onnx"
    assert f"error: {damaged} ({DWPOSE_HF_REPO}/dw-ll_ucoco_384.onnx at commit" in line
    assert "its sha256 is" in line and "the hub lists" in line
    assert "run `mimicache download` again to fetch it anew" in line
    assert not damaged.exists()
    assert not (tmp_path / "configs" / "real.yaml").exists()
    hub.corrupt.clear()
    before = len(hub.requests)
    code, out, err = _download(capsys)
    assert code == 0, err
    served = _served(hub, DWPOSE_HF_REPO, "dw-ll_ucoco_384.onnx")
    assert damaged.read_bytes() == served
    assert [p for s, m, p in hub.requests[before:] if s == "cdn"] == [
        "/" + hashlib.sha256(served).hexdigest()
    ]
    assert f"fetched 1 file ({format_size(len(served))}), {len(NEEDED) - 1} already complete" in out


def test_gated_repo_without_a_token_is_one_message_and_exit_2(hub, tmp_path):
    # a real process, configured by HF_ENDPOINT as a user's would be
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", "mimicache.cli", "download", "--dir", "models"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert line == (
        f"error: {BASE_MODEL_REPO} is a gated model: accept its licence at "
        f"https://huggingface.co/{BASE_MODEL_REPO} (logged in to the hub), then log in here "
        "with `hf auth login` (or set HF_TOKEN), and run the command again"
    )
    assert hub.downloads() == []  # the gated repository comes first: nothing big was fetched
    assert not (tmp_path / "configs" / "real.yaml").exists()


def test_gated_repo_with_a_token_not_granted(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    code, _out, err = _download(capsys)
    assert code == 2
    assert "the account of your hub token has not been granted access" in err
    assert f"https://huggingface.co/{BASE_MODEL_REPO}" in err and "hf auth login" in err


def test_unreachable_hub_is_one_message(repos, tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _point_hub_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf-home")
    monkeypatch.chdir(tmp_path)
    code, _out, err = _download(capsys)
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(
        f"error: {BASE_MODEL_REPO}: could not reach the hub at http://127.0.0.1:{port} (ConnectError"
    )
    assert line.endswith("then run `mimicache download` again (finished files are kept)")


def test_offline_download_says_so(hub, capsys, monkeypatch):
    _go_offline(monkeypatch)
    code, _out, err = _download(capsys)
    assert code == 2 and "HF_HUB_OFFLINE is set" in err
    assert hub.requests == []


def test_dry_run_lists_sizes_and_fetches_nothing(hub, tmp_path, capsys):
    code, out, err = _download(capsys, "--dry-run")
    assert code == 0, err
    assert all(m == "GET" and p.startswith("/api/models/") for _, m, p in hub.requests)
    assert not (tmp_path / "models").exists() and not (tmp_path / "configs").exists()
    ckpt = _served(hub, CHECKPOINT_REPO, "MimicMotion_1-1.pth")
    (row,) = [ln for ln in out.splitlines() if "MimicMotion_1-1.pth" in ln]
    assert row.split()[:3] == ["fetch", *format_size(len(ckpt)).split()]
    assert f"would fetch {len(NEEDED)} files" in out
    assert f"note: {BASE_MODEL_REPO} is gated and no hub token is set" in out
    assert "would write configs/real.yaml" in out


def _hub_config(tmp_path: Path, commit: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(
        f"base_model_path: hf://{BASE_MODEL_REPO}\n"
        f"ckpt_path: hf://{CHECKPOINT_REPO}/MimicMotion_1-1.pth\n"
        "test_case:\n  - {ref_video_path: dance.mp4, ref_image_path: ref.png}\n"
        "dwpose:\n"
        f"  det_model_path: hf://{DWPOSE_HF_REPO}/yolox_l.onnx\n"
        f"  pose_model_path: hf://{DWPOSE_HF_REPO}@{commit}/dw-ll_ucoco_384.onnx\n"
    )
    return path


def test_hub_references_resolve_through_the_hub_cache_and_offline(hub, tmp_path, monkeypatch):
    from mimicache.cache import fingerprint_files
    from mimicache.pipeline.weights import checked_checkpoint
    from mimicache.pose import DWPose

    commit = hub.repos[DWPOSE_HF_REPO].commit
    config = load_config(_hub_config(tmp_path, commit))
    assert config.ckpt_path == HubFile(CHECKPOINT_REPO, "MimicMotion_1-1.pth")
    assert config.dwpose_pose_path == HubFile(DWPOSE_HF_REPO, "dw-ll_ucoco_384.onnx", commit)
    assert config_to_dict(config)["dwpose"]["pose_model_path"] == (
        f"hf://{DWPOSE_HF_REPO}@{commit}/dw-ll_ucoco_384.onnx"
    )
    assert hub.requests == []  # loading a config fetches nothing
    ckpt = Path(config.ckpt_path)
    cache = tmp_path / "hf-home" / "hub"
    assert ckpt.is_relative_to(cache) and ckpt.name == "MimicMotion_1-1.pth"
    assert ckpt.read_bytes() == _served(hub, CHECKPOINT_REPO, "MimicMotion_1-1.pth")
    _, _, unet, pose = checked_checkpoint(None, f"hf://{CHECKPOINT_REPO}/MimicMotion_1-1.pth")
    assert list(unet) == ["conv_in.weight"] and list(pose) == ["final.bias"]
    dwpose = DWPose(config.dwpose_det_path, config.dwpose_pose_path)
    assert dwpose.det_model_path.is_relative_to(cache)
    # the keys fingerprint the resolved files' bytes: the same as a local copy's
    copies = {}
    for role, name in (("det", "yolox_l.onnx"), ("pose", "dw-ll_ucoco_384.onnx")):
        copies[role] = tmp_path / name
        copies[role].write_bytes(_served(hub, DWPOSE_HF_REPO, name))
    resolved = {"det": dwpose.det_model_path, "pose": dwpose.pose_model_path}
    assert fingerprint_files(resolved) == fingerprint_files(copies)
    copies["checkpoint"] = tmp_path / "MimicMotion_1-1.pth"
    copies["checkpoint"].write_bytes(ckpt.read_bytes())
    # a reference handed as it is (as --resume's checkpoint fingerprint may get it)
    assert fingerprint_files({"checkpoint": config.ckpt_path}) == fingerprint_files(
        {"checkpoint": copies["checkpoint"]}
    )
    assert sorted(hub.downloads()) == sorted(
        ["MimicMotion_1-1.pth", "yolox_l.onnx", "dw-ll_ucoco_384.onnx"]
    )

    _go_offline(monkeypatch)
    before = len(hub.requests)
    again = load_config(_hub_config(tmp_path, commit))
    assert Path(again.ckpt_path) == ckpt
    assert Path(again.dwpose_pose_path) == dwpose.pose_model_path
    assert len(hub.requests) == before  # from the cache, without a request
    with pytest.raises(ModelLoadError) as missing:
        Path(HubFile(CHECKPOINT_REPO, "MimicMotion.pth"))
    assert str(missing.value).startswith(
        f"hf://{CHECKPOINT_REPO}/MimicMotion.pth is not in the hub cache and HF_HUB_OFFLINE is "
        "set: run `mimicache download`"
    )


def test_base_model_hub_reference_fetches_only_what_inference_reads(hub, monkeypatch):
    from mimicache.pipeline.weights import resolve_base_model

    reference = f"hf://{BASE_MODEL_REPO}@{hub.repos[BASE_MODEL_REPO].commit}"
    with pytest.raises(ModelLoadError) as gated:  # no token yet
        resolve_base_model(reference)
    assert str(gated.value).startswith(
        f"could not fetch base model '{BASE_MODEL_REPO}' from the hub: {BASE_MODEL_REPO} is a "
        f"gated model: accept its licence at https://huggingface.co/{BASE_MODEL_REPO}"
    )
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    files = resolve_base_model(reference)
    assert files.variant == {"vae": "fp16", "image_encoder": "fp16"}
    assert sorted(hub.downloads()) == SVD_NEEDED  # not the UNet's weights, nor the single file
    assert files.vae_weights.read_bytes() == _served(
        hub, BASE_MODEL_REPO, "vae/diffusion_pytorch_model.fp16.safetensors"
    )


def test_doctor_reports_hub_references(hub, tmp_path, monkeypatch):
    from mimicache.cli import doctor

    config = load_config(_hub_config(tmp_path, hub.repos[DWPOSE_HF_REPO].commit))
    check, _ = doctor.model_file_check("checkpoint", config.ckpt_path, "ckpt_path", True)
    assert check.status == doctor.WARN and check.fix == doctor.DOWNLOAD_FIX
    assert check.detail == (
        f"hf://{CHECKPOINT_REPO}/MimicMotion_1-1.pth is not in the hub cache: the first run "
        "downloads it"
    )
    Path(config.ckpt_path)  # now cached
    config = load_config(_hub_config(tmp_path, hub.repos[DWPOSE_HF_REPO].commit))
    _go_offline(monkeypatch)
    checks = list(doctor.config_checks(tmp_path / "hub.yaml", digests=True))
    (ckpt,) = [c for c in checks if c.area == "checkpoint"]
    assert ckpt.status == doctor.OK and ckpt.detail.startswith(
        f"hf://{CHECKPOINT_REPO}/MimicMotion_1-1.pth (hub cache) {config.ckpt_path.cached()}"
    )
    assert "tensors read" in ckpt.detail
    dwpose = [c for c in checks if c.area == "DWPose"]
    assert [c.status for c in dwpose] == [doctor.FAIL, doctor.FAIL]
    assert all("HF_HUB_OFFLINE is set" in c.detail for c in dwpose)
    assert all(c.fix.startswith("mimicache download") for c in dwpose)


def test_malformed_hub_references_name_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _hub_config(tmp_path, "main")
    path.write_text(
        path.read_text()
        .replace(f"hf://{CHECKPOINT_REPO}/MimicMotion_1-1.pth", f"hf://{CHECKPOINT_REPO}")
        .replace(f"hf://{DWPOSE_HF_REPO}/yolox_l.onnx", "hf://datasets/x/y/yolox_l.onnx")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "ckpt_path" in message and "names a repository, not a file in it" in message
    assert "dwpose.det_model_path" in message and "only model repositories" in message


def test_hub_reference_syntax():
    assert hub_file("models/x.pth") is None
    ref = hub_file("hf://tencent/MimicMotion@refs%2Fpr%2F3/sub/MimicMotion_1-1.pth")
    assert ref == HubFile("tencent/MimicMotion", "sub/MimicMotion_1-1.pth", "refs/pr/3")
    assert str(ref) == "hf://tencent/MimicMotion@refs%2Fpr%2F3/sub/MimicMotion_1-1.pth"
    assert hub_file(Path("hf://yzd-v/DWPose/yolox_l.onnx")) == HubFile(DWPOSE_HF_REPO, "yolox_l.onnx")  # fmt: skip
    for bad in ("hf://tencent", "hf://a/b@/c.pth", "hf://a/b/../c.pth", "hf://a/b/"):
        with pytest.raises(ConfigError):
            hub_file(bad)


def test_base_model_files_prefer_fp16_and_skip_the_unet_weights():
    names = [
        "model_index.json", "README.md", "svd_xt_1_1.safetensors",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "image_encoder/config.json", "image_encoder/model.safetensors",
        "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
    ]  # fmt: skip
    assert base_model_files(names) == [
        "feature_extractor/preprocessor_config.json",
        "image_encoder/config.json",
        "image_encoder/model.safetensors",  # no fp16 variant: the full weights
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]
