"""report.html: the renderer on hand-made reports, and a combined run's page in headless Chromium (Debian's chromium package)."""

import html
import html.parser
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from winnow.pipelines import cli, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the workplace's closed network needs: no background connections, no sandbox as root.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTHS = (1400, 390)  # a desktop window and a phone
SVG_NS = "{http://www.w3.org/2000/svg}"
PLOT = re.compile(r'<svg class="plot".*?</svg>', re.S)


def make_report(**changes) -> dict:
    """A small report.json document, its top-level keys replaced by ``changes``."""
    document = {
        "command": ["winnow", "select", "--input", "raw/*", "--output", "out"],
        "options": {"job": {"name": "select", "scoring": {"dsir": {"buckets": 10, "ngrams": 2}}}, "beam_flags": []},
        "counts": {"input": 10, "valid": 9, "invalid": 1, "invalid_by_reason": {"invalid_json": 1}, "duplicates": 2,
                   "selected": 3, "dropped": {"exact_duplicate": 2, "not_selected": 4}, "target_invalid": 0},
        "checks": {"selected_rows_written": True},
        "checked_by": ["counts in the pipeline"],
        "metrics": {},
        "samples": {},
        "timings_s": {"plan": 0.1, "score": 1.0, "total": 1.1},
        "stage_busy_s": {"SelectTop": 0.5},
        "warnings": [],
        "versions": {"python": "3.11"},
    }
    return {**document, **changes}


def plots(page: str) -> list[ET.Element]:
    """Every ``<svg class="plot">`` of ``page``, parsed (each is well-formed XML); its aria-label is the chart's title."""
    return [ET.fromstring(svg) for svg in PLOT.findall(page)]


def plot(page: str, title_start: str) -> ET.Element:
    (found,) = [svg for svg in plots(page) if svg.get("aria-label").startswith(title_start)]
    return found


def row_titles(svg: ET.Element) -> list[str]:
    """The full label of each row of a bar chart (its tooltip)."""
    return [row.find(f"{SVG_NS}title").text for row in svg.iter(f"{SVG_NS}g")]


def bars(svg: ET.Element) -> list[ET.Element]:
    return [rect for rect in svg.iter(f"{SVG_NS}rect") if rect.get("class") == "bar"]


def texts(svg: ET.Element) -> dict[str, ET.Element]:
    return {text.text: text for text in svg.iter(f"{SVG_NS}text")}


def assert_texts_fit(svg: ET.Element) -> None:
    """Every text's estimated extent (report.text_width, by its anchor) lies inside the viewBox."""
    width = float(svg.get("viewBox").split()[2])
    for text in svg.iter(f"{SVG_NS}text"):
        extent = report.text_width(text.text)
        left = float(text.get("x")) - {"start": 0, "middle": extent / 2, "end": extent}[text.get("text-anchor")]
        assert 0 <= left and left + extent <= width, (svg.get("aria-label"), text.text, left, extent)


class _PageText(html.parser.HTMLParser):
    """The tags and the text of each ``<pre>`` of a page, as a browser's parser sees them."""

    def __init__(self):
        super().__init__()
        self.tags, self.pres, self._in_pre = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "pre":
            self._in_pre = True
            self.pres.append("")

    def handle_endtag(self, tag):
        self._in_pre = self._in_pre and tag != "pre"

    def handle_data(self, data):
        if self._in_pre:
            self.pres[-1] += data


@pytest.mark.parametrize("values", [{"kl_reduction_random": -0.76, "kl_reduction_selected": 1.25},
                                    {"kl_reduction_random": -0.76, "kl_reduction_selected": -0.24}])
def test_negative_values_get_bars_left_of_the_shared_zero_line_and_their_numbers(values):
    svg = plot(report.render_html(make_report(metrics={"dsir_kl": values})), "DSIR KL reduction")
    (axis,) = svg.iter(f"{SVG_NS}line")
    zero = float(axis.get("x1"))
    widths = []
    for row, (name, value) in zip(svg.iter(f"{SVG_NS}g"), values.items()):
        (bar,) = bars(row)
        x, width = float(bar.get("x")), float(bar.get("width"))
        label, number = row.findall(f"{SVG_NS}text")
        assert label.text == name and number.text == report.fmt(value)
        if value < 0:  # ends on the zero line, its number printed left of it
            assert x + width == pytest.approx(zero, abs=0.11) and number.get("text-anchor") == "end" and float(number.get("x")) < x
        else:
            assert x == pytest.approx(zero, abs=0.11) and float(number.get("x")) > x + width
        widths.append(width)
    assert widths[0] > 0 and widths[0] / widths[1] == pytest.approx(abs(-0.76 / list(values.values())[1]), rel=1e-2)
    assert_texts_fit(svg)


