"""The drift report as one HTML file: the table, then a bar chart per compared field (the
reference's share of each bin beside the recent share), drawn as inline SVG. Self-contained:
no script, no stylesheet or font fetched, so it opens anywhere, a CI artifact included. Every
name, label and note is escaped: they come from the records and the reference."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

from runtime.drift.stability import CATEGORY

if TYPE_CHECKING:
    from runtime.drift.compare import Drift, FieldDrift

STABLE = 0.1  # below: stable; up to the threshold: a moderate shift (docs/drift.md)
WIDTH, HEIGHT = 920, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 90
REFERENCE_COLOUR, RECENT_COLOUR = "#7f9cbf", "#e0782f"
LABEL_CHARS = 18

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2433;
       margin: 2rem auto; max-width: 980px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .3rem; }
.meta { color: #5a6478; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e7ee; }
th { background: #f4f6f9; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.psi { display: inline-block; min-width: 3.5rem; text-align: center; border-radius: 4px;
       padding: 0 .4rem; font-variant-numeric: tabular-nums; }
.stable { background: #dff3e4; } .moderate { background: #fdf0c8; }
.drifted { background: #f9d6d2; font-weight: 600; } .none { color: #8a93a5; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem;
               vertical-align: middle; }
.verdict { font-weight: 600; }
svg { display: block; }
"""


def html(drift: Drift, threshold: float, reference: str) -> str:
    """The report of ``drift`` (``threshold``: the PSI above which the command fails)."""
    above = drift.above(threshold)
    verdict = (
        f"{len(above)} field{'s' if len(above) != 1 else ''} above {threshold:g}: "
        + ", ".join(escape(f.name) for f in above)
        if above
        else f"every field at or below {threshold:g}"
    )
    rows = "\n".join(_row(f, threshold) for f in drift.fields)
    charts = "\n".join(_chart(f, threshold) for f in drift.fields if f.psi is not None)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift of {escape(drift.endpoint)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Drift of {escape(drift.endpoint)}</h1>
<p class="meta">Records from {_time(drift.window.since)} to {_time(drift.window.until)}:
{drift.ok:,} with status 200 of {drift.records:,} in {drift.files:,} files, against
{escape(reference)}. Population stability index per field: below {STABLE:g} stable,
{STABLE:g} to {threshold:g} a moderate shift, above {threshold:g} drifted.</p>
<p class="verdict">{verdict}</p>
<table>
<tr><th>field</th><th>side</th><th>kind</th><th>PSI</th><th>reference n</th>
<th>recent n</th><th>note</th></tr>
{rows}
</table>
{charts}
</body></html>
"""


def _row(f: FieldDrift, threshold: float) -> str:
    return (
        f"<tr><td>{escape(f.name)}</td><td>{escape(f.role or '-')}</td>"
        f"<td>{escape(f.kind)}</td><td>{_badge(f.psi, threshold)}</td>"
        f'<td class="n">{f.reference_n:,}</td><td class="n">{f.recent_n:,}</td>'
        f"<td>{escape(f.note)}</td></tr>"
    )


def _badge(value: float | None, threshold: float) -> str:
    if value is None:
        return '<span class="psi none">-</span>'
    level = "drifted" if value > threshold else "moderate" if value >= STABLE else "stable"
    return f'<span class="psi {level}">{value:.3f}</span>'


def _chart(f: FieldDrift, threshold: float) -> str:
    """A section: the field's heading and its bars, a pair per bin."""
    ref_total, recent_total = sum(f.reference_counts) or 1, sum(f.recent_counts) or 1
    bins = [
        (label, r / ref_total, n / recent_total)
        for i, (label, r, n) in enumerate(
            zip(f.labels, f.reference_counts, f.recent_counts, strict=True)
        )
        # The catch-all bins only when either side has a value in them.
        if r or n or i < len(f.labels) - (2 if f.kind == CATEGORY else 1)
    ]
    top = max(max(r, n) for _, r, n in bins) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(bins)
    bar = min(28.0, slot * 0.38)
    parts = []
    for tick in (0.0, top / 2, top):
        y = TOP + plot_h * (1 - tick / top)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e3e7ee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>'
        )
    for i, (label, r, n) in enumerate(bins):
        middle = LEFT + slot * (i + 0.5)
        for x, share, colour, who in (
            (middle - bar - 1, r, REFERENCE_COLOUR, "reference"),
            (middle + 1, n, RECENT_COLOUR, "recent"),
        ):
            h = plot_h * share / top
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(label)}: {who} '
                f"{share:.1%}</title></rect>"
            )
        shown = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
        y = TOP + plot_h + 14
        parts.append(
            f'<text x="{middle:.1f}" y="{y}" text-anchor="end" '
            f'transform="rotate(-35 {middle:.1f} {y})"><title>{escape(label)}</title>'
            f"{escape(shown)}</text>"
        )
    axis = TOP + plot_h
    parts.append(
        f'<line x1="{LEFT}" y1="{axis}" x2="{WIDTH - RIGHT}" y2="{axis}" stroke="#5a6478"/>'
    )
    title = f"{f.name} ({f.role})" if f.role else f.name
    return f"""<h2>{escape(title)} <span style="font-weight:400">{escape(f.kind)}, PSI</span> \
{_badge(f.psi, threshold)}</h2>
<p class="legend meta">share of rows per bin:<span style="background:{REFERENCE_COLOUR}"></span>\
reference ({f.reference_n:,})<span style="background:{RECENT_COLOUR}"></span>recent \
({f.recent_n:,}){" · " + escape(f.note) if f.note else ""}</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" \
viewBox="0 0 {WIDTH} {HEIGHT}" font-size="11" fill="#1d2433" role="img" \
aria-label="{escape(title)}: reference and recent shares per bin">
{"".join(parts)}
</svg>"""


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
