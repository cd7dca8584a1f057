"""``report.json`` and ``report.html``: what a run read, dropped and selected, and why.

The pipeline writes one JSON object of statistics (``STATS_FILE``); after the run this module
turns it, the timings and the environment into the report. The HTML page is one self-contained
file: tables and inline SVG bar charts, no scripts, no external resources.
"""

import html
import importlib.metadata
import json
import platform

from apache_beam.io.filesystems import FileSystems

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


def _bar_chart(title: str, values: dict[str, float]) -> str:
    """An inline SVG horizontal bar chart of ``values``."""
    if not values:
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    width, bar, label_width = 640, 22, 200
    top = max(values.values()) or 1
    rows = []
    for i, (label, value) in enumerate(values.items()):
        y = 30 + i * (bar + 6)
        length = (width - label_width - 80) * value / top
        rows.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{html.escape(str(label))}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}" fill="#4c72b0"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}">{value:g}</text>'
        )
    height = 40 + len(values) * (bar + 6)
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13"><text x="4" y="18" font-weight="bold">{html.escape(title)}</text>'
        + "".join(rows) + "</svg>"
    )


_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


# Geometry of the x-y charts: the SVG's size, and the plot area's left/top corner and size.
_CHART_W, _CHART_H, _LEFT, _TOP, _PLOT_W, _PLOT_H = 640, 300, 70, 30, 540, 220


def _xy_chart(title: str, y_labels: tuple[str, str], x_labels: tuple[str, str], marks: list[str]) -> str:
    """An inline SVG x-y chart: title, framed plot area, (top, bottom) y and (left, right) x labels, then ``marks``."""
    frame = [f'<text x="4" y="18" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{_LEFT}" y="{_TOP}" width="{_PLOT_W}" height="{_PLOT_H}" fill="none" stroke="#999"/>',
             f'<text x="{_LEFT - 6}" y="{_TOP + 10}" text-anchor="end">{y_labels[0]}</text>',
             f'<text x="{_LEFT - 6}" y="{_TOP + _PLOT_H}" text-anchor="end">{y_labels[1]}</text>',
             f'<text x="{_LEFT}" y="{_TOP + _PLOT_H + 18}">{x_labels[0]}</text>',
             f'<text x="{_LEFT + _PLOT_W}" y="{_TOP + _PLOT_H + 18}" text-anchor="end">{x_labels[1]}</text>']
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{_CHART_W}" height="{_CHART_H}" '
            f'font-family="sans-serif" font-size="12">{"".join(frame + marks)}</svg>')


def _legend(i: int, name: str, color: str, step: int) -> str:
    return f'<text x="{_LEFT + 10 + step * i}" y="{_CHART_H - 8}" fill="{color}">{html.escape(name)}</text>'


def _quantile_chart(title: str, series: dict[str, list[float]]) -> str:
    """An inline SVG line chart of quantile functions: x = quantile level 0..1, y = value."""
    series = {name: values for name, values in series.items() if values}
    if not series:
        return f"<p>{html.escape(title)}: no values.</p>"
    low = min(min(v) for v in series.values())
    high = max(max(v) for v in series.values())
    span = (high - low) or 1.0
    marks = []
    for i, (name, values) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        points = " ".join(
            f"{_LEFT + _PLOT_W * j / max(len(values) - 1, 1):.1f},{_TOP + _PLOT_H * (1 - (v - low) / span):.1f}"
            for j, v in enumerate(values)
        )
        marks.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        marks.append(_legend(i, f"— {name}", color, 110))
    return _xy_chart(title, (f"{high:.3g}", f"{low:.3g}"), ("quantile 0", "1"), marks)


def _histogram_chart(title: str, histogram: dict) -> str:
    """An inline SVG histogram: per bin, each series' share of its own records (so a small selection shows beside all)."""
    series = {name: histogram[name] for name in ("all", "selected") if sum(histogram.get(name, ()))}
    if not series:
        return f"<p>{html.escape(title)}: no values.</p>"
    edges = histogram["edges"]
    shares = {name: [n / sum(counts) for n in counts] for name, counts in series.items()}
    peak = max(max(values) for values in shares.values()) or 1.0
    bin_w = _PLOT_W / (len(edges) - 1)
    bar_w = bin_w / len(shares)
    marks = []
    for i, (name, values) in enumerate(shares.items()):
        color = _COLORS[i % len(_COLORS)]
        for j, share in enumerate(values):
            bar_h = _PLOT_H * share / peak
            marks.append(f'<rect x="{_LEFT + j * bin_w + i * bar_w:.1f}" y="{_TOP + _PLOT_H - bar_h:.1f}" '
                         f'width="{bar_w:.1f}" height="{bar_h:.1f}" fill="{color}"/>')
        marks.append(_legend(i, f"■ {name} (share per bin)", color, 160))
    return _xy_chart(title, (f"{peak:.0%}", "0"), (f"{edges[0]:.3g}", f"{edges[-1]:.3g}"), marks)