def test_long_labels_fit_their_column_or_are_cut_with_the_full_name_as_tooltip():
    stages = {"ntilesClusterDistanceSelected": 0.5, "CandidateRows": 0.3, "Quantiles" + "VeryLong" * 8: 0.1}
    svg = plot(report.render_html(make_report(stage_busy_s=stages)), "Busy seconds per stage")
    rows = list(svg.iter(f"{SVG_NS}g"))
    assert len(rows) == len(stages)
    for row, (name, seconds) in zip(rows, stages.items()):
        assert row.find(f"{SVG_NS}title").text == name  # the whole name, as a tooltip
        shown = row.find(f"{SVG_NS}text").text
        if len(name) <= report.MAX_LABEL_CHARS:
            assert shown == name
        else:
            assert shown.endswith("…") and name.startswith(shown[:-1]) and len(shown) == report.MAX_LABEL_CHARS
        (bar,) = bars(row)
        assert float(bar.get("width")) > 0
        # the label column: the label's right end is left of every bar
        assert float(row.find(f"{SVG_NS}text").get("x")) < float(bar.get("x"))
    assert_texts_fit(svg)


def test_histogram_has_ticks_end_bins_for_outliers_and_shares_per_subset():
    edges = [i / 10 for i in range(11)]
    histogram = {"edges": edges, "counts": {"all": [1, 2, 4, 8, 16, 16, 8, 4, 2, 1], "selected": [0, 0, 0, 0, 1, 2, 1, 0, 0, 0]},
                 "underflow": {"all": 5, "selected": 0}, "overflow": {"all": 3, "selected": 1}}
    distributions = {"winnow_dsir_log_weight": {"histogram": histogram, "quantiles": {"all": [0.0, 0.5, 1.0], "selected": [0.4, 0.5, 0.6]}}}
    page = report.render_html(make_report(metrics={"score_distributions": distributions}))
    svg = plot(page, "winnow_dsir_log_weight: histogram")
    labels = texts(svg)
    assert "< 0" in labels and "> 1" in labels  # the end bins
    x_ticks = [float(t) for t in labels if re.fullmatch(r"0\.\d", t)]
    assert len(x_ticks) >= 3 and len({round(b - a, 9) for a, b in zip(x_ticks, x_ticks[1:])}) == 1  # evenly spaced
    y_ticks = [t for t in labels if t.endswith("%")]
    assert len(y_ticks) >= 3 and y_ticks[0] == "0%"
    drawn = bars(svg)
    assert len(drawn) == 2 * (len(edges) + 1)  # per subset: the bins and the two end bins
    heights = {subset: [float(r.get("height")) for r in drawn if r.find(f"{SVG_NS}title").text.startswith(subset + ",")]
               for subset in ("all", "selected")}
    assert sum(heights["all"]) == pytest.approx(sum(heights["selected"]), rel=1e-2)  # shares: each subset sums to 100%
    assert heights["all"][0] > 0 and heights["all"][-1] > 0 and heights["selected"][0] == 0 and heights["selected"][-1] > 0
    underflow_end = max(float(r.get("x")) + float(r.get("width")) for r in drawn if ", < 0:" in r.find(f"{SVG_NS}title").text)
    first_bin = min(float(r.get("x")) for r in drawn if ", 0 to 0.1:" in r.find(f"{SVG_NS}title").text)
    assert underflow_end < first_bin  # set apart from the bins
    assert "robust range" in page and "1% to 99% quantiles" in page and "end bins" in page
    assert_texts_fit(svg)


