"""``bench --plot``: the cold/warm comparison per stage as a PNG (matplotlib, seconds summed
over the jobs, one pair of bars per stage with the speed-up written beside it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mimicache.batch.bench.cold_warm import ROWS, Speedup, speedups
from mimicache.batch.job import JobResult
from mimicache.engine.stage_names import UNCACHED_STEPS
from mimicache.errors import MimicacheError, setting
from mimicache.storage.files import atomic_write

COLD_COLOR = "#2171b5"
WARM_COLOR = "#fd8d3c"


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
    """Draw the comparison into ``path`` (PNG, written atomically) and return it; the title
    gives ``figures`` (the headline's cached-stages and whole-job speed-ups; default: from the
    runs' own timings).

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
    rows = rows[::-1]  # matplotlib draws the first bar at the bottom
    names = [name + (" (uncached)" if name in UNCACHED_STEPS else "") for name, _, _ in rows]
    y = list(range(len(rows)))
    height = 0.38
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(rows) + 1.6), dpi=120)
    try:
        ax.barh(
            [i + height / 2 for i in y],
            [c for _, c, _ in rows],
            height,
            label="cold",
            color=COLD_COLOR,
        )
        ax.barh(
            [i - height / 2 for i in y],
            [w for _, _, w in rows],
            height,
            label="warm",
            color=WARM_COLOR,
        )
        longest = max(max(c, w) for _, c, w in rows) or 1.0
        for i, (name, c, w) in enumerate(rows):
            text = f"{c:.2f} s → {w:.2f} s"
            if name not in UNCACHED_STEPS and w > 0 and c > 0:
                text += f"  ({c / w:.1f}x)"
            ax.text(max(c, w) + 0.01 * longest, i, text, va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.set_xlabel("seconds (summed over the jobs)")
        ax.set_xlim(0, longest * 1.45)
        ax.set_title(_title(cold, warm, figures), fontsize=10, loc="left")
        # above the bars, beside the title: inside the axes it covers the bottom row's label
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def _title(
    cold: Sequence[JobResult],
    warm: Sequence[JobResult],
    figures: tuple[Speedup | None, Speedup | None] | None,
) -> str:
    """The benchmark's headline: the cached stages' and the whole job's speed-ups, apart."""
    cached, whole = figures or speedups(cold, warm)
    lines = [f"Feature cache: cold (forced refresh) vs warm, {len(cold)} job(s)"]
    figures = [
        f"{label} {part.factor:.{2 if part.factor < 10 else 1}f}x"
        for label, part in (("cached stages", cached), ("whole job", whole))
        if part is not None and part.factor is not None
    ]
    if figures:
        lines.append(", ".join(figures))
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    return path
