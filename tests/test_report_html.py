"""report.html of a combined run, rendered by headless Chromium (Debian's chromium package)."""

import json
import re
import shutil
import subprocess

import pytest

from winnow.pipelines import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the workplace's closed network needs: no background connections, no sandbox as root.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def combined_report(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("report") / "out"
    assert cli.main(["select", "--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*.jsonl"),
                     "--output", str(output), "--method", "combined", "--dedup", "exact,minhash", "--kmeans-k", "6",
                     "--num-select", "60"]) == 0
    return output


def test_report_json_has_every_metric_the_page_plots(combined_report):
    document = json.loads((combined_report / "report.json").read_text())
    metrics = document["metrics"]
    for key in ("score_quantiles", "score_histograms", "selection", "dedup_exact", "dedup_minhash", "vendi_all", "vendi_selected", "vendi_random", "dsir_kl"):
        assert key in metrics, key
    assert set(metrics["score_quantiles"]) == {"dsir_log_weight", "zipfit_alignment", "cluster_distance"}
    assert set(metrics["score_histograms"]) == set(metrics["score_quantiles"])
    for histogram in metrics["score_histograms"].values():
        assert sum(histogram["selected"]) == document["counts"]["selected"] == 60
        assert sum(histogram["all"]) == sum(metrics["selection"]["pool"].values())
    assert document["stage_busy_s"]["SelectTop"] > 0
    page = (combined_report / "report.html").read_text()
    for title in ("Records by outcome", "distribution, all eligible vs selected", "histogram, all eligible vs selected", "Selected per cluster",
                  "duplicate groups by size", "Vendi score", "DSIR KL reduction", "Busy seconds per stage"):
        assert title in page, title
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page)  # self-contained


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt-get)")
def test_report_renders_in_headless_chromium_with_its_plots(combined_report, tmp_path):
    page = f"file://{combined_report / 'report.html'}"
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True).stdout
    expected_plots = (combined_report / "report.html").read_text().count('<svg class="plot"')
    assert expected_plots >= 15  # outcomes, invalid, 3 score histograms and distributions, clusters x2, dedup x2, Vendi, KL, stages
    assert dom.count('<svg class="plot"') == expected_plots
    assert "<polyline" in dom and "<rect" in dom
    screenshot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1000,3000", page],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