def test_sample_documents_and_every_other_text_are_escaped_and_inert():
    evil = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>" + "x" * 400
    samples = {"selected": [{"id": "<b>doc-1</b>", "duplicate_of": None, "opening": evil}],
               "exact duplicate group of <i>k</i>": [{"id": "doc-2", "duplicate_of": "<i>k</i>", "opening": "same text"}]}
    page = report.render_html(make_report(samples=samples, warnings=["<script>warned()</script>"],
                                          stage_busy_s={"<svg onload=alert(3)>": 1.0}, metrics={"<style>": {"</td>": "<x>"}}))
    parsed = _PageText()
    parsed.feed(page)
    assert not {"script", "img", "b", "i", "x"} & set(parsed.tags)
    assert parsed.tags.count("svg") == len(PLOT.findall(page))
    assert evil[: report.SAMPLE_CHARS] + "…" in parsed.pres  # the opening, cut, as text
    assert "same text" in parsed.pres
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<h3>exact duplicate group of &lt;i&gt;k&lt;/i&gt; <small>(1 shown)</small></h3>" in page
    assert "duplicate of <code>&lt;i&gt;k&lt;/i&gt;</code>" in page
    assert page.index("<h3>selected <small>(1 shown of 3)</small></h3>") < page.index("<h3>exact duplicate group of")


def test_metrics_are_flattened_tables_in_a_fixed_order_with_numbers_formatted():
    assert report.flatten({"targets": [{"share": 0.5}], "b": 1, "config": {"bands": 12},
                           "profile": {"inf": 1.0, "0.5": 2.0, "10": 4.0, "2": 3.0}}) == [
        ("b", 1), ("config.bands", 12), ("profile[0.5]", 2.0), ("profile[2]", 3.0), ("profile[10]", 4.0), ("profile[inf]", 1.0),
        ("targets", [{"share": 0.5}])]
    metrics = {"fit_dsir": {"target_tokens": 21942, "targets": [{"documents": 74, "share": 0.123456789, "tokens": 21942}]},
               "zz_other": {"nested": {"deeper": {"value": -0.7804524539285496}}},
               "dedup_exact": {"dropped": 2, "size_histogram": {"2": 1, "11": 1}, "largest": [{"ids": ["a", "b"], "kept": "a", "size": 2}]},
               "selection": {"pool": {"0": 5}, "quota": {"0": 3}}}
    page = report.render_html(make_report(metrics=metrics))
    order = [page.index(f"<h3>{name}</h3>") for name in ("selection", "dedup_exact", "zz_other", "fit_dsir")]
    assert order == sorted(order)
    assert '<th>nested.deeper.value</th><td class="num">-0.7805</td>' in page
    assert '<th>target_tokens</th><td class="num">21942</td>' in page
    # a list of records is a table of its own: a row per record, a column per key
    assert '<tr><th>#</th><th>documents</th><th>share</th><th>tokens</th></tr><tr><th>0</th><td class="num">74</td><td class="num">0.1235</td>' in page
    assert '<tr><th>#</th><th>kept</th><th>size</th><th>ids</th></tr><tr><th>0</th><td>a</td><td class="num">2</td><td>[a, b]</td>' in page
    assert "{&quot;" not in page and '{"' not in page  # no raw JSON
    assert row_titles(plot(page, "dedup_exact: duplicate groups by size")) == ["size 2", "size 11"]


@pytest.mark.parametrize(("value", "shown"), [(3079, "3079"), (-0.7804524539285496, "-0.7805"), (255.99999999999994, "256"),
                                              (True, "true"), (None, "–"), ([1, 2.5], "[1, 2.5]")])
def test_fmt(value, shown):
    assert report.fmt(value) == shown


@pytest.mark.parametrize(("low", "high"), [(0.2256, 1.0086), (-2276.8, 683.1), (0.0, 0.4), (1e-6, 3e-6)])
def test_nice_ticks_are_round_evenly_spaced_and_inside_the_range(low, high):
    ticks = report.nice_ticks(low, high)
    assert 3 <= len(ticks) <= 6
    assert low <= ticks[0] and ticks[-1] <= high
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    assert re.fullmatch(r"[125]e[-+]\d+", f"{steps.pop():.0e}")


def test_cluster_charts_only_with_several_clusters():
    one = report.render_html(make_report(metrics={"selection": {"pool": {"0": 9}, "quota": {"0": 3}}}))
    several = report.render_html(make_report(metrics={"selection": {"pool": {"0": 5, "1": 2, "2": 2}, "quota": {"0": 1, "1": 1, "2": 1}}}))
    assert "Cluster sizes" not in one and "Selected per cluster" not in one
    sizes, selected = plot(several, "Cluster sizes"), plot(several, "Selected per cluster")
    assert row_titles(sizes) == row_titles(selected) == ["cluster 0", "cluster 1", "cluster 2"]  # the largest first
    assert len(bars(sizes)) == len(bars(selected)) == 3


@pytest.fixture(scope="module")
def combined_report(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("report") / "out"
    assert cli.main(["select", "--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*.jsonl"),
                     "--output", str(output), "--method", "combined", "--dedup", "exact,minhash", "--kmeans-k", "6",
                     "--num-select", "60"]) == 0
    return output


