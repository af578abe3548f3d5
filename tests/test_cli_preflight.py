"""Errors before any work: a missing extra names its pip line, a Ray-only flag with the local
executor is refused; either way before the log file, the output folder or a model exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs ``mimicache ARGV`` with the named modules made unimportable (an import of a module
# whose sys.modules entry is None raises ImportError), as on a machine without the extra.
PROBE = """
import sys
for name in MISSING:
    sys.modules[name] = None
from mimicache.cli import main
sys.exit(main(ARGV))
"""


def _mimicache(argv: list[str], missing: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = f"MISSING = {missing!r}\nARGV = {argv!r}\n{PROBE}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("argv", "missing", "words"),
    [
        (["run", "--executor", "ray"], ("ray",), ["--executor ray needs ray", '"mimicache[ray]"']),
        (["bench", "--plot", "x.png"], ("matplotlib",), ["bench --plot", '"mimicache[plot]"']),
        (
            ["run", "--feature_cache_dir", "s3://bucket/cache"],
            ("fsspec", "s3fs"),
            ["--feature_cache_dir s3://bucket/cache needs fsspec", '"mimicache[s3]"'],
        ),
        (["run", "--batch_folder", "s3://b/videos"], ("s3fs",), ["needs s3fs", "mimicache[s3]"]),
    ],
)
def test_a_missing_extra_is_one_line_before_any_work(tmp_path, argv, missing, words):
    out = tmp_path / "out"
    argv = [*argv, "--inference_config", str(tmp_path / "none.yaml"), "--output_dir", str(out)]
    done = _mimicache(argv, missing)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert 'pip install "mimicache[' in line
    assert not out.exists()  # no output folder, no log file in it


def test_the_ui_without_gradio_names_its_extra(tmp_path):
    out = tmp_path / "out"
    done = _mimicache(["ui", "--output_dir", str(out)], ("gradio",))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert 'pip install "mimicache[ui]"' in line
    assert not out.exists()


def test_pose_with_an_s3_cache_and_no_s3_extra_stops_first(tmp_path):
    out = tmp_path / "out" / "preview.mp4"
    argv = ["pose", "--feature_cache_dir", "s3://b/c", "--output", str(out)]
    done = _mimicache([*argv, "--inference_config", str(tmp_path / "none.yaml")], ("s3fs",))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "--feature_cache_dir s3://b/c needs s3fs" in line
    assert 'pip install "mimicache[s3]"' in line
    assert not out.parent.exists()


def test_with_the_extras_installed_the_check_passes(tmp_path):
    """The same flags with nothing missing get past the check to the config (not found)."""
    out = tmp_path / "out"
    done = _mimicache(
        ["run", "--inference_config", str(tmp_path / "none.yaml"), "--output_dir", str(out)]
    )
    assert done.returncode == 2
    assert "none.yaml" in done.stderr and "mimicache[" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--workers", "4"], "--workers 4: only --executor ray reads this flag"),
        (
            ["--ray_address", "auto", "--max_retries", "3", "--pose_workers", "1"],
            "--ray_address auto, --pose_workers 1, --max_retries 3: only --executor ray reads "
            "these flags",
        ),
        (["--gpus_per_worker", "0.5", "--executor", "local"], "--gpus_per_worker 0.5"),
    ],
)
def test_a_ray_flag_with_the_local_executor_is_an_error_before_any_work(tmp_path, flags, named):
    out = tmp_path / "out"
    argv = ["run", "--inference_config", str(tmp_path / "none.yaml"), "--output_dir", str(out)]
    done = _mimicache([*argv, *flags])
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert named in line and "add --executor ray or drop" in line, line
    assert not out.exists()


def test_the_default_retries_are_not_a_ray_flag(tmp_path: Path):
    argv = ["run", "--inference_config", str(tmp_path / "none.yaml"), "--max_retries", "1"]
    done = _mimicache([*argv, "--output_dir", str(tmp_path / "out")])
    assert "only --executor ray" not in done.stderr
