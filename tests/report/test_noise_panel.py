"""The gradient noise scale panel: a log axis (B_simple spans decades), and the values a log
axis cannot draw (B_simple <= 0, which the unbiased estimate gives early in training) left
out and said so in the panel."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.results import plots
from larsctl.results.runs import load_run


def b_simple(step: int) -> float | None:
    """Negative and zero at the first steps (tr(Sigma) estimated below 0), undefined at step 3
    (|G|^2 <= 0: the trainer writes null), then 10 -> 10^4 examples."""
    return {1: -40.0, 2: 0.0, 3: None}.get(step, 10 ** (1 + 3 * step / 30))


def noise_axes(fig):
    [ax] = [ax for ax in fig.axes if ax.get_title() == "Gradient noise scale B_simple"]
    return ax


@pytest.fixture
def measured(make_run):
    return load_run(make_run("gns", batch=64, steps_per_epoch=10, epochs=3, noise_scale=b_simple))


def test_noise_scale_is_drawn_on_a_log_axis(measured):
    fig = plots.build_figure([measured], plots.default_panels([measured]), 1200, 900, 100)
    ax = noise_axes(fig)
    assert ax.get_yscale() == "log"
    assert [a.get_yscale() for a in fig.axes if a is not ax] == ["linear"] * 4
    [line] = ax.get_lines()
    assert list(line.get_ydata()) == pytest.approx([b_simple(s) for s in range(4, 31)], rel=1e-6)
    low, high = ax.get_ylim()
    assert low <= 10 ** 1.4 and high >= 10 ** 4  # the whole range shows, decades apart


def test_values_a_log_axis_cannot_draw_are_named_in_the_panel(measured):
    fig = plots.build_figure([measured], plots.default_panels([measured]), 1200, 900, 100)
    ax = noise_axes(fig)
    notes = [text.get_text() for text in ax.texts]
    assert "B=64 LARS: 2 values <= 0 not drawn (log axis)" in notes
    for other in fig.axes:
        if other is not ax:
            assert not any("not drawn" in text.get_text() for text in other.texts)


def test_the_metric_flag_draws_the_noise_scale_on_a_log_axis_too(measured, tmp_path):
    [panel] = plots.panels_for(("train/noise_scale",))
    fig = plots.build_figure([measured], (panel,), 800, 500, 100)
    assert noise_axes(fig).get_yscale() == "log"
    out = tmp_path / "gns.png"
    result = CliRunner().invoke(cli, ["report", str(measured.job_dir), "--metric", "train/noise_scale",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


def test_a_run_whose_values_are_all_positive_has_no_note(make_run):
    run = load_run(make_run("positive", noise_scale=lambda step: 50.0 * step))
    ax = noise_axes(plots.build_figure([run], plots.default_panels([run]), 1000, 800, 100))
    assert ax.get_yscale() == "log"
    assert not [text for text in ax.texts if "not drawn" in text.get_text()]
