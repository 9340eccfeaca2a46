"""Rate–quality plots (matplotlib, Agg backend: works without a display), written atomically."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from prepcodec.atomic import write_bytes
from prepcodec.errors import InputError

Curve = tuple[Sequence[float], Sequence[float]]


def rd_plot(
    curves: Mapping[str, Curve],
    xlabel: str,
    ylabel: str,
    path: str | Path,
    title: str = "",
    logx: bool = False,
) -> Path:
    """One marker+line curve per name (points sorted by rate) -> PNG at `path` (temp file, then os.replace)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not curves:
        raise InputError("rd_plot needs at least one curve")
    p = Path(path)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    try:
        for name, (rates, quality) in curves.items():
            if len(rates) != len(quality):
                raise InputError(f"curve {name!r}: {len(rates)} rates but {len(quality)} quality values")
            pts = sorted(zip(rates, quality, strict=True))
            ax.plot([r for r, _ in pts], [q for _, q in pts], marker="o", markersize=4, linewidth=1.5, label=name)
        if logx:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")  # ticks at 1, 2, 5 x 10^k, written plainly (0.2, not 2x10^-1)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        write_bytes(p, buf.getvalue())
    finally:
        plt.close(fig)
    return p
