"""The web UI page's actions (``mimicache ui``): each takes the form's values as Gradio hands
them, calls the session (``ui_session.UiSession``) and shapes what it gives for the page's
components; a ``MimicacheError`` is the CLI's ``error: {message}`` line."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimicache.cli.console import flag_words
from mimicache.cli.extras import require
from mimicache.cli.ui_session import Inputs, Settings, UiSession
from mimicache.errors import MimicacheError


def import_gradio() -> Any:
    """Gradio, with its analytics off (set before the import, as Gradio reads it then)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    require("ui", "mimicache ui")
    import gradio

    return gradio


def _settings(
    steps: Any, guidance: Any, seed: Any, scheduler: str, retarget: str, person: str, speed: str
) -> Settings:
    return Settings(steps, guidance, seed, scheduler, retarget, person, speed)


def _inputs(image: str | None, video: str | None, folder: str | None) -> Inputs:
    folder = (folder or "").strip()
    return Inputs(
        image=Path(image) if image else None,
        video=Path(video) if video else None,
        batch_folder=Path(folder) if folder else None,
    )


def _progress_report(progress: Any) -> Callable[[float, str], None]:
    return lambda fraction, text: progress(fraction, desc=text)


# The form's values, in the order the page hands them to every action.
FORM = (
    "image",
    "video",
    "folder",
    "steps",
    "guidance",
    "seed",
    "scheduler",
    "retarget",
    "person",
    "speed",
)


def _handler(
    call: Callable, shape: Callable, failed: tuple, extra: tuple[str, ...] = ()
) -> Callable[..., tuple]:
    """A page action over the form's values (and the ``extra`` components after them):
    ``call(inputs, settings, report, *extra values)`` shaped by ``shape``; a
    ``MimicacheError`` gives ``failed`` plus the CLI's ``error: {message}``. Gradio reads the
    declared parameters (``__signature__``) and hands its live tracker as the last one,
    ``progress``."""
    gr = import_gradio()
    tracker = gr.Progress()  # Gradio hands a live tracker to the parameter with this default
    names = (*FORM, *extra)

    def handler(*values: Any) -> tuple:
        progress = values[len(names)] if len(values) > len(names) else tracker
        form = dict(zip(names, values))
        try:
            result = call(
                _inputs(form["image"], form["video"], form["folder"]),
                _settings(*(form[k] for k in FORM[3:])),
                _progress_report(progress),
                *(form.get(k) for k in extra),
            )
        except MimicacheError as exc:
            return (*failed, f"error: {flag_words(str(exc))}")
        return shape(result)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, kind) for n in names]
        + [inspect.Parameter("progress", kind, default=tracker)]
    )
    return handler


def preview_action(session: UiSession) -> Callable[..., tuple]:
    """(image, video, folder, steps, guidance, seed, scheduler, retarget, person, speed,
    progress) -> (contact sheet, preview mp4, message)."""

    def shape(result) -> tuple:
        message = f"pose preview: the reference's pose, then {result.frames - 1} driving frames"
        if result.people:
            message += f"\n{result.people}"
        return result.sheet, str(result.video), message

    return _handler(session.preview, shape, (None, None))


def generate_action(session: UiSession) -> Callable[..., tuple]:
    """(image, video, folder, settings..., progress) -> (result mp4, outputs dropdown, summary,
    message)."""
    gr = import_gradio()

    def shape(outcome) -> tuple:
        outputs = [str(path) for path in outcome.outputs]
        choices = [(Path(path).name, path) for path in outputs]
        first = outputs[0] if outputs else None
        message = f"{len(outputs)} of {len(outcome.results)} written to {session.output_dir}"
        if outcome.errors:
            message += "\n" + "\n".join(f"error: {flag_words(text)}" for text in outcome.errors)
        choice = gr.update(choices=choices, value=first)
        return first, session.score_text(first), choice, outcome.summary, message

    empty = (None, "", gr.update(choices=[], value=None), "")
    return _handler(session.generate, shape, empty)


SWEEP_KEYS = (
    "seed",
    "guidance_scale",
    "num_inference_steps",
    "noise_aug_strength",
    "scheduler",
    "speed",
    "pose_retarget",
    "person",
    "decode_chunk_size",
)


def sweep_action(session: UiSession) -> Callable[..., tuple]:
    """(the form's values, key 1, values 1, key 2, values 2, progress) -> (grid mp4, grid
    sheet, summary with the scores)."""

    def call(inputs, settings, report, key1, values1, key2, values2):
        axes = [(key1, values1 or ""), (key2, values2 or "")]
        return session.sweep(inputs, settings, axes, report)

    def shape(outcome) -> tuple:
        # the page plays the first grid; every grid (one per video of a batch folder) is named
        drawn = [g for g in outcome.grids if g.video is not None]
        lines = [f"grid: {g.video}" for g in drawn]
        lines += [f"no grid of {g.group.base}: {g.error}" for g in outcome.grids if g.error]
        if not outcome.grids:
            lines.append("no grid: fewer than two variants finished")
        lines += [outcome.summary, *(f"error: {flag_words(e)}" for e in outcome.errors)]
        if not drawn:
            return None, None, "\n".join(lines)
        return drawn[0].video, drawn[0].image, "\n".join(lines)

    return _handler(call, shape, (None, None), ("key1", "values1", "key2", "values2"))


def prune_action(session: UiSession) -> Callable[[str], str]:
    def prune(max_size: str) -> str:
        try:
            return session.prune_cache(max_size or "")
        except MimicacheError as exc:
            return f"error: {flag_words(str(exc))}"

    return prune
