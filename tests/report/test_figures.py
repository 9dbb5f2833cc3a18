"""The report figure (PNG), its HTML page and the compare table, from real job directories."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from larsctl.results import plots, tables
from larsctl.results.runs import load_run


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def two_runs(make_run):
    return [load_run(make_run("small", batch=64, steps_per_epoch=20, epochs=3)),
            load_run(make_run("large", batch=512, steps_per_epoch=5, epochs=3, optimizer="lamb"))]


@pytest.mark.parametrize("width, height, dpi", [(1600, 1000, 100), (1234, 777, 130), (640, 480, 72)])
def test_png_has_the_requested_pixel_size(two_runs, width, height, dpi):
    png = plots.png_bytes(plots.build_figure(two_runs, plots.DEFAULT_PANELS, width, height, dpi))
    image = Image.open(io.BytesIO(png))
    image.verify()  # a truncated or corrupt PNG raises here
    assert (image.format, image.size) == ("PNG", (width, height))


def test_one_line_per_job_per_curve_with_legend_by_batch_and_optimizer(two_runs):
    fig = plots.build_figure(two_runs, plots.DEFAULT_PANELS, 1600, 1000, 100)
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["B=64 LARS", "B=512 LAMB"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Training loss", "Top-1 and top-5 accuracy", "Learning rate", "Throughput"]
    per_panel = [[line.get_label() for line in ax.get_lines()] for ax in fig.axes]
    assert per_panel[0] == ["B=64 LARS train", "B=512 LAMB train"]
    assert per_panel[1] == ["B=64 LARS train top-1", "B=64 LARS val top-1", "B=64 LARS val top-5",
                            "B=512 LAMB train top-1", "B=512 LAMB val top-1", "B=512 LAMB val top-5"]
    # Against epochs: both runs end at epoch 3 although their step counts differ (60 vs 15).
    for line in fig.axes[0].get_lines():
        assert line.get_xdata()[-1] == pytest.approx(3.0)
    val = fig.axes[1].get_lines()[1]
    assert list(val.get_xdata()) == [1.0, 2.0, 3.0]
    assert val.get_ydata()[-1] == pytest.approx(100 * two_runs[0].curves["val/accuracy"][-1].value)


def test_each_job_colour_is_drawn_in_the_png(two_runs):
    png = plots.png_bytes(plots.build_figure(two_runs, plots.DEFAULT_PANELS, 800, 600, 100))
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    drawn = {tuple(int(c) for c in pixel) for pixel in np.unique(pixels, axis=0)}
    for colour in plots._colours()[:2]:  # tab10 blue and orange
        assert tuple(round(255 * c) for c in to_rgb(colour)) in drawn


def test_metric_flag_selects_panels_and_rejects_unknown_tags(two_runs):
    panels = plots.panels_for(("val/accuracy", "train/lr", "val/accuracy"))
    fig = plots.build_figure(two_runs, panels, 1000, 400, 100)
    assert [ax.get_title() for ax in fig.axes] == ["Validation top-1", "Learning rate"]
    with pytest.raises(ValueError, match="unknown metric 'val/acc'; expected one of train/loss"):
        plots.panels_for(("val/acc",))


def test_same_batch_and_optimizer_are_told_apart_by_job_name(make_run):
    runs = [load_run(make_run("seed1")), load_run(make_run("seed2"))]
    fig = plots.build_figure(runs, plots.DEFAULT_PANELS, 800, 600, 100)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["B=64 LARS (seed1)", "B=64 LARS (seed2)"]


def test_html_embeds_the_png_and_the_final_numbers(two_runs):
    png = plots.png_bytes(plots.build_figure(two_runs, plots.DEFAULT_PANELS, 900, 600, 100))
    page = plots.html_page(png, [run.summary() for run in two_runs])
    embedded = base64.b64decode(re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)[1])
    assert embedded == png
    for run in two_runs:
        val = [r for r in jsonl(run.job_dir / "metrics.jsonl") if r["kind"] == "val"]
        best = max(r["accuracy"] for r in val)
        assert f"<td>{run.name}</td>" in page
        assert f"<td>{100 * best:.2f}%</td>" in page
        assert f"<td>{100 * val[-1]['accuracy']:.2f}%</td>" in page
    assert "<th>Effective batch</th><th>Batch</th><th>Base LR</th>" in page
    assert "<td>64</td><td>32</td><td>5.657 (2^2.5)</td><td>0.1562 (10/2^6)</td><td>1e-05</td>" in page
    # GPU-hours of the small run: 2 GPUs x (60 steps + 1 s) / 3600.
    assert f"<td>{2 * 61 / 3600:.3g}</td>" in page


def test_compare_table_is_sorted_by_effective_batch_in_the_reference_form(make_run):
    summaries = [load_run(make_run(name, batch=batch)).summary()
                 for name, batch in (("b", 4096), ("a", 512), ("c", 1024))]
    lines = tables.compare_table(summaries).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(tables.COLUMNS)
    assert set(lines[1]) <= set("|:- ")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[1] for row in rows] == ["512", "1024", "4096"]
    assert rows[0][2:6] == ["256", "5.657 (2^2.5)", "0.1562 (10/2^6)", "1e-05"]
    assert len({len(line) for line in lines}) == 1  # columns line up in a terminal


@pytest.mark.parametrize("value, text", [(4.0, "4 (2^2)"), (2 ** 4.5, "22.63 (2^4.5)"), (3.0, "3"),
                                         (1.0, "1"), (None, "-")])
def test_learning_rates_show_their_power_of_two(value, text):
    assert tables.power_of_two(value) == text


@pytest.mark.parametrize("value, text", [(10 / 2 ** 3, "1.25 (10/2^3)"), (5.0, "5"), (14.0, "14"),
                                         (0.0, "0.0")])
def test_warmup_shows_the_reference_rule(value, text):
    assert tables.warmup(value) == text


def test_smoothing_is_tensorboards_debiased_moving_average():
    assert plots.smooth([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    # TensorBoard: last = last * w + (1 - w) * v, shown as last / (1 - w ** n).
    assert plots.smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])
    assert plots.smooth([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # no bias towards 0


def test_smoothing_draws_training_curves_over_their_raw_values_only(two_runs):
    fig = plots.build_figure(two_runs, plots.DEFAULT_PANELS, 800, 600, 100, smoothing=0.6)
    loss = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(loss) == {"_raw B=64 LARS train", "B=64 LARS train", "_raw B=512 LAMB train",
                         "B=512 LAMB train"}
    raw = list(loss["_raw B=64 LARS train"].get_ydata())
    assert list(loss["B=64 LARS train"].get_ydata()) == pytest.approx(plots.smooth(raw, 0.6))
    assert raw == pytest.approx([p.value for p in two_runs[0].curves["train/loss"]])
    accuracy = [line.get_label() for line in fig.axes[1].get_lines()]
    assert "_raw B=64 LARS val top-1" not in accuracy and "_raw B=64 LARS train top-1" in accuracy
    assert all(not line.get_label().startswith("_raw") for line in fig.axes[2].get_lines())  # LR is exact
