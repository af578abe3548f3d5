"""Clip scores end to end on the tiny bundle: in the sidecar, results.jsonl, the summary and
report.html; thresholds that make a clip suspect; --no_score; a score that cannot be made."""

from __future__ import annotations

import html.parser
import json

import pytest

import mimicache.engine.scoring
from mimicache.batch.reporting.results import RESULTS_FILE, read_results
from mimicache.cli import main
from tests.engine_fixtures import walk_workspace

LENIENT = [
    "body=100", "left_hand=100", "right_hand=100", "face=100", "hand_recall=0",
    "identity=0", "flicker=100",
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    return walk_workspace(tmp_path_factory.mktemp("scored"), tiny_bundle)


def _run(workspace, out, *extra):
    argv = [
        "run", "--inference_config", str(workspace["config"]), "--output_dir", str(out),
        "--feature_cache_dir", str(workspace["root"] / "cache"), "--quiet", "--device", "cpu",
        *extra,
    ]  # fmt: skip
    return main(argv)


def _sidecar(out):
    [path] = list(out.glob("walk_*.json"))
    return json.loads(path.read_text())


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_every_clip_is_scored_into_its_sidecar_results_summary_and_report(
    workspace, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _run(workspace, out) == 0
    quality = _sidecar(out)["quality"]
    # the tiny random-weight UNet draws noise: no hand where the pose asks for one
    assert quality["verdict"] == "suspect" and quality["reasons"]
    assert set(quality["parts"]) == {"body", "left_hand", "right_hand", "face"}
    assert quality["frames"] == list(range(6)) and len(quality["parts"]["body"]["errors"]) == 6
    assert quality["scorer"].startswith("mimicache-score/") and quality["worst"]
    assert -1.0 <= quality["identity"] <= 1.0 and quality["flicker"] >= 0
    [row] = read_results(out / RESULTS_FILE)
    assert row["quality"] == quality
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[3] == "quality"
    assert " suspect " in printed and "1 suspect" in printed
    page = _Text()
    page.feed(next(out.glob("*.report.html")).read_text())
    text = " ".join(page.text)
    assert "Quality, worst first" in text and quality["reasons"][0] in text
    assert "worst frames: the target skeleton" in text
    assert "svg" in page.tags and "polyline" in page.tags
    assert page.tags.count("img") >= 2  # the thumbnail strip and the worst frames


def test_thresholds_decide_the_verdict_and_no_score_turns_it_off(workspace, tmp_path, capsys):
    lenient = tmp_path / "lenient"
    assert _run(workspace, lenient, "--score_threshold", *LENIENT) == 0
    quality = _sidecar(lenient)["quality"]
    assert quality["verdict"] == "ok" and quality["reasons"] == []
    assert quality["thresholds"]["right_hand"] == 100
    assert "suspect" not in capsys.readouterr().out
    off = tmp_path / "off"
    assert _run(workspace, off, "--no_score") == 0
    assert "quality" not in _sidecar(off)
    assert [r["quality"] for r in read_results(off / RESULTS_FILE)] == [None]
    with pytest.raises(SystemExit) as usage:  # argparse's usage error, before anything loads
        _run(workspace, tmp_path / "bad", "--score_threshold", "right_hnd=1")
    assert usage.value.code == 2
    assert "unknown score threshold 'right_hnd'" in capsys.readouterr().err


def test_a_score_that_cannot_be_made_warns_and_the_job_stands(
    workspace, tmp_path, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("DWPose ran out of memory")

    monkeypatch.setattr(mimicache.engine.scoring, "score_result", broken)
    out = tmp_path / "out"
    assert _run(workspace, out) == 0
    data = _sidecar(out)
    assert data["status"] == "ok" and "quality" not in data
    assert "no clip score (RuntimeError: DWPose ran out of memory)" in caplog.text
