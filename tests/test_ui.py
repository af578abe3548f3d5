"""`mimicache ui`: the page's actions on the tiny bundle, its error messages next to the CLI's,
two runs at once queueing on one engine, and the page driven in a headless Chromium."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mimicache.cache.store import FeatureStore
from mimicache.cli import main
from mimicache.cli.ui import build_app, launch
from mimicache.cli.ui_actions import generate_action, preview_action, prune_action
from mimicache.cli.ui_session import Inputs, Settings, UiSession
from mimicache.config import load_config
from mimicache.errors import ConfigError
from tests.engine_fixtures import figure_video, reference_image, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEFAULTS = (
    1,
    2.0,
    42,
    "EulerDiscreteScheduler",
    "published",
    "auto",
    "exact",
)  # the page's initial values


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    clips = root / "clips"
    clips.mkdir()
    figure_video(clips / "a_walk.mp4", frames=5)
    figure_video(clips / "b_walk.mp4", frames=3, phase=0.4)
    broken = root / "c_broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    image = reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, image, clips / "a_walk.mp4")
    return SimpleNamespace(
        root=root, clips=clips, broken=broken, image=image, config=config, cache=root / "cache"
    )


@pytest.fixture(scope="module")
def engine(workspace):
    """The tiny engine, loaded once for the module; ``loads`` counts the factory's calls."""
    import torch

    from mimicache.engine import MimicMotion
    from mimicache.engine.scoring import ScoreOptions

    config = load_config(workspace.config)
    store = FeatureStore(workspace.cache)
    # scored, as the app's own engine (built from the command's flags) is
    loaded = MimicMotion.from_config(
        config, device="cpu", dtype=torch.float32, cache=store, score=ScoreOptions()
    )
    return SimpleNamespace(engine=loaded, loads=[])


def _session(workspace, engine, out: Path, **kw) -> UiSession:
    def factory():
        engine.loads.append(1)
        return engine.engine

    return UiSession(
        load_config(workspace.config),
        factory,
        output_dir=out,
        feature_cache_dir=workspace.cache,
        preview_dir=out.parent / f"{out.name}-previews",
        **kw,
    )


def _settings(steps=1, **kw) -> Settings:
    return Settings(steps, kw.pop("guidance", 2.0), kw.pop("seed", 42), **kw)


