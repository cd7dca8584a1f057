"""``report.json`` and ``report.html``: what a run read, dropped and selected, and why.

The pipeline writes one JSON object of statistics (``STATS_FILE``); after the run this module
turns it, the timings and the environment into the report. The HTML page is one self-contained
file: tables, inline SVG charts and sample documents; no scripts, no external resources.
"""

import html
import importlib.metadata
import json
import math
import numbers
import platform
import re
import shlex

from apache_beam.io.filesystems import FileSystems

from winnow.pipelines.metrics import ROBUST_RANGE
from winnow.transforms import schema

MAX_BARS = 30  # longest bar chart: the largest clusters / busiest stages
VERSIONED_PACKAGES = ("winnow", "apache-beam", "numpy", "pyarrow", "scikit-learn", "datasketch", "zstandard")


def versions() -> dict[str, str]:
    """Python and the versions of the packages a run depends on."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def accounting(outcomes: dict[str, int], invalid: dict[str, int], records_read: int) -> dict:
    """Counts from per-outcome totals (``selected`` or a drop reason), invalid reasons, and the records read."""
    dropped = {reason: n for reason, n in sorted(outcomes.items()) if reason != schema.SELECTED}
    selected = outcomes.get(schema.SELECTED, 0)
    n_invalid = sum(invalid.values())
    return {
        "input": records_read,
        "valid": selected + sum(dropped.values()),
        "invalid": n_invalid,
        "invalid_by_reason": dict(sorted(invalid.items())),
        "duplicates": sum(dropped.get(r, 0) for r in schema.DUPLICATE_REASONS),
        "selected": selected,
        "dropped": dropped,
    }


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain") as handle:
        handle.write(text.encode("utf-8"))


def build_report(job, stats: dict, read_stats: dict, table, command: list[str], beam_flags: list[str], timings: dict, result) -> dict:
    """The report.json document of a finished run.

    Raises:
        JobFailed (from runner): the accounting does not add up, or no record at all was valid.
    """
    from winnow.pipelines import runner

    counts = accounting(stats["counts"]["outcomes"], stats["counts"]["invalid"], read_stats["records"])
    fit = table.fit_state().stats if table.fit_complete() else {}
    counts["target_invalid"] = sum(fit.get("target_invalid", {}).values())
    checks = {
        "selected_dropped_invalid_equal_records_read": counts["selected"] + sum(counts["dropped"].values()) + counts["invalid"] == counts["input"],
        "selected_rows_written": stats["written"] == counts["selected"],
    }
    checked_by = ["counts in the pipeline (features markers of the score pass; outcome counts of the decide pass; rows written)"]
    counters = runner.counters(result, "winnow.decide")
    if counters is not None:
        checks["beam_counters_agree"] = counters.get(schema.SELECTED, 0) == counts["selected"]
        checked_by.append("Beam counters (winnow.decide)")
    if not all(checks.values()):
        raise runner.JobFailed(f"accounting check failed: {checks}; counts {counts}")
    if counts["input"] and not counts["valid"]:
        raise runner.JobFailed(f"no valid record among the {counts['input']} read ({counts['invalid_by_reason']}); see {job.output}/errors/")
    metrics = {name: value for name, value in sorted(stats.items()) if name not in ("counts", "written", "samples")}
    metrics.update({f"fit_{name}": value for name, value in fit.items() if name != "target_invalid"})
    warnings = selection_warnings(job, stats, read_stats)
    timings = {**timings, "total": round(sum(timings.values()), 3)}
    return {
        "command": command,
        "options": {"job": _jsonable(job), "beam_flags": beam_flags},
        "counts": counts,
        "checks": checks,
        "checked_by": checked_by,
        "metrics": metrics,
        "samples": stats.get("samples", {}),
        "timings_s": timings,
        "stage_busy_s": runner.stage_seconds(result),
        "warnings": warnings,
        "versions": versions(),
    }


def selection_warnings(job, stats: dict, read_stats: dict) -> list[str]:
    """Fewer eligible records than asked for; fields turned into strings; a selection less diverse than random."""
    warnings = []
    pool = sum(stats["selection"]["pool"].values()) if stats.get("selection") else 0
    quota = job.deciding.quota
    if quota.n is not None and quota.n > pool:
        warnings.append(f"--num-select {quota.n} is more than the {pool} eligible records; all {pool} were selected")
    for name in read_stats["conflicts"]:
        warnings.append(f"input field {name!r} has values of conflicting types; it is written as a string column")
    vendi = stats.get("vendi", {})
    if "selected" in vendi and "random" in vendi and vendi["selected"]["vendi_score"] < vendi["random"]["vendi_score"]:
        warnings.append(f"the selection is less diverse than a random subset of its size: Vendi {vendi['selected']['vendi_score']:.2f} "
                        f"vs {vendi['random']['vendi_score']:.2f}")
    return warnings


def _jsonable(value):
    import dataclasses

    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def write(output: str, document: dict) -> None:
    """report.html, then report.json: its presence marks a complete run."""
    write_text(FileSystems.join(output, "report.html"), render_html(document))
    write_text(FileSystems.join(output, "report.json"), json.dumps(document, indent=2, sort_keys=True, default=str))


# --- report.html ---------------------------------------------------------------------------------
# Charts are inline SVG drawn in a viewBox CHART_WIDTH units wide that scales with the page, so a phone
# shrinks a chart instead of cutting it off. Text cannot be measured without a script, so every text
# width is estimated (characters x CHAR_WIDTH) and columns are sized from the longest text before
# drawing; a label longer than MAX_LABEL_CHARS is cut with "…" and keeps its full name as a tooltip.

CHART_WIDTH = 560
FONT_SIZE = 13
CHAR_WIDTH = 0.62 * FONT_SIZE  # DejaVu Sans averages about 0.55 em on names; the padding absorbs wider runs (capitals, %)
MAX_LABEL_CHARS = 32
SAMPLE_CHARS = 300  # of each sample document's opening
_PAD = 6
_BAR_H, _ROW_GAP = 14, 6  # bar chart: one bar per series, then a gap, per row
_PLOT_H = 180  # histogram: height of the plot area
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
_SUBSETS = ("all", "selected", "random")  # their order in charts and tables; other subsets follow by name
_QUANTILE_LEVELS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*\Z")
_STYLE = (
    "body{font-family:sans-serif;max-width:960px;margin:0 auto;padding:0 12px 2em;color:#222;line-height:1.4}"
    "h2{border-bottom:1px solid #ddd;margin-top:1.8em}h3{margin:1.4em 0 .4em}small{color:#666;font-weight:normal}"
    "table{border-collapse:collapse;margin:.6em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}"
    ".scroll{overflow-x:auto}td table{margin:0;font-size:.92em}@media (max-width:600px){body{font-size:14px}th{overflow-wrap:anywhere}}"
    "th{background:#f3f3f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "pre{background:#f6f6f6;padding:8px;margin:.3em 0 1em;font-size:.85em;white-space:pre-wrap;overflow-wrap:anywhere}"
    "figure{margin:1.2em 0}figcaption{font-weight:600;margin-bottom:.3em}"
    f"svg.plot{{display:block;width:100%;max-width:{CHART_WIDTH}px;height:auto}}"
    ".note{color:#555;font-size:.9em;margin:.3em 0}.doc code{font-weight:600}"
)


def fmt(value) -> str:
    """A value as the page shows it: integers whole, other numbers to 4 significant digits, lists bracketed."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def text_width(text: str) -> float:
    """Estimated width of ``text`` at FONT_SIZE, in chart units."""
    return len(text) * CHAR_WIDTH


