"""The web UI's state and actions, without Gradio: one engine, built on first use and kept for
the app's life; one lock, so one preview or generation uses it at a time; pose previews
(``pose_preview``: driving frame | skeleton over the reference | skeleton, (1+F) rows of uint8
RGB written as an mp4, and a contact sheet); runs planned, claimed and written by the batch
package exactly as ``mimicache run`` does; the cache panel's text.

Errors are ``MimicacheError``s with the CLI's messages; the page shows ``error: {message}``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging
import math
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch import (
    JobResult,
    check_output_folder,
    format_summary,
    list_videos,
    make_timestamp,
    override_tag,
    plan_jobs,
    run_jobs,
)
from mimicache.cli.cache import run_cache_command
from mimicache.config import (
    DEFAULT_PERSON,
    RETARGET_MODES,
    InferenceConfig,
    TestCase,
    person_choice,
)
from mimicache.config.fields import SPEEDS
from mimicache.config.sampler import SCHEDULER_NAMES, SchedulerOptions
from mimicache.errors import ConfigError, InputError, MimicacheError
from mimicache.media import write_video
from mimicache.storage.sizes import parse_size

if TYPE_CHECKING:
    import PIL.Image

    from mimicache.engine import MimicMotion, ProgressEvent

logger = logging.getLogger(__name__)

# report(fraction done in [0, 1], what is happening)
Report = Callable[[float, str], None]
DEFAULT_SCHEDULER = SchedulerOptions().name  # `mimicache run`'s default
_MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class Settings:
    """The generation values the page sets; the sampler, speed and pose choices pick the
    engine (one per choice, all on the one set of loaded models)."""

    num_inference_steps: int
    guidance_scale: float
    seed: int
    scheduler: str = DEFAULT_SCHEDULER
    pose_retarget: str = "published"
    person: str = DEFAULT_PERSON
    speed: str = SPEEDS[0]

    def check(self) -> Settings:
        """``ConfigError`` naming the first bad value; ints arrive from the page as floats."""
        steps, seed = self.num_inference_steps, self.seed
        if not _whole(steps) or steps < 1:
            raise ConfigError(f"num_inference_steps must be a positive integer, got {steps}")
        guidance = self.guidance_scale
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise ConfigError(f"guidance_scale must be a finite number >= 0, got {guidance}")
        if not _whole(seed) or not 0 <= seed <= _MAX_SEED:
            raise ConfigError(f"seed must be an integer between 0 and 2**64-1, got {seed}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ConfigError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}"
            )
        if self.pose_retarget not in RETARGET_MODES:
            raise ConfigError(
                f"unknown pose retarget mode {self.pose_retarget!r}; choose one of: "
                + ", ".join(RETARGET_MODES)
            )
        try:
            person = person_choice(self.person)
        except ValueError as exc:  # the words of `--person`'s check
            raise ConfigError(f"person {exc}") from None
        if self.speed not in SPEEDS:
            raise ConfigError(f"unknown speed {self.speed!r}; choose one of {', '.join(SPEEDS)}")
        return Settings(
            int(steps),
            float(guidance),
            int(seed),
            self.scheduler,
            self.pose_retarget,
            person,
            self.speed,
        )


def _whole(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer()


@dataclass(frozen=True)
class Inputs:
    """What the page chose: uploaded files (paths on this machine) and/or a batch folder."""

    image: Path | None = None
    video: Path | None = None
    batch_folder: Path | None = None


@dataclass
class Preview:
    video: Path  # mp4: driving frame | skeleton over the reference | skeleton, reference first
    sheet: PIL.Image.Image  # every n-th row of the same panels, numbered
    frames: int  # 1 + driving frames
    people: str  # who was seen in the driving video and who drives the pose


@dataclass
class RunOutcome:
    results: list[JobResult]
    summary: str  # the CLI's summary table
    errors: list[str] = field(default_factory=list)  # "{job}: {message}" per failed job
    grids: list[Any] = field(default_factory=list)  # a sweep's ``GridFiles``, one per pair

    @property
    def outputs(self) -> list[Path]:
        return [r.output for r in self.results if r.ok and r.output is not None]


class UiSession:
    """The app's one engine, its lock and its folders; every page action is a method here."""

    def __init__(
        self,
        config: InferenceConfig,
        engine_factory: Callable[[], MimicMotion],
        *,
        output_dir: str | Path,
        feature_cache_dir: str | Path,
        preview_dir: str | Path | None = None,
    ):
        self.config = config
        self.template: TestCase = config.test_case[0]
        self.output_dir = Path(output_dir)
        self.feature_cache_dir = Path(feature_cache_dir)
        self.preview_dir = Path(preview_dir or tempfile.mkdtemp(prefix="mimicache-ui-"))
        self._engine_factory = engine_factory
        self._engine: MimicMotion | None = None
        self._previews = itertools.count(1)
        self._variants: dict[tuple, MimicMotion] = {}  # (scheduler, speed, retarget, person)
        self._scores: dict[str, dict] = {}  # an output written here -> its clip score
        self.lock = threading.Lock()

    def input_folders(self) -> list[str]:
        """The folders of the config's first test case's files (the form starts with them)."""
        case = self.template
        paths = (Path(case.ref_image_path), Path(case.ref_video_path))
        return sorted({str(p.resolve().parent) for p in paths if p.is_file()})

    def default_settings(self) -> Settings:
        case = self.template
        retarget = self.config.pose_retarget or RETARGET_MODES[0]
        person = self.config.pose_person or DEFAULT_PERSON
        return Settings(
            case.num_inference_steps,
            case.guidance_scale,
            case.seed,
            pose_retarget=retarget,
            person=person,
        )

    # -- the engine ------------------------------------------------------------------------------
    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    @contextmanager
    def engine(self, settings: Settings) -> Iterator[MimicMotion]:
        """The engine for ``settings`` (the models loaded on first use; one engine per sampler,
        speed and pose choice, all on those models), held under the lock."""
        from mimicache.engine.build import engine_variant

        with self.lock:
            if self._engine is None:
                logger.info("loading the models (once for the app's life)")
                self._engine = self._engine_factory()
            base = self._engine
            key = (settings.scheduler, settings.speed, settings.pose_retarget, settings.person)
            loaded = (DEFAULT_SCHEDULER, base.speed.speed, base.pose_retarget, base.person)
            if key == loaded:
                yield base
                return
            if key not in self._variants:
                self._variants[key] = engine_variant(
                    base,
                    scheduler=SchedulerOptions(name=settings.scheduler),
                    speed=settings.speed,
                    pose_retarget=settings.pose_retarget,
                    person=settings.person,
                )
            yield self._variants[key]

    # -- the case of a page's inputs -------------------------------------------------------------
    def case_for(self, inputs: Inputs, settings: Settings, video: Path | None = None) -> TestCase:
        """The config's first test case with the page's image, video and values."""
        if inputs.image is None:
            raise InputError("choose a reference image")
        return self.template.replace(
            ref_image_path=inputs.image,
            ref_video_path=video or inputs.video,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            seed=settings.seed,
        )

    def _preview_video(self, inputs: Inputs) -> Path:
        if inputs.video is not None:
            return inputs.video
        if inputs.batch_folder is not None:
            return list_videos(inputs.batch_folder)[0]
        raise InputError("choose a driving video or a batch folder")

    # -- actions ---------------------------------------------------------------------------------
    def preview(self, inputs: Inputs, settings: Settings, report: Report | None = None) -> Preview:
        """The pose frames the pipeline would get beside what they came from (through the cache,
        so a later run hits it); with only a batch folder, those of its first video."""
        from mimicache.engine.preview import contact_sheet, pose_preview

        settings = settings.check()
        video = self._preview_video(inputs)
        case = self.case_for(inputs, settings, video)
        _say(report, 0.0, "waiting for the models" if self.engine_loaded else "loading the models")
        with self.engine(settings) as engine:
            _say(report, 0.2, f"pose of {Path(video).name}")
            preview = pose_preview(engine, case, progress=False)
        name = f"{Path(video).stem}_pose_{next(self._previews)}.mp4"
        written = write_video(self.preview_dir / name, preview.panels(), fps=case.fps)
        people = preview.people.summary() if preview.people is not None else ""
        _say(report, 1.0, "pose preview ready")
        return Preview(written, contact_sheet(preview), preview.num_frames, people)

    def generate(
        self, inputs: Inputs, settings: Settings, report: Report | None = None
    ) -> RunOutcome:
        """One reference image with one video, or with every video of a batch folder: planned,
        run and written (mp4 + JSON sidecar, claimed names) as ``mimicache run`` does."""
        return self._run(inputs, settings, report)

    def sweep(
        self,
        inputs: Inputs,
        settings: Settings,
        axes: Sequence[tuple[str | None, str]],
        report: Report | None = None,
    ) -> RunOutcome:
        """Up to two swept keys, each with its values (``("seed", "1,2,3")``), over the page's
        inputs and values: every variant run on the loaded models as ``run --sweep`` does, then
        each pair's grid (``RunOutcome.grids``)."""
        from mimicache.batch.planning.sweep import parse_sweep

        items = [f"{key}={values.strip()}" for key, values in axes if key and values.strip()]
        if not items or len(items) > 2:
            raise ConfigError("choose one or two keys to sweep, each with its values (e.g. 1,2,3)")
        return self._run(inputs, settings, report, sweep=parse_sweep(items))

    def _run(
        self, inputs: Inputs, settings: Settings, report: Report | None, sweep: Any = None
    ) -> RunOutcome:
        from mimicache.batch.executing.variants import EngineVariants
        from mimicache.batch.planning.sweep import SWEEP_LIMIT, sweep_jobs
        from mimicache.batch.reporting.grid import grids_of_results
        from mimicache.engine.spec import EngineSpec

        settings = settings.check()
        if inputs.video is None and inputs.batch_folder is None:
            raise InputError("choose a driving video or a batch folder")
        case = self.case_for(inputs, settings)
        config = self.config.replace(test_case=[case])
        output_dir = check_output_folder(self.output_dir)
        jobs = plan_jobs(
            config,
            batch_folder=inputs.batch_folder,
            output_dir=output_dir,
            timestamp=make_timestamp(),
            tag=override_tag(self._overrides(settings, sweep.keys if sweep is not None else ())),
        )
        if sweep is not None:
            jobs = sweep_jobs(jobs, sweep, limit=SWEEP_LIMIT)
        for folder in sorted({job.output_path.parent for job in jobs}):
            check_output_folder(folder)
        _say(report, 0.0, "waiting for the models" if self.engine_loaded else "loading the models")
        with self.engine(settings) as engine:
            watch = _JobWatch(engine, _RunProgress(len(jobs), settings.num_inference_steps, report))
            spec = EngineSpec(
                self.config,
                scheduler=SchedulerOptions(name=settings.scheduler),
                speed=settings.speed,
                pose_retarget=settings.pose_retarget,
                person=settings.person,
            )
            variants = EngineVariants(engine, spec)  # a sweep's engine choices on these models
            results = run_jobs(
                watch,
                jobs,
                config=config,
                progress=True,
                engine_for=lambda job: watch.on(variants.engine(job)),
            )
        _say(report, 1.0, "done")
        for result in results:
            if result.output is not None and result.quality is not None:
                self._scores[str(result.output)] = result.quality
        grids = grids_of_results(results) if sweep is not None else []
        return RunOutcome(results, format_summary(results), watch.errors, grids)

    def score_text(self, output: str | Path | None) -> str:
        """The clip score of an output this app wrote, in plain lines ("" when none)."""
        from mimicache.quality.score import describe

        found = self._scores.get(str(output)) if output else None
        return "" if found is None else describe(found)

    def _overrides(self, settings: Settings, swept: Collection[str] = ()) -> dict[str, Any]:
        """Values away from the config's (and the run command's scheduler): in the output names,
        as the CLI's overrides are; a key a sweep sets (``swept``) is named by each variant."""
        case = self.template
        changed = {
            "num_inference_steps": _changed(settings.num_inference_steps, case.num_inference_steps),
            "seed": _changed(settings.seed, case.seed),
            "guidance_scale": _changed(settings.guidance_scale, case.guidance_scale),
            "scheduler": _changed(settings.scheduler, DEFAULT_SCHEDULER),
        }
        return {k: v for k, v in changed.items() if k not in swept}

    # -- the cache panel: the `mimicache cache` commands' own text -------------------------------
    def cache_stats(self) -> str:
        return self._cache_command("stats")

    def prune_cache(self, max_size: str) -> str:
        """Least recently used entries go until the cache fits ``max_size`` (e.g. ``500MB``).
        Safe during a run: the cache is built for concurrent processes."""
        return self._cache_command("prune", max_size=parse_size(max_size.strip()))

    def _cache_command(self, action: str, **values: Any) -> str:
        args = argparse.Namespace(
            cache_command=action,
            feature_cache_dir=str(self.feature_cache_dir),
            older_than=None,
            dry_run=False,
            **values,
        )
        out, err = io.StringIO(), io.StringIO()
        run_cache_command(args, stdout=out, stderr=err)
        return (out.getvalue() + err.getvalue()).rstrip()


