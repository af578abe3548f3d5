"""The CLI starts without the models' libraries: its parser, every ``--help`` and the cache
commands import no torch, diffusers, ray, gradio, ...; the cache is checked from raw bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimicache.cache import FeatureStore, StageKey
from mimicache.cache.entry import data_damage, encode_entry, prepare_tensors, tensor_checksum

HEAVY = (
    "torch",
    "diffusers",
    "transformers",
    "ray",
    "gradio",
    "safetensors",
    "cv2",
    "onnxruntime",
    "av",
    "matplotlib",
    "fsspec",
    "s3fs",
    "pyarrow",
)

# Builds the parser, asks every command and sub-command for --help, then runs the given cache
# actions; prints the heavy packages loaded by then, and the cache actions' exit codes.
PROBE = """
import argparse, contextlib, io, sys
import mimicache.cli.main
main = sys.modules["mimicache.cli.main"]
parser = main.build_parser()
def subcommands(p):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()
helped = 0
for argv in [[]] + [[name] for name, _ in subcommands(parser)] + [
    [name, sub] for name, p in subcommands(parser) for sub, _ in subcommands(p)
]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        parser.parse_args([*argv, "--help"])
    helped += "usage: mimicache" in out.getvalue()
codes = []
for argv in ACTIONS:
    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(main.main(argv))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(helped, codes, heavy)
"""


def _probe(actions: list[list[str]]) -> str:
    code = f"ACTIONS = {actions!r}\nHEAVY = {HEAVY!r}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_help_of_every_command_loads_no_heavy_library() -> None:
    helped, codes, heavy = _probe([]).split(" ", 2)
    assert codes == "[]"
    # mimicache, 10 commands, 5 cache actions: a --help that failed would not print its usage
    assert int(helped) >= 16
    assert heavy == "[]"


def test_cache_ls_and_verify_load_no_heavy_library(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with FeatureStore(root) as store:
        for i, stage in enumerate(("video_keypoints", "clip_embeddings", "vae_latents")):
            key = StageKey({"video": f"{i:064x}"}, {"m": "x"}, {}, {"device": "cpu"})
            store.get_or_compute(stage, key, lambda: {"v": torch.arange(6.0).reshape(2, 3)})
    actions = [["cache", action, "--feature_cache_dir", str(root)] for action in ("ls", "verify")]
    assert _probe(actions) == "16 [0, 0] []"
    # the same probe sees a damaged entry, so the torch-free check is a real one
    entry = next(root.rglob("*.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0xFF
    entry.write_bytes(bytes(data))
    assert _probe(actions).endswith("[0, 1] []")


@pytest.mark.parametrize(
    "tensors",
    [
        {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1, 2])},
        {"x": torch.ones(2, 2, dtype=torch.float16), "y": torch.zeros(0, 3, dtype=torch.uint8)},
        {"z": torch.tensor([True, False]), "w": torch.full((1, 2), 2.5, dtype=torch.bfloat16)},
    ],
)
def test_raw_check_hashes_what_the_writer_hashed(tensors: dict[str, torch.Tensor]) -> None:
    """The check from raw bytes accepts every entry the store writes, and only those."""
    key = StageKey({"i": "0"}, {}, {})
    data, meta = encode_entry("s", key, prepare_tensors(tensors), None, None, "1")
    assert meta["checksum"] == tensor_checksum(prepare_tensors(tensors))
    assert data_damage(data, "s", key.digest) is None
    if any(t.numel() for t in tensors.values()):
        flipped = data[:-1] + bytes([data[-1] ^ 1])
        assert data_damage(flipped, "s", key.digest) == "checksum mismatch"


def test_the_stage_names_are_the_stages_and_the_pose_outputs() -> None:
    from mimicache.engine import stage_names
    from mimicache.engine.stages import CACHED_STAGES
    from mimicache.pose.preprocess import IMAGE_KEYPOINTS, POSE_FRAMES, VIDEO_KEYPOINTS

    assert tuple(CACHED_STAGES) == stage_names.STAGES
    assert (VIDEO_KEYPOINTS, IMAGE_KEYPOINTS, POSE_FRAMES) == stage_names.POSE_STAGES