def shorten(label: str) -> str:
    """``label``, cut to MAX_LABEL_CHARS with a trailing "…" when longer."""
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` evenly spaced round values (steps of 1, 2 or 5 x 10^k) within [low, high]; expects low < high."""
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [float(f"{i * step:.12g}") for i in range(first, last + 1)]  # .12g: 0.15, not 0.15000000000000002


def flatten(value, path: str = "") -> list[tuple[str, object]]:
    """``(path, leaf)`` rows of nested dicts, e.g. ``config.bands`` or ``profile[0.5]``; anything but a nonempty dict is a leaf.

    In each dict the scalars come first, then the lists and dicts, each in ``order_key`` order.
    """
    if not (isinstance(value, dict) and value):
        return [(path, value)]
    items = sorted(value.items(), key=lambda item: (isinstance(item[1], (dict, list)), order_key(item[0])))
    return [row for key, item in items for row in flatten(item, _child(path, key))]


def _child(path: str, key) -> str:
    """``path.key``, or ``path[key]`` for a key that is a number or no identifier."""
    key = str(key)
    if not path:
        return key
    return f"{path}.{key}" if _IDENTIFIER.match(key) and order_key(key)[0] else f"{path}[{key}]"


def order_key(key) -> tuple:
    """Sort key of names: numbers (cluster ids, sizes, orders q with "inf" last) by value, then the rest alphabetically."""
    try:
        return (0, float(key), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(key))


def _subsets(keys) -> list:
    return sorted(keys, key=lambda s: (_SUBSETS.index(s) if s in _SUBSETS else len(_SUBSETS), str(s)))


def _esc(value) -> str:
    return html.escape(str(value))


# --- charts ---


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    """A text at (x, y), vertically centred on y."""
    return f'<text x="{x:.1f}" y="{y:.1f}" dy=".35em" text-anchor="{anchor}">{_esc(text)}</text>'


def _rect(kind: str, x: float, y: float, width: float, height: float, color: str, inner: str = "", extra: str = "") -> str:
    return (f'<rect class="{kind}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{color}"{extra}>'
            f"{inner}</rect>")


def _legend(names: list[str], y: float) -> list[str]:
    """A swatch and the name of each series, left to right, centred on height ``y``."""
    marks, x = [], _PAD
    for i, name in enumerate(names):
        marks += [_rect("key", x, y - 5, 10, 10, _COLORS[i % len(_COLORS)]), _text(x + 14, y, name)]
        x += 14 + text_width(name) + 2 * _PAD
    return marks


def _chart(title: str, height: float, marks: list[str], caption: str = "") -> str:
    """A figure: ``title``, the SVG (CHART_WIDTH x ``height`` viewBox, as wide as the page allows), ``caption``."""
    svg = (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height:.0f}" width="100%" '
           f'role="img" aria-label="{_esc(title)}" font-family="sans-serif" font-size="{FONT_SIZE}">{"".join(marks)}</svg>')
    note = f'<p class="note">{_esc(caption)}</p>' if caption else ""
    return f"<figure><figcaption>{_esc(title)}</figcaption>{svg}{note}</figure>"


def bar_chart(title: str, values: dict, caption: str = "") -> str:
    """Horizontal bars of ``{label: value}``; see ``grouped_bar_chart``."""
    return grouped_bar_chart(title, {label: {"": value} for label, value in values.items()}, caption)


def grouped_bar_chart(title: str, groups: dict[str, dict[str, float]], caption: str = "") -> str:
    """Horizontal bars: a row per group, a bar per series (with a legend), all from one zero line.

    A negative value's bar goes left of the zero line. The label column fits the longest label
    (cut by ``shorten``; the row's ``<title>`` has it whole), and each value is printed beyond its
    bar's end, with room left of the axis when a value is negative and right of it when one is positive.
    """
    values = [value for series in groups.values() for value in series.values()]
    if not values:
        return f"<p>{_esc(title)}: nothing to plot.</p>"
    names = list(dict.fromkeys(name for series in groups.values() for name in series))
    label_w = max(text_width(shorten(str(label))) for label in groups) + 2 * _PAD
    value_w = max(text_width(fmt(value)) for value in values) + _PAD
    low, high = min(0, min(values)), max(0, max(values))
    left = label_w + (value_w if low < 0 else 0)
    right = CHART_WIDTH - _PAD - (value_w if high > 0 else 0)
    scale = (right - left) / ((high - low) or 1)
    zero = left - low * scale
    legend = names != [""]
    top = FONT_SIZE + 3 * _PAD if legend else _PAD
    row_h = len(names) * _BAR_H + _ROW_GAP
    marks = _legend(names, top / 2) if legend else []
    for r, (label, series) in enumerate(groups.items()):
        y = top + r * row_h
        row = [f"<title>{_esc(label)}</title>", _text(label_w - _PAD, y + len(names) * _BAR_H / 2, shorten(str(label)), "end")]
        row += [mark for j, name in enumerate(names) if name in series
                for mark in _bar(series[name], zero, scale, y + j * _BAR_H, _COLORS[j % len(_COLORS)])]
        marks.append(f"<g>{''.join(row)}</g>")
    bottom = top + len(groups) * row_h - _ROW_GAP
    marks.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 3}" y2="{bottom + 3}" stroke="#333"/>')
    return _chart(title, bottom + _PAD, marks, caption)


def _bar(value: float, zero: float, scale: float, y: float, color: str) -> list[str]:
    """A bar from the zero line (at least 1 unit long unless the value is 0) and the value beyond its end."""
    width = max(abs(value) * scale, 1.0) if value else 0.0
    x = zero - width if value < 0 else zero
    label = _text(x - 3, y + _BAR_H / 2, fmt(value), "end") if value < 0 else _text(x + width + 3, y + _BAR_H / 2, fmt(value))
    return [_rect("bar", x, y + 1, width, _BAR_H - 2, color), label]


def histogram_chart(title: str, histogram: dict) -> str:
    """Each subset's share of its records per bin, the subsets side by side, and the out-of-range counts as end bars.

    ``histogram``: ``edges`` (bins + 1), and per subset ``counts`` (bins), ``underflow`` and
    ``overflow`` (``metrics.score_distributions``). Axes: evenly spaced round ticks on both.
    """
    edges = histogram.get("edges")
    binned = {s: [histogram["underflow"].get(s, 0), *histogram["counts"][s], histogram["overflow"].get(s, 0)]
              for s in _subsets(histogram["counts"])}
    binned = {s: counts for s, counts in binned.items() if sum(counts)}
    if not edges or not binned:
        return f"<p>{_esc(title)}: no values.</p>"
    shares = {s: [n / sum(counts) for n in counts] for s, counts in binned.items()}
    peak = max(max(values) for values in shares.values())
    ends = (f"< {fmt(edges[0])}", f"> {fmt(edges[-1])}")
    ranges = [ends[0], *(f"{fmt(a)} to {fmt(b)}" for a, b in zip(edges, edges[1:])), ends[1]]
    y_ticks = nice_ticks(0.0, peak, 4)
    y_labels = [_percent(t, y_ticks[1] - y_ticks[0]) for t in y_ticks]
    left = max(map(text_width, y_labels)) + 2 * _PAD
    end_w, gap = max(map(text_width, ends)) + _PAD, 2 * _PAD
    inner = (left + end_w + gap, CHART_WIDTH - _PAD - end_w - gap)  # x range of the bins between the end bars
    bin_w = (inner[1] - inner[0]) / (len(edges) - 1)
    slots = [(left, end_w), *((inner[0] + i * bin_w, bin_w) for i in range(len(edges) - 1)), (inner[1] + gap, end_w)]
    top = FONT_SIZE + 4 * _PAD
    base = top + _PLOT_H
    marks = _legend(list(shares), top / 2)
    for tick, label in zip(y_ticks, y_labels):
        y = base - _PLOT_H * tick / peak
        marks += [f'<line x1="{left:.1f}" x2="{CHART_WIDTH - _PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>',
                  _text(left - _PAD, y, label, "end")]
    for j, (subset, values) in enumerate(shares.items()):
        for k, ((x, w), share) in enumerate(zip(slots, values)):
            bar_w = (w - 2) / len(shares)
            faded = ' fill-opacity="0.55"' if k in (0, len(slots) - 1) else ""
            tip = f"<title>{_esc(f'{subset}, {ranges[k]}: {binned[subset][k]} records ({share:.1%})')}</title>"
            marks.append(_rect("bar", x + 1 + j * bar_w, base - _PLOT_H * share / peak, bar_w, _PLOT_H * share / peak,
                               _COLORS[j % len(_COLORS)], tip, faded))
    label_y = base + FONT_SIZE
    for x in (inner[0] - gap / 2, inner[1] + gap / 2):
        marks.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{base}" stroke="#999" stroke-dasharray="3 3"/>')
    marks += [f'<line x1="{left:.1f}" x2="{CHART_WIDTH - _PAD}" y1="{base}" y2="{base}" stroke="#333"/>',
              _text(left + end_w / 2, label_y, ends[0], "middle"), _text(inner[1] + gap + end_w / 2, label_y, ends[1], "middle")]
    for tick in nice_ticks(edges[0], edges[-1], 6):
        x = inner[0] + (inner[1] - inner[0]) * (tick - edges[0]) / (edges[-1] - edges[0])
        half = text_width(fmt(tick)) / 2
        if inner[0] - gap / 2 <= x - half and x + half <= inner[1] + gap / 2:  # never over an end bar's label
            marks += [f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#333"/>', _text(x, label_y, fmt(tick), "middle")]
    return _chart(title, label_y + FONT_SIZE, marks, _histogram_caption(binned, ends))


def _histogram_caption(binned: dict[str, list[int]], ends: tuple[str, str]) -> str:
    low, high = ROBUST_RANGE
    totals = "; ".join(f"{s}: {sum(counts)} records, {counts[0]} below and {counts[-1]} above" for s, counts in binned.items())
    return (f"Equal-width bins span the robust range of the eligible pool, its {low:.0%} to {high:.0%} quantiles; outliers are "
            f"counted in the paler end bins ({ends[0]}, {ends[1]}). Bars are each subset's share of its own records ({totals}).")


def _percent(share: float, step: float) -> str:
    """``share`` in percent, with the decimals a tick ``step`` needs."""
    return f"{share * 100:.{max(0, -math.floor(math.log10(step * 100)))}f}%"


# --- tables ---


def _table(rows, head: tuple = ()) -> str:
    """A table: each row's first cell is its header cell; numbers are right-aligned, shown by ``fmt``.

    A two-cell row whose value is a list of dicts becomes its key across the table, then a table of
    the records below it (e.g. the largest duplicate groups).
    """
    header = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>" if head else ""
    body = "".join(_records_rows(row[0], row[1]) if len(row) == 2 and _is_records(row[1])
                   else f"<tr><th>{_esc(row[0])}</th>{''.join(map(_cell, row[1:]))}</tr>" for row in rows)
    return f'<div class="scroll"><table>{header}{body}</table></div>'


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _records_rows(key: str, records: list[dict]) -> str:
    """``key`` across two columns, then a numbered row per record and a column per key (scalars first)."""
    keys = {k: isinstance(v, (dict, list)) for record in records for k, v in record.items()}
    columns = sorted(keys, key=lambda k: (keys[k], order_key(k)))
    table = _table([[i, *(record.get(k) for k in columns)] for i, record in enumerate(records)], ("#", *columns))
    return f'<tr><th colspan="2">{_esc(key)}</th></tr><tr><td colspan="2">{table}</td></tr>'


def _cell(value) -> str:
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return f'<td class="num">{_esc(fmt(value))}</td>' if numeric else f"<td>{_esc(fmt(value))}</td>"


def _columns_table(columns: dict[str, dict], corner: str = "") -> str:
    """Dicts side by side: a row per flattened key, a column per dict ("–" where one lacks the key)."""
    flat = {name: dict(flatten(value)) for name, value in columns.items()}
    keys = list(dict.fromkeys(key for rows in flat.values() for key in rows))
    return _table([[key, *(rows.get(key) for rows in flat.values())] for key in keys], (corner, *columns))


# --- sections ---


def _metric_table(name: str, value) -> list[str]:
    return [_table(flatten(value if isinstance(value, dict) else {name: value}))]


def _selection_section(name: str, selection: dict) -> list[str]:
    """Totals; with several clusters, bar charts of the largest clusters and a table of them all."""
    pool, quota = selection.get("pool", {}), selection.get("quota", {})
    totals = {"clusters": len(pool), "eligible": sum(pool.values()), "selected (sum of quotas)": sum(quota.values())}
    parts = [_table(flatten({**totals, **{k: v for k, v in selection.items() if k not in ("pool", "quota")}}))]
    if len(pool) > 1:
        largest = sorted(pool, key=lambda g: (-pool[g], order_key(g)))[:MAX_BARS]
        parts += [bar_chart(f"Cluster sizes: eligible records{_of(largest, pool)}",
                            {f"cluster {g}": pool[g] for g in largest}),
                  bar_chart("Selected per cluster (same clusters)", {f"cluster {g}": quota.get(g, 0) for g in largest}),
                  _table([[g, pool[g], quota.get(g, 0)] for g in sorted(pool, key=order_key)], ("cluster", "eligible", "selected"))]
    return parts


def _of(shown, every) -> str:
    """The title suffix " (the N largest of M)" when only N of the M items of ``every`` are ``shown``."""
    return f" (the {len(shown)} largest of {len(every)})" if len(shown) < len(every) else ""


def _distributions_section(name: str, distributions: dict) -> list[str]:
    """Per score column: its histogram, then a few quantiles of each subset."""
    parts = []
    for column in sorted(distributions):
        found = distributions[column]
        quantiles = {subset: _some_quantiles(found["quantiles"][subset]) for subset in _subsets(found.get("quantiles", {}))}
        parts += [histogram_chart(f"{column}: histogram, all eligible vs selected", found["histogram"]),
                  _columns_table(quantiles, "quantile")]
    return parts


def _some_quantiles(values: list[float]) -> dict[str, float]:
    """``{level: value}`` at _QUANTILE_LEVELS of quantiles ``values`` at evenly spaced levels 0..1 (nonempty)."""
    last = len(values) - 1
    return {fmt(i / last if last else 0.0): values[i] for i in sorted({round(level * last) for level in _QUANTILE_LEVELS})}


def _vendi_section(name: str, vendi: dict) -> list[str]:
    """Each subset's Vendi score, its profile over the order q, and their statistics side by side."""
    subsets = _subsets(vendi)
    order = vendi[subsets[0]].get("q", 1)
    profiles = {s: vendi[s]["profile"] for s in subsets if vendi[s].get("profile")}
    orders = sorted({q for profile in profiles.values() for q in profile}, key=order_key)
    parts = [bar_chart(f"Vendi score (q={order}, cosine): all eligible, selected, random subset", {s: vendi[s]["vendi_score"] for s in subsets},
                       "The effective number of distinct documents (Friedman & Dieng 2023); the random subset has the selection's size.")]
    if orders:
        parts.append(grouped_bar_chart("Vendi profile over the order q", {f"q = {q}": {s: p[q] for s, p in profiles.items() if q in p} for q in orders},
                                       "Small q counts rare directions, large q only the dominant ones (Pasarkar & Dieng 2023)."))
    return [*parts, _columns_table({s: vendi[s] for s in subsets})]


def _kl_section(name: str, kl: dict) -> list[str]:
    caption = ("KL(target ‖ raw) − KL(target ‖ subset) on DSIR's hashed n-grams, in nats: above 0, the subset is closer "
               "to the target than the raw pool. The random subset, of the selection's size, is the baseline.")
    return [bar_chart("DSIR KL reduction: selected vs random subset", kl, caption), *_metric_table(name, kl)]


def _dedup_section(name: str, stats: dict) -> list[str]:
    """Bar charts of the size histograms (``*size_histogram``), then a table of the rest."""
    histograms = {key: value for key, value in stats.items() if key.endswith("size_histogram")}
    charts = [bar_chart(f"{name}: duplicate groups by size", {f"size {size}": n for size, n in sorted(h.items(), key=lambda kv: order_key(kv[0]))})
              for h in histograms.values()]
    return [*charts, *_metric_table(name, {key: value for key, value in stats.items() if key not in histograms})]


# The metrics drawn as more than a table, in page order; the others follow by name, the fitted state (fit_*) last.
_METRIC_SECTIONS = {"selection": _selection_section, "score_distributions": _distributions_section, "vendi": _vendi_section,
                    "dsir_kl": _kl_section, "dedup_exact": _dedup_section, "dedup_minhash": _dedup_section}


def _metric_rank(name: str) -> tuple:
    known = list(_METRIC_SECTIONS)
    return (known.index(name) if name in known else len(known), name.startswith("fit_"), name)


def _metric_sections(metrics: dict) -> list[str]:
    return [part for name in sorted(metrics, key=_metric_rank)
            for part in (f"<h3>{_esc(name)}</h3>", *_METRIC_SECTIONS.get(name, _metric_table)(name, metrics[name]))]


def _sample_sections(report: dict) -> list[str]:
    """A few documents per outcome (selected, then each drop reason), then per largest duplicate group."""
    counts, samples = report["counts"], report["samples"]
    totals = {"selected": counts["selected"], **counts["dropped"]}
    names = [n for n in totals if n in samples] + sorted((n for n in samples if n not in totals), key=order_key)
    parts = []
    for name in names:
        shown = f"{len(samples[name])} shown" + (f" of {totals[name]}" if name in totals else "")
        parts += [f"<h3>{_esc(name)} <small>({shown})</small></h3>", *map(_document, samples[name])]
    return parts or ["<p>No sample documents.</p>"]


def _document(doc: dict) -> str:
    """A sample's id, the id it duplicates if any, and the opening of its text (SAMPLE_CHARS at most)."""
    meta = f"<code>{_esc(doc['id'])}</code>"
    if doc.get("duplicate_of") is not None:
        meta += f" duplicate of <code>{_esc(doc['duplicate_of'])}</code>"
    opening = str(doc.get("opening", ""))
    cut = opening[:SAMPLE_CHARS] + ("…" if len(opening) > SAMPLE_CHARS else "")
    return f'<div class="doc"><div>{meta}</div><pre>{_esc(cut)}</pre></div>'


def _timing_section(report: dict) -> list[str]:
    timings, busy = report["timings_s"], report["stage_busy_s"]
    total = timings.get("total")
    rate = round(report["counts"]["input"] / total, 1) if total else None
    busiest = sorted(busy.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_BARS]
    return [_table([*([phase, s] for phase, s in timings.items()), ["documents read per second (total)", rate]]),
            bar_chart("Wall time by phase (s)", {phase: s for phase, s in timings.items() if phase != "total"}),
            bar_chart(f"Busy seconds per stage, all workers{_of(busiest, busy)}", dict(busiest))]


def render_html(report: dict) -> str:
    """report.html: one self-contained page (inline CSS and SVG, no scripts, no links) of ``report``, every text escaped."""
    counts = report["counts"]
    outcomes = {"selected": counts["selected"], **counts["dropped"], "invalid": counts["invalid"]}
    warnings = "".join(f"<li>{_esc(w)}</li>" for w in report["warnings"])
    options = flatten(report["options"])
    sections = [
        "<h1>winnow report</h1>",
        "<h2>Warnings</h2>", f"<ul>{warnings}</ul>" if warnings else "<p>None.</p>",
        "<h2>Counts</h2>",
        _table([key, value] for key, value in counts.items() if not isinstance(value, dict)),
        bar_chart("Records by outcome", outcomes),
        bar_chart("Invalid records by reason", counts["invalid_by_reason"]),
        "<h2>Checks</h2>",
        _table([name, "passed" if ok else "FAILED"] for name, ok in report["checks"].items()),
        "<p>Checked by:</p><ul>", *(f"<li>{_esc(by)}</li>" for by in report["checked_by"]), "</ul>",
        "<h2>Metrics</h2>", *_metric_sections(report["metrics"]),
        "<h2>Sample documents</h2>", *_sample_sections(report),
        "<h2>Timings (s)</h2>", *_timing_section(report),
        "<h2>Command</h2>", f"<pre>{_esc(shlex.join(report['command']))}</pre>",
        "<h2>Options</h2>", f"<details><summary>{len(options)} settings</summary>{_table(options)}</details>",
        "<h2>Versions</h2>", _table(flatten(report["versions"])),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>winnow report</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