def test_preview_and_generate_write_what_run_writes(workspace, engine, tmp_path):
    session = _session(workspace, engine, tmp_path / "out")
    before = len(engine.loads)
    reports = []
    inputs = Inputs(workspace.image, workspace.clips / "a_walk.mp4")
    preview = session.preview(inputs, _settings(), lambda f, t: reports.append((f, t)))
    assert preview.frames == 1 + 5  # the reference's pose, then each driving frame
    assert preview.people.startswith("1 person over 5 sampled frames")
    import av

    with av.open(str(preview.video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # driving | skeleton over the reference | skeleton, each 64 x 64, 4-pixel gaps
    assert len(frames) == 6 and frames[0].shape == (64, 3 * 64 + 2 * 4, 3)
    assert preview.sheet.mode == "RGB" and preview.sheet.height > 0

    reports.clear()
    outcome = session.generate(inputs, _settings(steps=2), lambda f, t: reports.append((f, t)))
    assert len(engine.loads) == before + 1  # loaded once for both actions
    [output] = outcome.outputs
    assert output.parent == tmp_path / "out" and re.fullmatch(
        r"a_walk_\d{14}_steps2\.mp4", output.name
    )  # the CLI's name, with the value that differs from the config's
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert sidecar["status"] == "ok" and sidecar["parameters"]["num_inference_steps"] == 2
    assert "1 succeeded, 0 failed" in outcome.summary and outcome.errors == []
    # the score next to the result is the sidecar's, in plain lines
    score = session.score_text(output)
    assert score.splitlines()[0] == sidecar["quality"]["verdict"]
    assert all(f"- {reason}" in score for reason in sidecar["quality"]["reasons"])
    assert "identity" in score and "frames scored" in score
    texts = [t for _, t in reports]
    # 2 steps x 2 tiles (1+5 frames, tiles of 4 overlapping by 1): each tile's pass reported
    assert [t for t in texts if "denoising" in t] == [
        f"[1/1] a_walk: denoising step {s}/2" for s in (1, 1, 2, 2)
    ]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "pose_frames" in session.cache_stats()  # the preview's entries, read by the run

    # another sampler: an engine on the same loaded models (the loaded one untouched), named
    # in the output as `run` names it
    lcm = _settings(scheduler="AnimateLCM_SVD")
    outcome = session.generate(inputs, lcm)
    assert re.fullmatch(r"a_walk_\d{14}_lcm\.mp4", outcome.outputs[0].name)
    with session.engine(lcm) as lcm_engine:
        assert type(lcm_engine.pipeline.scheduler).__name__ == "AnimateLCMSVDScheduler"
        assert lcm_engine.pipeline.unet is engine.engine.pipeline.unet
    session.preview(inputs, _settings())
    assert type(engine.engine.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"

    # fast mode on the same models (its batch sizes planned for this job's shape), then
    # exact again: the published computation, nothing planned
    fast = _settings(speed="fast")
    outcome = session.generate(inputs, fast)
    assert outcome.errors == [] and len(outcome.outputs) == 1
    with session.engine(fast) as fast_engine:
        planner = fast_engine.batch_planner
    assert planner.options.speed == "fast" and len(planner.plans) == 1
    outcome = session.generate(inputs, _settings())
    assert outcome.errors == [] and len(outcome.outputs) == 1
    planner = engine.engine.batch_planner
    assert engine.engine.speed.speed == "exact" and planner.options.speed == "exact"
    assert planner.plans == {}

    # a batch folder: the preview shows its first video; a run takes every video, under
    # output_dir/<folder name>/, with the one engine still
    assert session.preview(Inputs(workspace.image, None, workspace.clips), _settings()).frames == 6
    outcome = session.generate(Inputs(workspace.image, None, workspace.clips), _settings())
    assert sorted(p.name.split("_")[0] for p in outcome.outputs) == ["a", "b"]
    assert {p.parent for p in outcome.outputs} == {tmp_path / "out" / "clips"}
    assert len(engine.loads) == before + 1

    assert "Removed" in session.prune_cache("0")
    assert re.search(r"TOTAL\s+0\s", session.cache_stats())


def test_a_sweep_runs_every_variant_on_the_loaded_models_and_draws_its_grid(
    workspace, engine, tmp_path
):
    session = _session(workspace, engine, tmp_path / "out")
    inputs = Inputs(image=workspace.image, video=workspace.clips / "a_walk.mp4")
    before = len(engine.loads)
    axes = [("seed", "1,2"), ("scheduler", "EulerDiscreteScheduler,AnimateLCM_SVD")]
    outcome = session.sweep(inputs, _settings(), axes)
    assert len(engine.loads) - before <= 1  # loaded at most once, for every variant
    assert len(outcome.outputs) == 4 and "4 succeeded" in outcome.summary
    [grid] = outcome.grids
    assert Path(grid.video).is_file() and grid.image is not None
    assert {tuple(sorted(c.values)) for c in grid.group.clips} == {("scheduler", "seed")}
    with pytest.raises(ConfigError, match="choose one or two keys"):
        session.sweep(inputs, _settings(), [("", ""), ("", "")])
    with pytest.raises(ConfigError, match="not a key that can be swept"):
        session.sweep(inputs, _settings(), [("seeds", "1,2")])


def test_bad_inputs_show_the_cli_messages(workspace, engine, tmp_path, capsys):
    session = _session(workspace, engine, tmp_path / "out")
    preview, generate = preview_action(session), generate_action(session)
    missing = tmp_path / "no_such_folder"

    # a missing batch folder: the line `mimicache run` prints, and no model is loaded for it
    code = main(
        [
            "run", "--inference_config", str(workspace.config), "--batch_folder", str(missing),
            "--output_dir", str(tmp_path / "cli"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 2
    cli_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert cli_line.startswith("error: --batch_folder ")
    before = len(engine.loads)
    *_, message = generate(str(workspace.image), None, str(missing), *DEFAULTS)
    assert message == cli_line
    assert len(engine.loads) == before

    # a video FFmpeg cannot read: the message the CLI logs for the failed job
    code = main(
        [
            "run", "--inference_config", str(workspace.config), "--batch_folder",
            str(workspace.broken.parent), "--output_dir", str(tmp_path / "cli2"), "--quiet",
        ]
    )  # fmt: skip
    log = next((tmp_path / "cli2").glob("*.log")).read_text()
    cli_message = re.search(r"c_broken failed: (.*)", log).group(1)
    assert "not a video PyAV can decode" in cli_message
    sheet, pose, message = preview(str(workspace.image), str(workspace.broken), "", *DEFAULTS)
    assert (sheet, pose) == (None, None) and message == f"error: {cli_message}"
    _, score, _, summary, message = generate(
        str(workspace.image), str(workspace.broken), "", *DEFAULTS
    )
    assert score == ""  # no clip, no score
    assert message.splitlines()[-1] == f"error: c_broken: {cli_message}"
    assert "0 succeeded, 1 failed" in summary

    # an image that is not one; values out of range; a size that is not one
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    *_, message = preview(str(text), str(workspace.clips / "a_walk.mp4"), "", *DEFAULTS)
    assert message.startswith("error: ") and str(text) in message
    *_, message = preview(None, str(workspace.clips / "a_walk.mp4"), "", *DEFAULTS)
    assert message == "error: choose a reference image"
    *_, message = generate(str(workspace.image), None, "", 0, *DEFAULTS[1:])
    assert message == "error: num_inference_steps must be a positive integer, got 0"
    *_, message = preview(
        str(workspace.image), None, str(workspace.clips), *DEFAULTS[:5], "tall", "exact"
    )
    assert message.startswith("error: person must be one of auto, largest, center or a person")
    assert prune_action(session)("lots").startswith("error: ")  # the size parser's message


class _SlowEngine:
    """A stand-in engine that notes how many generations run at once."""

    def __init__(self):
        self.pipeline = SimpleNamespace(scheduler=None)  # taken for the default sampler
        self.model_files = {"fake": "engine"}
        self.pose_retarget = "published"
        self.person = "auto"
        self.speed = SimpleNamespace(speed="exact")
        self.active = 0
        self.most = 0
        self.calls = 0

    def generate(self, case, *, progress, label, observer=None):
        self.active += 1
        self.most = max(self.most, self.active)
        self.calls += 1
        time.sleep(0.2)  # room for a second caller to overlap if nothing stopped it
        self.active -= 1
        frames = np.zeros((2, 16, 16, 3), np.uint8)
        return SimpleNamespace(frames=frames, fps=8, timings={"total": 0.2}, cache_events=[])


def test_two_runs_at_once_queue_on_one_engine(workspace, tmp_path):
    fake, loads = _SlowEngine(), []
    session = UiSession(
        load_config(workspace.config),
        lambda: loads.append(1) or fake,
        output_dir=tmp_path / "out",
        feature_cache_dir=tmp_path / "cache",
    )
    inputs = Inputs(workspace.image, workspace.clips / "a_walk.mp4")
    outcomes, errors = [], []

    def run():
        try:
            outcomes.append(session.generate(inputs, _settings()))
        except Exception as exc:  # a crash would land here
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(outcomes) == 2
    assert fake.calls == 2 and fake.most == 1  # one after the other
    assert len(loads) == 1  # built once, by whichever came first
    written = {o.outputs[0] for o in outcomes}
    assert len(written) == 2 and all(p.stat().st_size > 0 for p in written)


def test_command_checks_before_serving(workspace, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            [
                "ui", "--inference_config", str(workspace.config), "--port", str(port),
                "--output_dir", str(tmp_path / "out"), "--device", "cpu",
            ]
        )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: cannot serve on 127.0.0.1:{port}: the port is taken" in err
    code = main(
        ["ui", "--inference_config", str(tmp_path / "none.yaml"), "--output_dir", str(tmp_path)]
    )
    assert code == 2 and "none.yaml: config file not found" in capsys.readouterr().err


def test_a_missing_checkpoint_is_an_error_before_serving(workspace, tmp_path, capsys):
    config = tmp_path / "no_ckpt.yaml"
    text = Path(workspace.config).read_text()
    ckpt = str(load_config(workspace.config).ckpt_path)
    config.write_text(text.replace(Path(ckpt).name, "missing.pth"))
    code = main(
        [
            "ui", "--inference_config", str(config), "--port", str(_free_port()),
            "--output_dir", str(tmp_path / "out"), "--device", "cpu",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "missing.pth not found; set ckpt_path in the config" in err
    assert "http://" not in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _choose(page, expect, field: str, path: Path) -> None:
    """Upload ``path`` into the file field ``field`` and wait until the page lists it."""
    page.locator(f"#{field} input[type=file]").set_input_files(str(path))
    expect(page.locator(f"#{field}").get_by_role("cell", name=path.name)).to_be_visible()


# Gradio's queue statistics use pandas calls that pandas 3 deprecates
@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")
def test_the_page_in_a_browser(workspace, engine, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium (`.ci/run` does: apt-get install chromium)"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    running, most, count = [0], [0], threading.Lock()
    real = engine.engine.generate

    def counted(*args, **kwargs):
        with count:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(*args, **kwargs)
        finally:
            with count:
                running[0] -= 1

    monkeypatch.setattr(engine.engine, "generate", counted)
    session = _session(workspace, engine, tmp_path / "out")
    app = build_app(session)
    url = launch(app, session, port=_free_port())
    assert url.startswith("http://127.0.0.1:")
    outside = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            tabs = [browser.new_page(), browser.new_page()]
            for tab in tabs:
                tab.on(
                    "request",
                    lambda r: (
                        r.url.startswith((url.rstrip("/"), "data:", "blob:"))
                        or outside.append(r.url)
                    ),
                )
                tab.goto(url)
                # the config's first test case fills the form, its files included
                for field, path in (
                    ("reference-image", workspace.image),
                    ("driving-video", workspace.clips / "a_walk.mp4"),
                ):
                    cell = tab.locator(f"#{field}").get_by_role("cell", name=path.name)
                    expect(cell).to_be_visible()
            page = tabs[0]
            # no control is cut off at the default window size (1280 x 720): every text field
            # and dropdown shows its whole value
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            cut = page.evaluate(
                """() => Array.from(document.querySelectorAll("input, textarea"))
                    .filter(e => e.offsetParent !== null && e.type !== "file"
                                 && e.scrollWidth > e.clientWidth + 1)
                    .map(e => e.value)"""
            )
            assert cut == [] and (tmp_path / "page.png").stat().st_size > 0
            page.get_by_role("button", name="Feature cache").click()
            expect(page.locator("#cache-stats textarea")).to_have_value(re.compile("TOTAL"))

            page.click("#preview-button")
            expect(page.locator("#pose-preview video")).to_have_attribute(
                "src", re.compile(r"a_walk_pose_\d+\.mp4"), timeout=60_000
            )
            expect(page.locator("#message textarea")).to_have_value(
                re.compile("^pose preview: the reference's pose, then 5 driving frames\n1 person")
            )
            expect(page.locator("#pose-sheet img")).to_have_attribute("src", re.compile("."))

            for tab in tabs:  # both tabs at once: the second waits its turn
                tab.click("#generate-button")
            for tab in tabs:
                expect(tab.locator("#result-video video")).to_have_attribute(
                    "src", re.compile(r"a_walk_\d{14}(_1)?\.mp4"), timeout=60_000
                )
                expect(tab.locator("#summary textarea")).to_have_value(re.compile("1 succeeded"))
                # the clip's score beside it: the tiny random weights draw noise
                expect(tab.locator("#clip-score textarea")).to_have_value(
                    re.compile(r"^suspect\n- body error")
                )
            expect(page.locator("#cache-stats textarea")).to_have_value(
                re.compile(r"pose_frames\s+[1-9]")
            )

            page.get_by_role("button", name="Sweep: every combination of up to two keys").click()
            page.click("#sweep-button")  # seed 1,2 on the form's values
            expect(page.locator("#sweep-summary textarea")).to_have_value(
                re.compile(r"^grid: .*_grid\.mp4\n(.|\n)*2 succeeded"), timeout=60_000
            )
            expect(page.locator("#sweep-sheet img")).to_have_attribute("src", re.compile("."))
            expect(page.locator("#sweep-grid video")).to_have_attribute(
                "src", re.compile(r"_grid\.mp4")
            )

            page.locator("#driving-video button[aria-label='Clear']").first.click()
            _choose(page, expect, "driving-video", workspace.broken)
            page.click("#preview-button")
            expect(page.locator("#message textarea")).to_have_value(
                re.compile(r"^error: .*c_broken\.mp4 is not a video PyAV can decode"),
                timeout=30_000,
            )
            browser.close()
    finally:
        app.close()
    assert outside == []  # the page fetched nothing from anywhere but the app
    assert most[0] == 1  # the two tabs' runs took turns on the one engine
    written = [p.name for p in (tmp_path / "out").glob("a_walk_*.mp4")]
    assert len([n for n in written if "seed" not in n and "grid" not in n]) == 2
    assert len([n for n in written if "_seed" in n]) == 2  # the sweep's variants


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_port_out_of_range_is_a_usage_error(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ui", "--port", port])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"argument --port: {port!r}: port must be 1-65535" in err.splitlines()[-1]