def _table(rows: dict) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v) if isinstance(v, (dict, list)) else str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _plots(report: dict) -> list[str]:
    """The charts of the method metrics that are present in the report."""
    metrics = report["metrics"]
    plots = []
    for column, histogram in metrics.get("score_histograms", {}).items():
        plots.append(_histogram_chart(f"{column}: histogram, all eligible vs selected", histogram))
    for column, quantiles in metrics.get("score_quantiles", {}).items():
        plots.append(_quantile_chart(f"{column}: distribution, all eligible vs selected", quantiles))
    selection = metrics.get("selection", {})
    if len(selection.get("pool", {})) > 1:
        largest = sorted(selection["pool"], key=lambda g: -selection["pool"][g])[:MAX_BARS]
        plots.append(_bar_chart(f"Cluster sizes (largest {len(largest)})", {f"cluster {g}": selection["pool"][g] for g in largest}))
        plots.append(_bar_chart("Selected per cluster (same clusters)", {f"cluster {g}": selection["quota"][g] for g in largest}))
    for name, key in (("dedup_exact", "group_size_histogram"), ("dedup_minhash", "cluster_size_histogram")):
        histogram = metrics.get(name, {}).get(key)
        if histogram:
            ordered = sorted(histogram.items(), key=lambda kv: int(kv[0]))
            plots.append(_bar_chart(f"{name}: duplicate groups by size", {f"size {size}": n for size, n in ordered}))
    vendi_scores = {name: metrics[f"vendi_{name}"]["vendi_score"] for name in ("all", "selected", "random") if f"vendi_{name}" in metrics}
    if vendi_scores:
        plots.append(_bar_chart("Vendi score (q=1, cosine): all eligible, selected, random subset", vendi_scores))
    if "dsir_kl" in metrics:
        plots.append(_bar_chart("DSIR KL reduction: selected vs random subset", metrics["dsir_kl"]))
    if report.get("stage_busy_s"):
        plots.append(_bar_chart("Busy seconds per stage (all workers)", dict(list(report["stage_busy_s"].items())[:MAX_BARS])))
    return plots


def render_html(report: dict) -> str:
    """report.html: counts, outcome and method charts, metrics, timings, command and versions."""
    counts = report["counts"]
    outcomes = {"selected": counts["selected"], **counts["dropped"], "invalid": counts["invalid"]}
    run_s = report["timings_s"].get("run") or 0
    throughput = {"documents per second (run phase)": round(counts["input"] / run_s, 1) if run_s else "n/a"}
    sections = [
        "<h1>winnow report</h1>",
        "<h2>Counts</h2>",
        _table({k: v for k, v in counts.items() if not isinstance(v, dict)}),
        _bar_chart("Records by outcome", outcomes),
        _bar_chart("Invalid records by reason", counts["invalid_by_reason"]),
        "<h2>Checks</h2>",
        _table(report["checks"]),
    ]
    if report["warnings"]:
        sections += ["<h2>Warnings</h2><ul>", *(f"<li>{html.escape(w)}</li>" for w in report["warnings"]), "</ul>"]
    sections += ["<h2>Plots</h2>", *_plots(report)]
    for name, metrics in report["metrics"].items():
        if name not in ("score_quantiles", "score_histograms"):  # plotted above
            sections += [f"<h2>{html.escape(name)}</h2>", _table(metrics if isinstance(metrics, dict) else {name: metrics})]
    sections += [
        "<h2>Timings (s)</h2>",
        _table({**report["timings_s"], **throughput}),
        _bar_chart("Wall time by phase (s)", report["timings_s"]),
        "<h2>Command</h2>",
        f"<pre>{html.escape(' '.join(report['command']))}</pre>",
        "<h2>Versions</h2>",
        _table(report["versions"]),
    ]
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}svg.plot{display:block;margin:1em 0}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>winnow report</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
