"""scripts/install.sh --dry-run: the torch build follows nvidia-smi, and the script says why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install.sh"


def _dry_run(tmp_path: Path, nvidia_smi_exit: int | None) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi_exit is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\nexit {nvidia_smi_exit}\n")
        fake.chmod(0o755)
    # a PATH without the real nvidia-smi, if the machine has one
    env = {k: v for k, v in os.environ.items() if k != "MIMICACHE_TORCH_INDEX"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_cpu_build_without_nvidia_smi(tmp_path):
    out = _dry_run(tmp_path, None)
    assert "CPU build (no NVIDIA GPU found: nvidia-smi is missing)" in out
    assert "[1/3] creating .venv" in out
    assert "--index-url" not in out


def test_cpu_build_when_nvidia_smi_fails(tmp_path):
    assert "CPU build (nvidia-smi is present but failed" in _dry_run(tmp_path, 9)


def test_cuda_build_when_nvidia_smi_runs(tmp_path):
    out = _dry_run(tmp_path, 0)
    assert "CUDA build" in out
    assert "--index-url https://download.pytorch.org/whl/cu126" in out
    assert ",gpu]" in out
