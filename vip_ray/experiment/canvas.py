"""Figures drawn straight on matplotlib's Agg canvas, laid out by fixed margins and written as PNG:
the shared drawing kit of the run plots (``plots.py``) and the latency-breakdown bars
(``energy_plots.py``). matplotlib is imported on the first figure, never before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def skip_artist_set_docstrings() -> None:
    """matplotlib writes the docstring of every Artist subclass's ``set()`` (the list of its
    properties, found by introspecting ~100 classes) while its modules import: ≈ 0.2–0.3 s of a
    1.6 s ``vip-sim run``. Nothing here reads those docstrings, so before matplotlib's artist
    classes are defined the generator returns an empty list; drawing is untouched."""
    import sys

    if "matplotlib.figure" in sys.modules:   # too late (and already paid): leave it
        return
    import matplotlib.artist

    matplotlib.artist.kwdoc = lambda artist: ""


#: Unhinted glyphs: matplotlib 3.11 lays out every string with libraqm and loads each glyph to
#: measure it, lay it out and render it, so text is most of the drawing (≈ 100 µs a character);
#: FreeType's auto-hinter is about a third of that. At these plots' sizes (6–10 pt at 120 dpi)
#: unhinted text is as legible, a little softer.
DRAWING_RC = {"text.hinting": "no_hinting"}


def drawing():
    """The settings the run plots are measured and drawn under (a context: nothing global changes)."""
    import matplotlib

    return matplotlib.rc_context(DRAWING_RC)


def new_figure(nrows: int = 1, ncols: int = 1, **kw):
    """A figure and its axes drawn straight on the Agg canvas: no ``pyplot`` (whose import and
    figure manager cost more than drawing these plots) and nothing to close afterwards."""
    skip_artist_set_docstrings()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols)
    return fig, axes


def margins(fig, *, left: float, bottom: float, right: float, top: float) -> None:
    """Axes placed by margins in inches around them (tick labels, axis labels, title), instead of
    ``tight_layout``: that lays every tick label out once more before the drawing does — about
    a third of drawing these plots. The margins are fixed by the plots' own texts (font sizes
    and label lengths known where the figure is made; names measured by :func:`text_width`).
    Titles are set with ``y=1.0`` for the same reason: no top tick labels to dodge, so no search
    for them."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)


def ticks_within(axis, lo: float, hi: float, *, nbins: int = 5, integer: bool = False) -> None:
    """Ticks on ``axis`` where matplotlib's own locator would put them (round steps of 1, 2, 2.5
    or 5), but only those inside ``[lo, hi]``: matplotlib builds a tick (two marks, a grid line,
    two labels) for every location its locator returns, those beyond the view included, and
    building ticks is a fifth of drawing these plots."""
    from matplotlib.ticker import MaxNLocator

    eps = 1e-9 * (hi - lo)
    locs = MaxNLocator(nbins=nbins, integer=integer, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    axis.set_ticks([t for t in locs if lo - eps <= t <= hi + eps])


def text_width(texts, size: float, dpi: float) -> float:
    """Width in inches of the widest of ``texts`` (one line each) at font ``size`` (points), as the
    Agg renderer draws it at ``dpi``: measured with the font matplotlib picks for the default
    properties, before any figure exists, so a figure is made at its final size once (resizing
    it would make a new renderer and drop the text metrics already cached)."""
    from matplotlib.backends.backend_agg import get_hinting_flag
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties(size=size)))
    widest = 0.0
    for t in texts:
        font.clear()
        font.set_size(size, dpi)
        font.set_text(t, 0.0, flags=get_hinting_flag())
        widest = max(widest, font.get_width_height()[0] / 64.0)
    return widest / dpi


def legend_width(labels, size: float, dpi: float) -> float:
    """Width in inches of a one-column legend of ``labels`` at font ``size`` with matplotlib's
    default paddings (border 0.4 font sizes each side, handle 2.0, handle to text 0.8) and frame."""
    return text_width(labels, size, dpi) + 3.6 * size / 72 + 0.03


