"""``mimicache doctor``: whether this machine can run a config, and the one fix for each problem.

Checks torch and CUDA, DWPose's backends and providers, PyAV's H.264 codecs, the config's
weight files (present, size, BLAKE3 digest) and the free space at the cache and output
folders. Exit code 0 when a run would start, 1 when one would fail (a FAIL line).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mimicache.cli.console import call_command, setup_logging
from mimicache.cli.engine_flags import add_engine_flags
from mimicache.cli.fmt import format_size, plural, text_table
from mimicache.config.hub import HUB_FILES, HubFile, hub_repo
from mimicache.errors import MimicacheError

OK, WARN, FAIL = "ok", "warn", "FAIL"
# below this, a folder that receives videos or cache entries is reported
LOW_SPACE = 2 * 10**9
# a 72-frame tile peaks near 16 GiB and users report running out of memory on 24 GB cards:
# up to that size, the memory options are worth knowing
SMALL_GPU = 24 * 2**30
TORCH_VERSION = "2.13.0"  # the version scripts/install.sh pins (MIMICACHE_TORCH_VERSION)
# the CUDA build of the pinned torch: an unpinned `pip install torch` may bring another
# version than the one the project is tested with
TORCH_CUDA = (
    f'pip install "torch=={TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cu126 '
    "(or bash scripts/install.sh, which picks the build by the machine)"
)
DOWNLOAD_FIX = "mimicache download (fetches every weight file and writes a config naming them)"


@dataclass(frozen=True)
class Check:
    """One line of the report; ``fix`` is the command or setting that clears a problem."""

    area: str
    status: str
    detail: str
    fix: str | None = None


HELP = "check torch/CUDA, DWPose, video codecs, weight files and disk space"
DESCRIPTION = """\
Check that a run of the config would work here; print the fix of each problem. Exit 1 when a run
would fail.
"""


def add_doctor_command(commands) -> None:
    doctor = commands.add_parser("doctor", help=HELP, description=DESCRIPTION)
    doctor.add_argument(
        "--inference_config", default="configs/test.yaml", help="(default: %(default)s)"
    )
    add_engine_flags(doctor, ("cache_dir",))
    doctor.add_argument("--output_dir", default="outputs/")
    add_engine_flags(doctor, ("device",))
    doctor.add_argument(
        "--no_digests", action="store_true", help="skip the weight files' digests (fast)"
    )
    doctor.add_argument("-v", "--verbose", action="store_true")
    doctor.set_defaults(func=doctor_command)


def doctor_main(argv) -> int:
    """``mimicache doctor ARGV`` alone (tests and scripts)."""
    parser = argparse.ArgumentParser(prog="mimicache")
    add_doctor_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *argv])
    return call_command(args.func, args)


def doctor_command(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    checks = [
        *torch_checks(args.device),
        *dwpose_checks(),
        *video_checks(),
        *config_checks(Path(args.inference_config), digests=not args.no_digests),
        *space_checks(Path(args.output_dir), Path(args.feature_cache_dir)),
    ]
    # paths under the working folder as the config names them: relative, as a user types them
    print(report(checks).replace(str(Path.cwd()) + os.sep, ""))
    return 1 if any(c.status == FAIL for c in checks) else 0


def report(checks: list[Check]) -> str:
    rows = [("", "check", "result")] + [(c.status, c.area, c.detail) for c in checks]
    lines = [text_table(rows)]
    problems = [c for c in checks if c.fix]
    if problems:
        lines += ["", "to fix:"]
        lines += [f"  {c.area}: {c.fix}" for c in problems]
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    verdict = "a run would fail" if failed else "ready to run"
    lines += [
        "",
        f"{verdict}: {plural(failed, 'problem')}, {plural(warned, 'warning')}",
    ]
    return "\n".join(lines)


# -- torch, CUDA, memory options, compile ------------------------------------------------------


def torch_checks(device_arg: str | None) -> Iterator[Check]:
    import torch

    from mimicache.pipeline.fast import compile_problem

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    yield Check("torch", OK, f"{torch.__version__} ({build})")
    wants_cuda = device_arg is None or device_arg.startswith("cuda")
    if torch.cuda.is_available():
        index = torch.device(device_arg or "cuda").index or 0
        props = torch.cuda.get_device_properties(index)
        memory = f"{props.total_memory / 2**30:.0f} GiB"
        detail = f"{props.name}, {memory}, compute {props.major}.{props.minor}"
        if props.total_memory < SMALL_GPU:
            yield Check(
                "GPU",
                WARN,
                f"{detail}: 72-frame tiles may run out of memory",
                "add --offload model (and --decode_chunk_size 4) to mimicache run",
            )
        else:
            yield Check("GPU", OK, detail)
    elif device_arg and device_arg.startswith("cuda"):
        yield Check("GPU", FAIL, f"--device {device_arg} but CUDA is not available", TORCH_CUDA)
    else:
        why = "no CUDA device" if torch.version.cuda else "this torch has no CUDA"
        yield Check("GPU", WARN, f"{why}: generation runs on the CPU (very slow)", TORCH_CUDA)
    device = "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"
    problem = compile_problem(device)
    if problem:
        yield Check("torch.compile", WARN, f"--compile unavailable: {problem}", problem)
    else:
        yield Check("torch.compile", OK, f"available on {device} (--speed fast --compile)")
    if importlib.util.find_spec("accelerate") is None:
        yield Check(
            "offload",
            WARN,
            "accelerate missing: --offload model|sequential cannot run",
            "pip install 'accelerate>=0.26'",
        )
    else:
        yield Check("offload", OK, "accelerate installed (--offload model|sequential)")


# -- DWPose, video ---------------------------------------------------------------------------


def dwpose_checks() -> Iterator[Check]:
    import onnxruntime
    import torch

    from mimicache.pose.backends import BACKENDS

    providers = onnxruntime.get_available_providers()
    shown = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    backends = [b for b in BACKENDS if b != "auto"]
    yield Check("DWPose", OK, f"backends: {', '.join(backends)} (--dwpose_backend)")
    detail = f"{onnxruntime.__version__} ({shown})"
    if torch.cuda.is_available() and "CUDAExecutionProvider" not in providers:
        detail += ": no CUDA provider, so DWPose 'auto' runs on the torch backend"
    yield Check("onnxruntime", OK, detail)


def video_checks() -> Iterator[Check]:
    import av

    missing = []
    for name, mode in (("libx264", "w"), ("h264", "r")):
        try:
            av.codec.Codec(name, mode)
        except Exception:  # UnknownCodecError and friends differ between PyAV versions
            missing.append(f"{name} ({'encoder' if mode == 'w' else 'decoder'})")
    if missing:
        yield Check(
            "PyAV",
            FAIL,
            f"{av.__version__}: missing {', '.join(missing)}",
            "pip install --force-reinstall av (the PyPI wheels bundle FFmpeg with libx264)",
        )
    else:
        yield Check("PyAV", OK, f"{av.__version__}: libx264 encoder, h264 decoder")


# -- the config's weight files ---------------------------------------------------------------


def config_checks(path: Path, *, digests: bool) -> Iterator[Check]:
    from mimicache.config import load_config

    if not path.is_file():
        yield Check(
            "config", FAIL, f"{path} not found", "pass --inference_config PATH (a YAML config)"
        )
        return
    try:
        config = load_config(path)
    except MimicacheError as exc:
        yield Check("config", FAIL, f"{path}: {exc}", f"edit {path} as the message says")
        return
    yield Check("config", OK, f"{path}: {plural(len(config.test_case), 'test case')}")
    inputs = {Path(c.ref_image_path) for c in config.test_case}
    if config.batch_video_folder is None:
        inputs |= {Path(c.ref_video_path) for c in config.test_case}
    missing = sorted(str(p) for p in inputs if not p.expanduser().is_file())
    if missing:
        yield Check(
            "inputs",
            FAIL,
            f"{plural(len(missing), 'missing file')}: {', '.join(missing[:3])}",
            f"fix ref_image_path / ref_video_path in {path}",
        )
    yield from base_model_checks(config.base_model_path, digests=digests)
    check, local = model_file_check("checkpoint", config.ckpt_path, "ckpt_path", digests)
    if check.status == OK:
        unet_config = _unet_config(config.base_model_path)
        check = _opened(check, checkpoint_check(local, unet_config))
    yield check
    for key, file in (
        ("det_model_path", config.dwpose_det_path),
        ("pose_model_path", config.dwpose_pose_path),
    ):
        check, local = model_file_check("DWPose", file, f"dwpose.{key}", digests)
        if check.status == OK:
            check = _opened(check, onnx_check(local, f"dwpose.{key}"))
        yield check


def model_file_check(
    area: str, file: Path | HubFile, key: str, digests: bool
) -> tuple[Check, Path]:
    """A weight file of the config, and the local file to open: a hub reference is fine when
    the hub cache holds its file (checked like any file), else the first run downloads it,
    which fails offline. Doctor never downloads."""
    if not isinstance(file, HubFile):
        return weight_check(area, Path(file), key, digests), Path(file)
    from huggingface_hub import is_offline_mode

    local = file.cached()
    if local is not None:
        check = weight_check(area, local, key, digests)
        if check.status == OK:
            check = Check(area, OK, f"{file} (hub cache) {check.detail}")
        return check, local
    if is_offline_mode():
        detail = f"{file} is not in the hub cache and HF_HUB_OFFLINE is set"
        return Check(area, FAIL, detail, f"{DOWNLOAD_FIX}, or go online once"), Path()
    detail = f"{file} is not in the hub cache: the first run downloads it"
    return Check(area, WARN, detail, DOWNLOAD_FIX), Path()


def _opened(found: Check, opened: Check) -> Check:
    """One line per weight file: its size and digest, then whether it loads as a run loads it."""
    if opened.status != OK:
        return opened
    return Check(found.area, OK, f"{found.detail}; {opened.detail}")


def checkpoint_check(path: Path, unet_config: Path | None) -> Check:
    """Opens the checkpoint as a run would: safe loading, then the strict key comparison with
    the model (skipped when the base model's UNet config is not on this machine)."""
    from mimicache.pipeline.weights import checked_checkpoint

    try:
        _, _, unet_state, pose_state = checked_checkpoint(unet_config, path)
    except MimicacheError as exc:
        # the safety refusal carries its conversion command on the following lines
        detail, _, command = str(exc).partition("\n")
        fix = command.strip() or (
            "set ckpt_path to MimicMotion_1-1.pth (hf download tencent/MimicMotion "
            "MimicMotion_1-1.pth) with the SVD img2vid-xt-1-1 base model"
        )
        return Check("checkpoint", FAIL, detail, fix)
    keys = plural(len(unet_state) + len(pose_state), "tensor")
    matched = "match the model" if unet_config else "read (no local UNet config to compare)"
    return Check("checkpoint", OK, f"{keys} {matched}")


def _unet_config(base: str | Path) -> Path | None:
    from mimicache.pipeline.weights import resolve_base_model

    root = Path(base).expanduser()
    if not root.exists():  # a hub id: resolving it could download, which doctor never does
        return None
    try:
        unet_config = resolve_base_model(root).unet_config
    except MimicacheError:
        return None
    return unet_config if unet_config.is_file() else None


def onnx_check(path: Path, key: str) -> Check:
    """Opens the ONNX file in ONNX Runtime, as the DWPose reference backend does."""
    from mimicache.pose.backends import OrtModel

    try:
        OrtModel(path, "cpu")
    except MimicacheError as exc:
        fix = f"download {path.name} again (see the message) or set {key} to a good file"
        return Check("DWPose", FAIL, str(exc), fix)
    return Check("DWPose", OK, "opens in ONNX Runtime")


def base_model_checks(base: str | Path, *, digests: bool) -> Iterator[Check]:
    from mimicache.pipeline.weights import resolve_base_model

    repo = hub_repo(base)
    if repo is not None:  # hf://OWNER/REPO[@REVISION]
        yield hub_model_check(*repo)
        return
    root = Path(base).expanduser()
    if not root.exists() and str(base).count("/") == 1:
        yield hub_model_check(str(base))
        return
    try:
        files = resolve_base_model(root)
    except MimicacheError as exc:
        yield Check("base model", FAIL, str(exc), "set base_model_path to an SVD folder or hub id")
        return
    yield Check("base model", OK, f"{files.root}")
    for component in (files.vae_weights, files.image_encoder_weights):
        yield weight_check("base model", component, "base_model_path", digests)


def hub_model_check(repo: str, revision: str | None = None) -> Check:
    """A hub id is fine when the local hub cache holds it; otherwise the first run downloads
    it, which fails offline."""
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo, revision=revision, allow_patterns=["model_index.json"], local_files_only=True
        )
        shown = f"{repo}@{revision}" if revision else repo
        return Check("base model", OK, f"{shown} (in the local hub cache: {local})")
    except Exception:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        fix = f"hf download {repo} (gated: accept the licence, then hf auth login)"
        if offline:
            return Check("base model", FAIL, f"{repo} is not cached and HF_HUB_OFFLINE is set", fix)
        return Check("base model", WARN, f"{repo} is not cached: the first run downloads it", fix)


