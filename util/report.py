"""The interpretability report of ``interpret.py``: one self-contained HTML page and a PNG figure
laid out like the paper's Fig. 3 (rows of consecutive 5-s segments; above each, the original
caption of a visible segment or the caption retrieved for a reconstructed masked one).

Thumbnails: a segment's ``thumbnail`` (uint8 ``[h, w, 3]``, decoded by the caller:
``interpret.read_thumbnails``) is embedded as base64 JPEG; without one the cell shows a
placeholder. Every caption is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from util.io import atomic_write_bytes, atomic_write_text


@dataclass
class SegmentView:
    """One segment cell. ``caption``: its own caption (None if the database has none);
    ``retrieved``: top-1 caption of the LV-MAE reconstruction (masked segments);
    ``retrieved_original``: top-1 caption of the original embedding."""
    index: int
    start_s: float
    end_s: float
    masked: bool
    caption: str | None
    retrieved: str | None = None
    retrieved_original: str | None = None
    hit_rank: int | None = None        # rank of the own caption for the reconstruction
    thumbnail: np.ndarray | None = None


@dataclass
class VideoView:
    video_id: str
    num_segments: int
    start: int                          # the shown window is [start, start + len(segments))
    segments: list[SegmentView] = field(default_factory=list)
    note: str = ""

    @property
    def stop(self) -> int:
        return self.start + len(self.segments)


# --- thumbnails (frames come from the caller, e.g. interpret.read_thumbnails) -------------------
def _jpeg_base64(frame: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


# --- tables -----------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- HTML -------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:17px;margin:28px 0 6px}.note{color:#555;font-size:13px}
table.metrics{border-collapse:collapse;margin:12px 0;font-size:14px}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(var(--cols),minmax(0,1fr));gap:10px;max-width:1100px}
.seg{background:#fff;border:2px solid #d0d0d0;border-radius:6px;padding:6px;display:flex;flex-direction:column}
.seg.masked{border:2px dashed #c0392b;background:repeating-linear-gradient(45deg,#fff,#fff 8px,#fdf0ef 8px,#fdf0ef 16px)}
.cap{font-size:13px;min-height:3.2em;margin-bottom:4px}
.seg.masked .cap{color:#a52a1c;font-style:italic}
.badge{display:inline-block;font-size:11px;font-weight:bold;color:#fff;background:#c0392b;border-radius:3px;
 padding:0 5px;margin-right:4px;font-style:normal}
.hit{color:#1e8449;font-weight:bold;font-style:normal}.miss{color:#7f8c8d;font-style:normal}
.orig{font-size:11px;color:#555;margin-top:3px;font-style:normal}
.thumb{width:100%;aspect-ratio:16/9;object-fit:cover;border-radius:3px;background:#e6e6e6}
.ph{display:flex;align-items:center;justify-content:center;color:#888;font-size:12px}
.meta{font-size:11px;color:#777;margin-top:4px}
"""


def _segment_html(video_id: str, s: SegmentView) -> str:
    e = html.escape
    if s.thumbnail is not None:
        img = f'<img class="thumb" alt="frame" src="data:image/jpeg;base64,{_jpeg_base64(s.thumbnail)}">'
    else:
        img = '<div class="thumb ph">no frame</div>'
    if s.masked:
        mark = ""
        if s.hit_rank is not None:
            mark = (f' <span class="hit">&#10003; rank {s.hit_rank}</span>' if s.hit_rank <= 5
                    else f' <span class="miss">rank {s.hit_rank}</span>')
        cap = f'<span class="badge">MASKED</span>retrieved: &ldquo;{e(s.retrieved or "")}&rdquo;{mark}'
        own = e(s.caption) if s.caption is not None else "(no caption)"
        cap += f'<div class="orig">original caption: {own}</div>'
        if s.retrieved_original is not None:
            cap += f'<div class="orig">retrieved from the original embedding: {e(s.retrieved_original)}</div>'
    elif s.caption is not None:
        cap = e(s.caption)
    else:
        cap = f'<span class="miss">(no caption; retrieved: {e(s.retrieved_original or "")})</span>'
    return (f'<div class="seg{" masked" if s.masked else ""}" id="{e(video_id)}-seg{s.index}" '
            f'data-video="{e(video_id)}" data-segment="{s.index}" data-masked="{int(s.masked)}">'
            f'<div class="cap">{cap}</div>{img}'
            f'<div class="meta">segment {s.index} &middot; {s.start_s:.1f}&ndash;{s.end_s:.1f} s</div></div>')