def key(ax, entries, *, at: tuple[float, float], corner: str, size: float, frame: bool = True) -> list:
    """A legend drawn as plain artists: a handle and a label per entry, in a rounded frame, laid
    out like matplotlib's legend (its default paddings and spacing, in font sizes). ``entries``:
    ``(style, label)`` pairs, ``style`` the keyword arguments of a line handle (``color``,
    ``lw``, ``ls``) or ``{"patch": colour}`` for a filled box. The key's ``corner``
    ("upper left", "lower right", ...) sits half a font size inside the point ``at`` (axes
    fraction), where nothing is searched for: matplotlib's ``Legend`` lays its boxes out through
    nested packers, measuring every label several times — a fifth of drawing a plot with one.
    Returns the labels (texts of ``ax``, drawn unclipped)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyBboxPatch, Rectangle
    from matplotlib.transforms import ScaledTranslation

    fig = ax.figure
    em = size / 72                                      # inches
    # inches from the point ``at`` of the axes, wherever the axes end up
    where = fig.dpi_scale_trans + ScaledTranslation(*at, ax.transAxes)
    row = 1.5 * em                                      # a label's height and the spacing after it
    width = (0.4 + 2.0 + 0.8 + 0.4) * em + text_width([label for _, label in entries], size, fig.dpi)
    height = 0.8 * em + len(entries) * row - 0.5 * em
    vertical, horizontal = corner.split()
    x0 = 0.5 * em if horizontal == "left" else -0.5 * em - width
    y0 = 0.5 * em if vertical == "lower" else -0.5 * em - height
    if frame:
        ax.add_artist(FancyBboxPatch((x0, y0), width, height, boxstyle=f"round,pad=0,rounding_size={0.2 * em}",
                                     transform=where, facecolor="white", edgecolor="0.8", alpha=0.8, lw=0.8,
                                     clip_on=False, zorder=5))
    texts = []
    for i, (style, label) in enumerate(entries):
        y = y0 + height - 0.4 * em - (i + 0.5) * row + 0.25 * em
        hx = x0 + 0.4 * em
        if "patch" in style:
            ax.add_artist(Rectangle((hx, y - 0.35 * em), 2.0 * em, 0.7 * em, transform=where,
                                    facecolor=style["patch"], clip_on=False, zorder=5))
        else:
            ax.add_artist(Line2D([hx, hx + 2.0 * em], [y, y], transform=where, clip_on=False, zorder=5, **style))
        texts.append(ax.text(hx + 2.8 * em, y, label, transform=where, fontsize=size, va="center",
                             clip_on=False, zorder=5))
    return texts


def save_png(fig, path: Path) -> Path:
    """``fig`` drawn at its own dpi and written as an 8-bit RGB PNG: the pixels ``savefig``
    writes, less the alpha channel (an opaque, white-faced figure has nothing in it). Every row
    is stored with the PNG "Up" filter (each byte less the one above: one numpy subtraction)
    and deflated at zlib level 3. PIL's encoder, which ``savefig`` uses, tries every filter on
    every row to pick one: ≈ 11 ms of a plot's drawing, this ≈ 3 ms, for files within a few %
    of its size (PNG specification, ISO/IEC 15948: filter type 2, chunks IHDR, pHYs, IDAT, IEND)."""
    import struct
    import zlib

    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    h, w = rgba.shape[:2]
    rows = np.ascontiguousarray(rgba[..., :3]).reshape(h, 3 * w)
    raw = np.empty((h, 3 * w + 1), dtype=np.uint8)
    raw[:, 0] = 2                                            # filter type of each row: Up
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])        # modulo 256, as the filter defines it

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    per_metre = round(fig.dpi / 0.0254)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
                           + chunk(b"IDAT", zlib.compress(raw.tobytes(), 3)) + chunk(b"IEND", b""))
    return Path(path)