def test_combined_report_page_has_every_section_and_chart(combined_report):
    document = json.loads((combined_report / "report.json").read_text())
    metrics = document["metrics"]
    for key in ("score_distributions", "selection", "dedup_exact", "dedup_minhash", "vendi", "dsir_kl"):
        assert key in metrics, key
    assert set(metrics["vendi"]) == {"all", "selected", "random"}
    for distribution in metrics["score_distributions"].values():
        histogram = distribution["histogram"]
        for subset, total in (("selected", document["counts"]["selected"]), ("all", sum(metrics["selection"]["pool"].values()))):
            assert sum(histogram["counts"][subset]) + histogram["underflow"][subset] + histogram["overflow"][subset] == total
    assert {"selected", "exact_duplicate", "near_duplicate"} <= set(document["samples"])
    assert any(name.startswith(("exact duplicate group of", "near-duplicate cluster of")) for name in document["samples"])
    page = (combined_report / "report.html").read_text()
    titles = [svg.get("aria-label") for svg in plots(page)]
    for title in ("Records by outcome", "Invalid records by reason", "Vendi score", "Vendi profile over the order q", "DSIR KL reduction",
                  "dedup_exact: duplicate groups by size", "dedup_minhash: duplicate groups by size", "Wall time by phase",
                  "Busy seconds per stage", *(f"{column}: histogram" for column in metrics["score_distributions"])):
        assert any(t.startswith(title) for t in titles), title
    for svg in plots(page):
        assert any(float(bar.get("width")) > 0 for bar in bars(svg)), svg.get("aria-label")
        assert_texts_fit(svg)
    for heading in ("Warnings", "Counts", "Checks", "Metrics", "Sample documents", "Timings (s)", "Command", "Options", "Versions"):
        assert f"<h2>{heading}</h2>" in page
    # self-contained: no script, no link, and no URL but the SVG namespace outside the sample documents' text
    outside_samples = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S).replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import|http", outside_samples)


# The harness page (not the report, which has no script) loads report.html in an iframe of the given
# width, then writes what the browser measured into its own DOM for --dump-dom.
MEASURE = """<!DOCTYPE html><html><body style="margin:0"><iframe id="report" src="%s" width="%d" height="900" style="border:0"></iframe>
<script>addEventListener("load", () => {
  const frame = document.getElementById("report"), doc = frame.contentDocument;
  const charts = [...doc.querySelectorAll("svg.plot")].map(svg => {
    const box = svg.viewBox.baseVal, texts = [...svg.querySelectorAll("text")];
    const overflow = Math.max(...texts.map(t => { const b = t.getBBox();
      return Math.max(box.x - b.x, b.x + b.width - box.x - box.width, box.y - b.y, b.y + b.height - box.y - box.height); }));
    const bars = [...svg.querySelectorAll("rect.bar")].filter(r => r.getBoundingClientRect().width > 0).length;
    return {title: svg.getAttribute("aria-label"), bars, texts: texts.length, overflow, right: svg.getBoundingClientRect().right};
  });
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({width: frame.contentWindow.innerWidth, scrollWidth: doc.documentElement.scrollWidth, charts});
  document.body.appendChild(out);
});</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt-get)")
@pytest.mark.parametrize("width", WIDTHS)
def test_report_renders_in_headless_chromium_without_clipping(combined_report, tmp_path, width):
    page = combined_report / "report.html"
    harness = tmp_path / "measure.html"
    harness.write_text(MEASURE % (page.as_uri(), width))
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--allow-file-access-from-files", "--window-size=1500,1000", "--dump-dom", harness.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    layout = json.loads(html.unescape(re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S).group(1)))
    assert layout["width"] == width
    assert layout["scrollWidth"] <= width  # nothing wider than the window: the charts shrink
    assert [chart["title"] for chart in layout["charts"]] == [svg.get("aria-label") for svg in plots(page.read_text())]
    for chart in layout["charts"]:
        assert chart["bars"] >= 1 and chart["texts"] >= 2, chart
        assert chart["overflow"] <= 0.5, chart  # every text inside its chart, measured with the browser's fonts
        assert chart["right"] <= width, chart
    screenshot = tmp_path / f"report-{width}.png"
    subprocess.run([*common, f"--screenshot={screenshot}", f"--window-size={width},2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == width and len(png) > 20_000
