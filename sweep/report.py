"""The results table (``results.parquet`` / ``results.csv``) and ``report.html`` of a sweep's output folder.

The table has one row per job of the grid, read from the manifest's last record per key: the axis values
(``seed`` as its own column where an axis sets a seed), ``status`` (``ok`` / ``failed`` / ``pending`` for jobs
an interrupted run never reached), the error, the output paths (relative to the folder), every metric, the
seconds the job took on its server, the worker and the attempts. The report is one self-contained HTML page
next to the outputs: a contact sheet (each cell's animated output plays in place), each metric plotted against
each numeric axis (inline SVG: every job a dot, the mean per value a line), and the failures with their messages.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from .jobs import Manifest
from .spec import Spec

SEED_INPUTS = ("seed", "noise_seed")
METRIC_ORDER = ("flow_mean", "motion_top5", "dynamic", "flicker", "viou50", "miou", "background_psnr", "afterimage")


def table_rows(out: Path, spec: Spec, manifest: Manifest) -> tuple[list[dict], list[str], list[str]]:
    """(rows, axis columns, metric columns) for every job of the grid (jobs.json) in grid order."""
    jobs_file = out / "jobs.json"
    grid = json.loads(jobs_file.read_text())["jobs"] if jobs_file.is_file() else []
    latest = manifest.latest()
    axes = [a.name for a in spec.axes]
    seed_axis = next((a.name for a in spec.axes if a.input in SEED_INPUTS), None)
    metric_cols: list[str] = []
    for r in latest.values():
        for k in r.get("metrics") or {}:
            if k not in metric_cols:
                metric_cols.append(k)
    metric_cols.sort(key=lambda k: (METRIC_ORDER.index(k) if k in METRIC_ORDER else 99, k))
    rows = []
    for j in grid:
        r = latest.get(j["key"], {})
        row: dict[str, Any] = {"index": j["index"], "key": j["key"][:16]}
        for a in axes:
            row[a] = j["values"].get(a)
        if seed_axis and "seed" not in row:
            row["seed"] = j["values"].get(seed_axis)
        row["status"] = r.get("status", "pending")
        row["error"] = r.get("error") or ""
        row["outputs"] = ";".join(r.get("files") or [])
        for m in metric_cols:
            v = (r.get("metrics") or {}).get(m)
            row[m] = float(v) if isinstance(v, (int, float)) else math.nan
        row["seconds"] = r.get("seconds", math.nan)
        row["worker"] = r.get("worker") or ""
        row["attempts"] = r.get("attempts", 0)
        rows.append(row)
    return rows, axes, metric_cols


def write_results(out: Path | str, spec: Spec, manifest: Manifest | None = None) -> dict[str, Path]:
    """Write ``results.parquet``, ``results.csv`` and ``report.html`` into ``out``; returns their paths."""
    import pandas as pd

    out = Path(out)
    manifest = manifest or Manifest(out)
    rows, axes, metric_cols = table_rows(out, spec, manifest)
    df = pd.DataFrame(rows)
    if not df.empty:
        for a in axes:  # mixed-type axes (e.g. image names) stay text for Parquet
            if df[a].map(type).nunique() > 1:
                df[a] = df[a].astype(str)
    paths = {"parquet": out / "results.parquet", "csv": out / "results.csv", "html": out / "report.html"}
    df.to_parquet(paths["parquet"], index=False)
    df.to_csv(paths["csv"], index=False)
    paths["html"].write_text(render_html(spec, rows, axes, metric_cols))
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return str(v)


def _numeric(vals: list) -> bool:
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def svg_plot(rows: list[dict], axis: str, metric: str, w: int = 300, h: int = 200) -> str:
    """Inline SVG: ``metric`` of every ok job against ``axis`` (dots) and its mean per axis value (line)."""
    pts = [(float(r[axis]), float(r[metric])) for r in rows
           if r["status"] == "ok" and isinstance(r.get(metric), float) and not math.isnan(r[metric])]
    esc = html.escape
    head = f'<svg class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">'
    title = f'<text x="{w / 2}" y="14" text-anchor="middle" class="t">{esc(metric)} vs {esc(axis)}</text>'
    if not pts:
        return head + title + f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">no data</text></svg>'
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    L, R, T, B = 46, 10, 24, 30

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (w - L - R)

    def sy(y: float) -> float:
        return h - B - (y - y0) / (y1 - y0) * (h - T - B)

    parts = [head, title,
             f'<line x1="{L}" y1="{h - B}" x2="{w - R}" y2="{h - B}" class="ax"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{h - B}" class="ax"/>',
             f'<text x="{L}" y="{h - 12}" class="l">{_fmt(x0)}</text>',
             f'<text x="{w - R}" y="{h - 12}" text-anchor="end" class="l">{_fmt(x1)}</text>',
             f'<text x="{L - 4}" y="{h - B}" text-anchor="end" class="l">{_fmt(y0)}</text>',
             f'<text x="{L - 4}" y="{T + 8}" text-anchor="end" class="l">{_fmt(y1)}</text>']
    means: dict[float, list[float]] = {}
    for x, y in pts:
        means.setdefault(x, []).append(y)
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" class="pt"><title>{esc(axis)}={_fmt(x)}, '
                     f'{esc(metric)}={_fmt(y)}</title></circle>')
    line = " ".join(f"{sx(x):.1f},{sy(sum(v) / len(v)):.1f}" for x, v in sorted(means.items()))
    parts.append(f'<polyline points="{line}" class="mean"/>')
    return "".join(parts) + "</svg>"


CSS = """
body{font-family:system-ui,sans-serif;margin:20px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right} th{background:#eee}
.sheet td{vertical-align:top;text-align:center;background:#fff}
.sheet img{width:192px;image-rendering:pixelated;display:block;margin:auto;background:#000}
.cap{font-size:11px;color:#333;max-width:200px} .bad{color:#b00020} .ok{color:#1b5e20}
.plots{display:flex;flex-wrap:wrap;gap:8px}
.plot{background:#fff;border:1px solid #ddd}.plot .t{font-size:12px;font-weight:600}.plot .l{font-size:10px;fill:#555}
.ax{stroke:#888}.pt{fill:#1565c0;fill-opacity:.7}.mean{fill:none;stroke:#e65100;stroke-width:1.5}
pre{white-space:pre-wrap;font-size:11px;background:#fff;border:1px solid #eee;padding:6px;margin:2px 0 10px}
"""


def _cell(r: dict, metric_cols: list[str], axes: list[str], label_axes: list[str]) -> str:
    esc = html.escape
    vid = next((f for f in r["outputs"].split(";") if f), "")
    label = ", ".join(f"{a}={_fmt(r[a])}" for a in label_axes)
    if r["status"] == "ok" and vid:
        media = f'<a href="{esc(vid)}"><img loading="lazy" src="{esc(vid)}" alt="{esc(label)}"></a>'
    elif r["status"] == "ok":
        media = "<i>no file</i>"
    else:
        media = f'<div class="bad">{esc(r["status"])}</div>'
    mets = " ".join(f"{m}={_fmt(r[m])}" for m in metric_cols[:4])
    return f'<td>{media}<div class="cap">{esc(label)}<br>{esc(mets)}</div></td>'


def render_html(spec: Spec, rows: list[dict], axes: list[str], metric_cols: list[str]) -> str:
    """The report page (see the module docstring)."""
    esc = html.escape
    ok = sum(r["status"] == "ok" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    pending = sum(r["status"] == "pending" for r in rows)
    secs = [r["seconds"] for r in rows if r["status"] == "ok" and isinstance(r["seconds"], (int, float))]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {esc(spec.name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Sweep: {esc(spec.name)}</h1>",
             f"<div class='meta'>workflow <b>{esc(spec.workflow_path.name)}</b> · {esc(spec.mode)} of "
             + " × ".join(f"{esc(a)} ({len({r[a] for r in rows})})" for a in axes)
             + f" = {len(rows)} jobs · <span class='ok'>{ok} ok</span> · <span class='bad'>{len(failed)} failed</span>"
             + (f" · {pending} pending" if pending else "")
             + (f" · {sum(secs) / len(secs):.1f} s per job on its server" if secs else "") + "</div>"]
    # contact sheet: rows = the first axis, columns = the combinations of the others
    parts.append("<h2>Contact sheet</h2><table class='sheet'>")
    first, rest = axes[0], axes[1:]
    row_vals = list(dict.fromkeys(r[first] for r in rows))
    col_keys = list(dict.fromkeys(tuple(r[a] for a in rest) for r in rows))
    if rest:
        parts.append("<tr><th>" + esc(first) + " \\ " + esc(", ".join(rest)) + "</th>"
                     + "".join(f"<th>{esc(', '.join(_fmt(v) for v in ck))}</th>" for ck in col_keys) + "</tr>")
    for rv in row_vals:
        cells = []
        for ck in col_keys:
            hit = next((r for r in rows if r[first] == rv and tuple(r[a] for a in rest) == ck), None)
            cells.append(_cell(hit, metric_cols, axes, axes) if hit else "<td></td>")
        parts.append(f"<tr><th>{esc(first)}={esc(_fmt(rv))}</th>{''.join(cells)}</tr>")
    parts.append("</table>")
    # plots
    numeric_axes = [a for a in axes if _numeric([r[a] for r in rows]) and len({r[a] for r in rows}) > 1]
    if metric_cols and numeric_axes:
        parts.append("<h2>Metrics against the axes</h2><div class='plots'>")
        parts += [svg_plot(rows, a, m) for m in metric_cols for a in numeric_axes]
        parts.append("</div>")
    # table
    cols = ["index", *axes, "status", *metric_cols, "seconds", "worker", "attempts"]
    parts.append("<h2>Results</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td class='{'bad' if c == 'status' and r[c] != 'ok' else ''}'>"
                                      f"{esc(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>")
    parts.append("</table>")
    parts.append(f"<h2>Failures ({len(failed)})</h2>")
    if not failed:
        parts.append("<p>none</p>")
    for r in failed:
        parts.append(f"<div><b>job {r['index']}</b> ({esc(', '.join(f'{a}={_fmt(r[a])}' for a in axes))})</div>"
                     f"<pre>{esc(r['error'])}</pre>")
    parts.append("<p class='meta'>Metrics: optical flow is OpenCV Farneback; <i>dynamic</i> follows VBench's "
                 "dynamic-degree rule with Farneback instead of RAFT (compare within a sweep, not with published "
                 "VBench numbers); <i>flicker</i> is the mean absolute frame-to-frame difference (0–255). Layout "
                 "metrics come from the pack's Layout Metrics node.</p></body></html>")
    return "\n".join(parts)