def weight_check(area: str, path: Path, key: str, digests: bool) -> Check:
    from mimicache.storage.digests import file_digest

    path = path.expanduser()
    if not path.is_file():
        fix = f"set {key} in the config to an existing file"
        if path.name in HUB_FILES:
            repo = HUB_FILES[path.name]
            fix = f"hf download {repo} {path.name} --local-dir {path.parent}, or {DOWNLOAD_FIX}"
        return Check(area, FAIL, f"{path} missing (config key {key})", fix)
    detail = f"{path} {format_size(path.stat().st_size)}"
    if digests:
        try:
            detail += f" blake3 {file_digest(path)[:16]}"
        except OSError as exc:
            return Check(area, FAIL, f"{path} unreadable: {exc}", f"chmod +r {path}")
    return Check(area, OK, detail)


# -- disk space ------------------------------------------------------------------------------


def space_checks(output_dir: Path, cache_dir: Path) -> Iterator[Check]:
    yield folder_check("output folder", output_dir, FAIL, "--output_dir DIR (a writable folder)")
    # an unwritable cache only slows a run down: it degrades to recomputation
    yield folder_check(
        "feature cache", cache_dir, WARN, "--feature_cache_dir DIR, or mimicache cache prune"
    )


def folder_check(area: str, folder: Path, unwritable: str, fix: str) -> Check:
    existing = folder.expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(area, unwritable, f"{folder}: {existing} is not writable", fix)
    free = shutil.disk_usage(existing).free
    if free < LOW_SPACE:
        return Check(area, WARN, f"{folder}: only {format_size(free)} free", fix)
    return Check(area, OK, f"{folder}: {format_size(free)} free")
