"""``mimicache ui``: a local web app (Gradio) over one ``UiSession``: choose a reference image
and a driving video (or a batch folder), preview the aligned pose frames, set the generation
values, run with live progress, play the results, look at and prune the feature cache.

The page binds 127.0.0.1 only, makes no share link and sends no analytics; the models load on
first use and stay loaded; previews and runs of every browser tab queue for the one engine.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch import check_output_folder, make_timestamp, reserve_log
from mimicache.cli.console import setup_logging
from mimicache.cli.engine_flags import add_engine_flags, engine_spec
from mimicache.cli.ui_actions import (
    SWEEP_KEYS,
    generate_action,
    import_gradio,
    preview_action,
    prune_action,
    sweep_action,
)
from mimicache.cli.ui_session import UiSession
from mimicache.config import PERSON_MODES, RETARGET_MODES, load_config
from mimicache.config.fields import SPEEDS
from mimicache.config.sampler import SCHEDULER_NAMES
from mimicache.errors import MimicacheError

if TYPE_CHECKING:
    import gradio

    from mimicache.cache.store import FeatureStore
    from mimicache.engine import MimicMotion
    from mimicache.engine.spec import EngineSpec

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
ENGINE_QUEUE = "engine"  # previews and runs share one queue: one at a time, tabs wait in turn
# the CLI's text tables line up only in a fixed-width font
TABLE_CSS = "#summary textarea, #cache-stats textarea { font-family: ui-monospace, monospace; }"


HELP = "a local web app: preview poses, generate, play results, tidy the cache"
DESCRIPTION = """\
Serve a web page on http://127.0.0.1:PORT to choose a reference image and a driving video (or a
batch folder), preview the aligned pose frames, set steps, guidance, seed and scheduler, run
with live progress, play the results and look at the feature cache. Needs the ui extra: pip
install 'mimicache[ui]'.
"""


def add_ui_command(commands: Any) -> argparse.ArgumentParser:
    ui = commands.add_parser("ui", help=HELP, description=DESCRIPTION)
    ui.add_argument(
        "--inference_config",
        default="configs/test.yaml",
        help="YAML config; its first test case gives the defaults (default: %(default)s)",
    )
    ui.add_argument(
        "--port", type=port_arg, default=DEFAULT_PORT, help="1-65535 (default: %(default)s)"
    )
    add_engine_flags(ui, ("device",))
    ui.add_argument(
        "--output_dir", default="outputs/", help="where videos go (default: %(default)s)"
    )
    add_engine_flags(ui, ("cache_dir", "cache_enabled"))
    ui.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ui.set_defaults(func=ui_command)
    return ui


def port_arg(text: str) -> int:
    """A TCP port; checked while parsing so a typo is a usage error, not a server traceback."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
    return port


def ui_command(args: argparse.Namespace) -> int:
    """Check the folders, the config, the model files and the device (as ``run`` does), then
    serve until interrupted. The models load on the first preview or run."""
    import_gradio()  # a missing extra fails before anything else
    output_dir = check_output_folder(args.output_dir)
    log_file = reserve_log(output_dir, make_timestamp())
    setup_logging(args.verbose, log_file, bars=sys.stderr.isatty())
    logger.info("log file: %s", log_file)
    config = load_config(args.inference_config)
    from mimicache.engine.build import resolve
    from mimicache.pipeline.weights import check_model_paths

    check_model_paths(config.base_model_path, config.ckpt_path)  # as run would, before serving

    spec, cache = resolve(engine_spec(args, config))
    session = UiSession(
        config,
        engine_factory(spec, cache),
        output_dir=output_dir,
        feature_cache_dir=args.feature_cache_dir,
    )
    app = build_app(session)
    launch(app, session, port=args.port)
    print(f"mimicache ui: http://{HOST}:{args.port}  (Ctrl+C stops it)", file=sys.stderr)
    try:
        app.block_thread()
    finally:
        app.close()
        shutil.rmtree(session.preview_dir, ignore_errors=True)
    return 0


