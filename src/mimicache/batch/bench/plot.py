"""``bench --plot``: the cold/warm comparison per stage as a PNG (matplotlib, seconds summed
over the jobs on a log scale, one pair of bars per stage with the speed-up written beside it;
the title's figures are the bars' own)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mimicache.batch.bench.cold_warm import ROWS, Speedup
from mimicache.batch.job import JobResult
from mimicache.engine.stage_names import STAGES, UNCACHED_STEPS
from mimicache.errors import MimicacheError, setting
from mimicache.storage.files import atomic_write

COLD_COLOR = "#0072B2"  # Okabe-Ito blue and orange: apart for every kind of colour vision
WARM_COLOR = "#E69F00"


def stage_seconds(
    cold: Sequence[JobResult], warm: Sequence[JobResult]
) -> list[tuple[str, float, float]]:
    """(stage, cold s, warm s) summed over the successful jobs, in the benchmark table's order;
    stages neither run timed are left out."""
    out = []
    for row in ROWS:
        c = [r.timings[row] for r in cold if r.ok and row in r.timings]
        w = [r.timings[row] for r in warm if r.ok and row in r.timings]
        if c or w:
            out.append((row, float(sum(c)), float(sum(w))))
    return out


def plot_cold_warm(
    cold: Sequence[JobResult],
    warm: Sequence[JobResult],
    path: str | Path,
    *,
    figures: tuple[Speedup | None, Speedup | None] | None = None,
) -> Path:
    """Draw the comparison into ``path`` (PNG, written atomically) on a log scale and return
    it; the title gives the figures its bars show (the cached stages' sums and the totals);
    ``figures`` (the headline's speed-ups, noise taken out) are in the table beside it.

    ``MimicacheError`` when matplotlib is missing (it is an optional dependency) or no job
    succeeded.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise MimicacheError(
            f"{setting('plot', path)}: drawing needs matplotlib: pip install matplotlib "
            "(or mimicache[plot])"
        ) from None
    rows = stage_seconds(cold, warm)
    if not rows:
        raise MimicacheError(
            f"{setting('plot', path)}: no job succeeded, so there is nothing to plot"
        )
    title = _title(rows, len(cold))
    rows = rows[::-1]  # matplotlib draws the first bar at the bottom
    names = [name + (" (uncached)" if name in UNCACHED_STEPS else "") for name, _, _ in rows]
    y = list(range(len(rows)))
    height = 0.38
    positive = [v for _, c, w in rows for v in (c, w) if v > 0]
    low, high = min(positive), max(positive)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.8), dpi=120)
    try:
        # a log scale: a cached stage's milliseconds and the denoising's minutes both show
        ax.set_xscale("log")
        runs = ((height / 2, 1, "cold", COLD_COLOR), (-height / 2, 2, "warm", WARM_COLOR))
        for offset, index, label, color in runs:
            shown = [(i, row[index]) for i, row in enumerate(rows) if row[index] > 0]
            ax.barh(
                [i + offset for i, _ in shown],
                [v for _, v in shown],
                height,
                left=low / 4,
                label=label,
                color=color,
            )
        for i, (name, c, w) in enumerate(rows):
            text = f"{_s(c)} → {_s(w)}"
            if name not in UNCACHED_STEPS and w > 0 and c > 0:
                text += f"  ({c / w:.1f}x)"
            ax.text(max(c, w, low) * 1.15, i, text, va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.set_xlabel("seconds, summed over the jobs (log scale)")
        ax.set_xlim(low / 4, high * 15)
        ax.set_title(title, fontsize=10, loc="left")
        # above the bars, beside the title: inside the axes it covers the bottom row's label
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
        ax.grid(axis="x", alpha=0.3, which="both")
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def _s(seconds: float) -> str:
    """Seconds as the bars' labels show them: ms below a second; a stage not run (a warm job
    needs no keypoints when its drawn frames hit) says so."""
    if seconds <= 0:
        return "not run"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _title(rows: Sequence[tuple[str, float, float]], jobs: int) -> str:
    """The figures the bars themselves show: the cached stages' sums and the total row's."""
    cached = [(c, w) for name, c, w in rows if name in STAGES]
    total = next(((c, w) for name, c, w in rows if name == "total"), None)
    lines = [f"Feature cache: cold (forced refresh) vs warm, {jobs} job(s)"]
    parts = []
    if cached:
        c, w = sum(c for c, _ in cached), sum(w for _, w in cached)
        parts.append(f"cached stages {_s(c)} → {_s(w)}" + (f" ({c / w:.0f}x)" if w > 0 else ""))
    if total is not None:
        c, w = total
        parts.append(f"total {_s(c)} → {_s(w)}" + (f" ({c / w:.2f}x)" if w > 0 else ""))
    if parts:
        lines.append("; ".join(parts))
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    return path
