"""One look for every figure: fixed colours per backend, readable fonts, stable files.

Measured data: solid lines and filled markers. Published ("reported") data: dashed lines and
hollow markers in the same backend colour, so a reader compares like with like.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display, and the same rasteriser everywhere

import matplotlib.pyplot as plt  # noqa: E402

from repro.results.store import measured_backend  # noqa: E402

# Fixed per backend across all figures (Okabe-Ito-like, colour-blind safe first).
BACKEND_COLORS = {
    "tilelang": "#D55E00",
    "tilelang_upstream": "#F4A582",  # TileLang's own published example: the subject's hue, lighter
    "cublas": "#0072B2",
    "hipblaslt": "#56B4E9",
    "fa2": "#009E73",
    "sdpa_flash": "#999933",
    "fa3": "#332288",
    "cudnn": "#CC79A7",
    "triton": "#882255",
    "flash_mla": "#4477AA",
    "flashinfer": "#117733",
    "torch": "#555555",
    "aiter": "#661100",
    "torch_npu": "#AA4499",
    "deepgemm": "#88CCEE",
}
# Extra hues for backends not listed above, picked by a stable hash of the name.
_SPARE = ["#E69F00", "#44AA99", "#6699CC", "#DDCC77", "#117799", "#994455", "#777711", "#225555"]
MARKERS = {"tilelang": "o", "tilelang_upstream": "h", "triton": "s", "fa2": "^", "sdpa_flash": "v", "fa3": "D", "cudnn": "P",
           "cublas": "D", "flash_mla": "D", "flashinfer": "^", "torch": "X"}
PNG_DPI = 150
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
PNG_METADATA = {"Software": None}


def color(backend: str) -> str:
    backend = measured_backend(backend)  # a published figure (fa3_paper) in its backend's colour
    if backend in BACKEND_COLORS:
        return BACKEND_COLORS[backend]
    return _SPARE[zlib.crc32(backend.encode()) % len(_SPARE)]


def marker(backend: str) -> str:
    return MARKERS.get(measured_backend(backend), "o")


TILELANG_FIRST = ("tilelang", "tilelang_upstream")  # ours, then TileLang's published example beside it


def order(backends) -> list[str]:
    """TileLang first (the subject, then TileLang's own example beside it), then the others
    alphabetically: the same legend order everywhere."""
    names = sorted(set(backends))
    rank = {b: i for i, b in enumerate(TILELANG_FIRST)}
    return sorted(names, key=lambda b: (rank.get(b, len(rank)), b))


def line_style(backend: str, reported: bool = False, label: str | None = None) -> dict:
    """Keyword arguments for `ax.plot`: measured solid/filled, reported dashed/hollow."""
    shade = color(backend)
    label = label or backend
    return dict(
        color=shade,
        marker=marker(backend),
        linestyle="--" if reported else "-",
        markerfacecolor="white" if reported else shade,
        markeredgecolor=shade,
        linewidth=1.4 if reported else 2.0,
        markersize=5.5,
        label=f"{label} (reported)" if reported else label,
    )


def apply() -> None:
    """Set the shared rcParams; call before drawing any figure."""
    plt.rcdefaults()
    plt.rcParams.update({
        "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "xtick.labelsize": 8.5,
        "ytick.labelsize": 8.5,
        "figure.titlesize": 11,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.hashsalt": "tilelang-repro",
        "pdf.fonttype": 42,
        "savefig.dpi": PNG_DPI,
        "path.simplify": False,
    })


def save(fig, stem: Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf` without timestamps or tool versions."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, format="png", metadata=PNG_METADATA, bbox_inches="tight")
    fig.savefig(pdf, format="pdf", metadata=PDF_METADATA, bbox_inches="tight")
    plt.close(fig)
    return [png, pdf]