def engine_factory(spec: EngineSpec, cache: FeatureStore) -> Callable[[], MimicMotion]:
    """Builds the engine as ``mimicache run`` does (run's default sampler and retargeting)."""

    def load() -> MimicMotion:
        from mimicache.engine.build import build_engine

        engine = build_engine(spec, cache=cache)
        logger.info(
            "models loaded: device %s, %s; feature cache %s",
            engine.device,
            str(engine.dtype).removeprefix("torch."),
            cache.root if cache.enabled else "off",
        )
        return engine

    return load


def launch(app: gradio.Blocks, session: UiSession, *, port: int) -> str:
    """Serve ``app`` on 127.0.0.1:``port`` in the background; its URL. The outputs and previews
    are the only folders (besides Gradio's own) the page may serve files from."""
    gr = import_gradio()
    theme = gr.themes.Default(  # system fonts: the page fetches nothing from elsewhere
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    try:
        _, url, _ = app.launch(
            server_name=HOST,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            show_error=True,
            quiet=True,
            allowed_paths=[
                str(session.output_dir.resolve()),
                str(session.preview_dir.resolve()),
                *session.input_folders(),  # the config's own inputs fill the form
            ],
            footer_links=[],
            ssr_mode=False,
            mcp_server=False,
            enable_monitoring=False,
            theme=theme,
            css=TABLE_CSS,
        )
    except OSError:
        raise MimicacheError(
            f"cannot serve on {HOST}:{port}: the port is taken or not allowed; choose another "
            "with --port"
        ) from None
    return url


# --------------------------------------------------------------------------- the page


def _existing(path: Any) -> str | None:
    """A config's input file for the form, when it is there."""
    return str(path) if path and Path(path).is_file() else None


def build_app(session: UiSession) -> gradio.Blocks:
    """The page; every action is a ``session`` method, errors shown as ``error: {message}``."""
    gr = import_gradio()
    defaults = session.default_settings()
    with gr.Blocks(title="mimicache", analytics_enabled=False) as app:
        gr.Markdown(
            f"## mimicache\nconfig `{session.config.source_path or 'built in'}` · outputs "
            f"`{session.output_dir}` · feature cache `{session.feature_cache_dir}` · the models "
            "load on the first preview or run and stay loaded"
        )
        with gr.Row():
            with gr.Column():
                # the config's first test case fills the form, its files included
                image = gr.File(
                    _existing(session.template.ref_image_path),
                    label="Reference image",
                    elem_id="reference-image",
                )
                video = gr.File(
                    _existing(session.template.ref_video_path),
                    label="Driving video",
                    elem_id="driving-video",
                )
                folder = gr.Textbox(
                    label="…or a batch folder on this machine (every video in it)",
                    elem_id="batch-folder",
                )
                with gr.Accordion("Generation", open=True):
                    with gr.Row():
                        steps = gr.Number(defaults.num_inference_steps, label="Steps", precision=0)
                        guidance = gr.Number(defaults.guidance_scale, label="Guidance scale")
                        seed = gr.Number(defaults.seed, label="Seed", precision=0)
                    with gr.Row():
                        scheduler = gr.Dropdown(
                            list(SCHEDULER_NAMES),
                            value=defaults.scheduler,
                            label="Scheduler",
                            elem_id="scheduler",
                            scale=2,
                            min_width=240,  # the longest name shows whole
                        )
                        speed = gr.Dropdown(
                            list(SPEEDS),
                            value=defaults.speed,
                            label="Speed",
                            info="exact: published; fast: batched",
                            min_width=140,
                        )
                        retarget = gr.Dropdown(
                            list(RETARGET_MODES),
                            value=defaults.pose_retarget,
                            label="Pose",
                            min_width=140,
                        )
                        person = gr.Dropdown(
                            [*PERSON_MODES, "0", "1", "2"],
                            value=defaults.person,
                            allow_custom_value=True,
                            label="Person (auto, largest, center or a number)",
                        )
                with gr.Row():
                    preview_button = gr.Button("Preview pose", elem_id="preview-button")
                    generate_button = gr.Button(
                        "Generate", variant="primary", elem_id="generate-button"
                    )
                message = gr.Textbox(label="Message", elem_id="message", interactive=False)
            with gr.Column():
                pose = gr.Video(
                    label="Pose preview: driving frame | skeleton over the reference | skeleton",
                    elem_id="pose-preview",
                )
                sheet = gr.Image(
                    label="Contact sheet", interactive=False, elem_id="pose-sheet", height=320
                )
                result = gr.Video(label="Result", elem_id="result-video", autoplay=True, height=360)
                score = gr.Textbox(
                    label="Clip score (pose fidelity per part, identity, flicker)",
                    elem_id="clip-score",
                    interactive=False,
                    lines=2,
                    max_lines=12,
                )
                outputs = gr.Dropdown([], label="Outputs of the last run", elem_id="outputs")
                summary = gr.Textbox(
                    label="Summary", elem_id="summary", interactive=False, lines=3, max_lines=40
                )
        sweep = _sweep_panel(gr)
        stats = _cache_panel(gr, session)

        values = [image, video, folder, steps, guidance, seed, scheduler, retarget, person, speed]
        preview_button.click(
            preview_action(session),
            values,
            [sheet, pose, message],
            concurrency_limit=1,
            concurrency_id=ENGINE_QUEUE,
        )
        generate_button.click(
            generate_action(session),
            values,
            [result, score, outputs, summary, message],
            concurrency_limit=1,
            concurrency_id=ENGINE_QUEUE,
        ).then(session.cache_stats, None, stats)
        sweep.button.click(
            sweep_action(session),
            [*values, *sweep.axes],
            sweep.shown,
            concurrency_limit=1,
            concurrency_id=ENGINE_QUEUE,
        ).then(session.cache_stats, None, stats)
        outputs.change(lambda path: (path, session.score_text(path)), outputs, [result, score])
        app.load(session.cache_stats, None, stats)
    return app


@dataclass
class _SweepPanel:
    button: Any
    axes: list[Any]  # key 1, values 1, key 2, values 2
    shown: list[Any]  # the grid video, its sheet, the variants' summary


def _sweep_panel(gr: Any) -> _SweepPanel:
    """Up to two keys and their values, the button, and where the grid and scores show."""
    with gr.Accordion("Sweep: every combination of up to two keys", open=False):
        with gr.Row():
            key1 = gr.Dropdown(list(SWEEP_KEYS), value="seed", label="Key", elem_id="sweep-key1")
            values1 = gr.Textbox(
                label="Values (1,2,3 or 1:8)", value="1,2", elem_id="sweep-values1"
            )
            key2 = gr.Dropdown(
                ["", *SWEEP_KEYS], value="", label="Second key", elem_id="sweep-key2"
            )
            values2 = gr.Textbox(label="Values", elem_id="sweep-values2")
        button = gr.Button("Run sweep", elem_id="sweep-button")
        with gr.Row():
            grid = gr.Video(label="Grid", elem_id="sweep-grid", height=360)
            sheet = gr.Image(
                label="Grid sheet", interactive=False, elem_id="sweep-sheet", height=360
            )
        summary = gr.Textbox(
            label="Variants and scores", elem_id="sweep-summary", lines=3, max_lines=40
        )
    return _SweepPanel(button, [key1, values1, key2, values2], [grid, sheet, summary])


def _cache_panel(gr: Any, session: UiSession) -> Any:
    """The cache's entries by stage, refreshed and pruned here; its text box."""
    with gr.Accordion("Feature cache", open=False):
        stats = gr.Textbox(label="Entries by stage", elem_id="cache-stats", lines=8)
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="cache-refresh")
            max_size = gr.Textbox(label="Prune to (e.g. 500MB)", elem_id="prune-size")
            prune = gr.Button("Prune", elem_id="cache-prune")
        pruned = gr.Textbox(label="Prune", elem_id="cache-pruned", interactive=False)
    refresh.click(session.cache_stats, None, stats)
    prune.click(prune_action(session), max_size, pruned).then(session.cache_stats, None, stats)
    return stats