def write_html(path: str | Path, title: str, intro: list[str], table_rows: list[dict], columns: list[str],
               videos: list[VideoView], cols: int = 3) -> None:
    """A self-contained page: the run's settings, the metrics table, then every video as rows of
    ``cols`` consecutive segments."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body style=\"--cols:{cols}\">", f"<h1>{e(title)}</h1>"]
    parts += [f'<p class="note">{e(line)}</p>' for line in intro]
    parts.append(html_table(table_rows, columns))
    parts.append('<p class="note">Each row shows consecutive segments. Visible segments show their own '
                 'caption; <span class="badge">MASKED</span> segments show the caption retrieved for the '
                 'LV-MAE reconstruction (&#10003; = the own caption is among the top 5).</p>')
    for v in videos:
        n_masked = sum(s.masked for s in v.segments)
        window = (f"segments {v.start}&ndash;{v.stop - 1} of {v.num_segments}" if v.stop - v.start < v.num_segments
                  else f"all {v.num_segments} segments")
        parts.append(f'<section class="video" data-video="{e(v.video_id)}"><h2>{e(v.video_id)}</h2>'
                     f'<p class="note">{window}, {n_masked} masked{(" &middot; " + e(v.note)) if v.note else ""}</p>'
                     '<div class="grid">' + "".join(_segment_html(v.video_id, s) for s in v.segments)
                     + "</div></section>")
    parts.append("</body></html>\n")
    atomic_write_text(path, "".join(parts))


# --- PNG (Fig. 3 layout) ----------------------------------------------------------------------
def figure_rows(videos: list[VideoView], max_rows: int = 6, cols: int = 3) -> list[tuple[VideoView, int]]:
    """``(video, first segment position)`` of up to ``max_rows`` rows of ``cols`` consecutive segments,
    one per video in order, each the first run that mixes masked and visible segments (the
    most informative for a reader), else the video's first run."""
    rows = []
    for v in videos:
        if len(rows) == max_rows:
            break
        m = np.array([s.masked for s in v.segments])
        width = min(cols, len(m))
        runs = [p for p in range(len(m) - width + 1) if 0 < m[p:p + width].sum() < width]
        rows.append((v, runs[0] if runs else 0))
    return rows


def write_png(path: str | Path, videos: list[VideoView], max_rows: int = 6, cols: int = 3, title: str = "") -> None:
    """Rows of ``cols`` consecutive segments like Fig. 3: frame (or placeholder) with the original
    caption above visible segments and the retrieved caption (red, ``[masked]``) above masked ones."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = figure_rows(videos, max_rows, cols) or [(None, 0)]
    fig = Figure(figsize=(3.4 * cols, 2.7 * len(rows) + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, (v, p) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if v is None or p + c >= len(v.segments):
                ax.axis("off")
                continue
            s = v.segments[p + c]
            if s.thumbnail is not None:
                ax.imshow(s.thumbnail)
            else:
                ax.imshow(np.full((9, 16, 3), 0.9))
                ax.text(0.5, 0.5, f"segment {s.index}\n{s.start_s:.0f}-{s.end_s:.0f} s", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.45")
            text = (f"[masked] {s.retrieved}" if s.masked else s.caption) or "(no caption)"
            ax.set_title("\n".join(textwrap.wrap(text, 34)[:3]), fontsize=8.5,
                         color="#a52a1c" if s.masked else "black", style="italic" if s.masked else "normal")
            if s.masked:
                ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, ec="#c0392b", lw=3,
                                       ls="--", clip_on=False))
                ax.set_xlabel("\n".join(textwrap.wrap(f"original: {s.caption or '(none)'}", 40)[:2]), fontsize=7,
                              color="0.4")
            if c == 0:
                last = v.segments[min(p + cols, len(v.segments)) - 1].index
                ax.set_ylabel(f"{v.video_id}\nsegments {s.index}-{last}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), lambda f: f.write(buf.getvalue()))