def _changed(value: Any, default: Any) -> Any:
    return None if value == default else value


def _say(report: Report | None, fraction: float, text: str) -> None:
    if report is not None:
        report(min(max(fraction, 0.0), 1.0), text)


class _RunProgress:
    """A run's engine progress as the page's reports: each job's start, each denoising pass
    shown as the step under way."""

    def __init__(self, jobs: int, steps: int, report: Report | None):
        self.jobs, self.steps, self.report = jobs, steps, report
        self.started = 0

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "preprocess":
            self.started += 1
        job = f"[{self.started}/{self.jobs}] {event.label}"
        done = self.started - 1
        if event.stage == "preprocess":
            _say(self.report, done / self.jobs, f"{job}: pose and reference features")
        elif event.stage == "denoise":
            total = max(event.total, 1)
            fraction = (done + 0.2 + 0.8 * event.done / total) / self.jobs
            step = min(self.steps, math.ceil(event.done * self.steps / total))
            _say(self.report, fraction, f"{job}: denoising step {step}/{self.steps}")


class _JobWatch:
    """The engine as ``run_jobs`` sees it: each job's progress goes to ``observer``, and each
    failed job's message (the text the CLI logs after "failed:") is kept."""

    def __init__(
        self,
        engine: MimicMotion,
        observer: Callable[[ProgressEvent], None],
        errors: list[str] | None = None,
    ):
        self.engine = engine
        self.observer = observer
        self.errors: list[str] = [] if errors is None else errors

    def on(self, engine: MimicMotion) -> _JobWatch:
        """The same watch over another engine (a sweep variant's): its failures kept here."""
        return self if engine is self.engine else _JobWatch(engine, self.observer, self.errors)

    @property
    def model_files(self) -> dict[str, Any]:
        return self.engine.model_files

    @property
    def pose_retarget(self) -> str | None:
        return self.engine.pose_retarget

    def generate(self, case: TestCase, *, progress: bool, label: str | None) -> Any:
        try:
            return self.engine.generate(
                case, progress=progress, label=label, observer=self.observer
            )
        except MimicacheError as exc:
            self.errors.append(f"{label}: {exc}")
            raise
        except Exception as exc:
            self.errors.append(f"{label}: {type(exc).__name__}: {exc}")
            raise
