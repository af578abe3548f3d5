"""The web UI page's actions (``mimicache ui``): each takes the form's values as Gradio hands
them, calls the session (``ui_session.UiSession``) and shapes what it gives for the page's
components; a ``MimicacheError`` is the CLI's ``error: {message}`` line."""

from __future__ import annotations

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


def _handler(call: Callable, shape: Callable, failed: tuple) -> Callable[..., tuple]:
    """A page action over the form's values: ``call(inputs, settings, report)`` shaped by
    ``shape``; a ``MimicacheError`` gives ``failed`` plus the CLI's ``error: {message}``.
    Gradio reads the parameter list (and hands a live tracker to ``progress``), so it is
    spelled out once here."""
    gr = import_gradio()

    tracker = gr.Progress()  # Gradio hands a live tracker to the parameter with this default

    def handler(
        image,
        video,
        folder,
        steps,
        guidance,
        seed,
        scheduler,
        retarget,
        person,
        speed,
        progress=tracker,
    ):
        try:
            result = call(
                _inputs(image, video, folder),
                _settings(steps, guidance, seed, scheduler, retarget, person, speed),
                _progress_report(progress),
            )
        except MimicacheError as exc:
            return (*failed, f"error: {flag_words(str(exc))}")
        return shape(result)

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
    gr = import_gradio()
    tracker = gr.Progress()

    def handler(
        image,
        video,
        folder,
        steps,
        guidance,
        seed,
        scheduler,
        retarget,
        person,
        speed,
        key1,
        values1,
        key2,
        values2,
        progress=tracker,
    ):
        try:
            outcome = session.sweep(
                _inputs(image, video, folder),
                _settings(steps, guidance, seed, scheduler, retarget, person, speed),
                [(key1, values1 or ""), (key2, values2 or "")],
                _progress_report(progress),
            )
        except MimicacheError as exc:
            return None, None, f"error: {flag_words(str(exc))}"
        grid = next((g for g in outcome.grids if g.video is not None), None)
        lines = [outcome.summary, *(f"error: {flag_words(e)}" for e in outcome.errors)]
        if grid is None:
            lines.append("no grid: fewer than two variants finished")
            return None, None, "\n".join(lines)
        return grid.video, grid.image, "\n".join([f"grid: {grid.video}", *lines])

    return handler


def prune_action(session: UiSession) -> Callable[[str], str]:
    def prune(max_size: str) -> str:
        try:
            return session.prune_cache(max_size or "")
        except MimicacheError as exc:
            return f"error: {flag_words(str(exc))}"

    return prune
