"""The scaling analysis of a sweep (larsctl.results.scaling and the modules it is made of:
steps, scaling_fit, critical_batch, scaling_text, scaling_figure): steps to target, best-LR
medians, the fit, regimes, both critical batches, the figure and the text, on sweeps with a
known S_min and B_crit."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from larsctl.results.critical_batch import regime, zhang_empirical
from larsctl.results.scaling import analyse, noise_prediction, predicted_b_noise
from larsctl.results.scaling_figure import figure, figure_png
from larsctl.results.scaling_fit import fit_steps
from larsctl.results.scaling_text import render
from larsctl.results.steps import SweepRun, Target, parse_target, seed_median, steps_to_target

S_MIN, B_CRIT = 1000.0, 2048.0
BATCHES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
LR_PENALTY = (1.3, 1.0, 1.25)  # steps x this at lr/2, lr, 2 lr: the middle LR is best
TARGET = "val/accuracy>=0.9"


def records(steps: int | None, total: int = 100_000, done: bool = True) -> list[dict]:
    """Val records that first meet accuracy >= 0.9 at ``steps`` (never when None)."""
    end = total if steps is None else steps
    out = [{"kind": "train", "step": 1, "total_steps": total, "loss": 2.0, "effective_batch": 1},
           {"kind": "val", "step": max(1, end // 2), "loss": 1.5, "accuracy": 0.5, "top5": 0.8},
           {"kind": "val", "step": end, "loss": 0.5, "accuracy": 0.85 if steps is None else 0.95,
            "top5": 0.99}]
    if steps is not None:  # a later, even better evaluation must not move the answer
        out.append({"kind": "val", "step": 2 * end, "loss": 0.4, "accuracy": 0.97, "top5": 0.99})
    if done:
        out.append({"kind": "event", "event": "done", "step": out[-1]["step"]})
    return out


def synthetic_sweep(rng, optimizer="lars", s_min=S_MIN, b_crit=B_CRIT, batches=BATCHES, seeds=8,
                    sigma=0.1, penalty=LR_PENALTY) -> list[SweepRun]:
    """S(B) = s_min (1 + b_crit/B) x the LR's penalty x exp(N(0, sigma)) per seed."""
    runs = []
    for batch in batches:
        for k, factor in enumerate(penalty):
            lr = 0.1 * batch / 256 * 2.0 ** (k - 1)
            for seed in range(seeds):
                steps = round(s_min * (1 + b_crit / batch) * factor * math.exp(rng.normal(0, sigma)))
                runs.append(SweepRun(f"{optimizer}-{batch}-{k}-{seed}", batch, optimizer, lr, seed,
                                     records(steps)))
    return runs


@pytest.fixture(scope="module")
def report():
    return analyse(synthetic_sweep(np.random.default_rng(7)), TARGET, n_boot=500, seed=3)


# -- targets --------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("val/accuracy>=0.9", Target("val", "accuracy", ">=", 0.9)),
    ("val/loss <= 1.2e0", Target("val", "loss", "<=", 1.2)),
    (" train/loss<=0.5 ", Target("train", "loss", "<=", 0.5)),
    ("val/top5>=.8", Target("val", "top5", ">=", 0.8)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected
    assert parse_target(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "accuracy>=0.9", "val/accuracy=0.9", "val/accuracy==0.9",
                                  "val/accuracy>=", "val/accuracy>=abc", "event/step>=3",
                                  "val/accuracy>=0.9 and more", "val/>=0.9", "val/accuracy>=1e999"])
def test_bad_targets_name_the_text(text):
    with pytest.raises(ValueError) as info:
        parse_target(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("op, met", [(">=", [False, True, True]), ("<=", [True, True, False])])
def test_target_ops(op, met):
    target = Target("val", "accuracy", op, 0.9)
    assert [target.met(v) for v in (0.8, 0.9, 0.95)] == met


# -- steps to target --------------------------------------------------------------
def test_steps_to_target_is_the_first_evaluation_meeting_it():
    recs = [{"kind": "train", "step": 50, "accuracy": 0.99, "loss": 0.1},  # train: not an evaluation
            {"kind": "val", "step": 100, "accuracy": 0.5, "loss": 2.0},
            {"kind": "val", "step": 200, "accuracy": 0.91, "loss": 1.1},
            {"kind": "val", "step": 300, "accuracy": 0.85, "loss": 0.9},
            {"kind": "val", "step": 400, "accuracy": 0.95, "loss": 0.8}]
    assert steps_to_target(recs, parse_target("val/accuracy>=0.9")) == 200
    assert steps_to_target(recs, parse_target("val/accuracy>=0.92")) == 400
    assert steps_to_target(recs, parse_target("val/loss<=1")) == 300
    assert steps_to_target(recs, parse_target("train/accuracy>=0.9")) == 50
    assert steps_to_target(recs, parse_target("val/accuracy>=0.99")) is None
    assert steps_to_target(list(reversed(recs)), parse_target(TARGET)) == 200


def test_torn_or_absent_val_series():
    target = parse_target(TARGET)
    torn = [{"kind": "val", "step": 100},  # no accuracy at all
            {"kind": "val", "step": 200, "accuracy": None},
            {"kind": "val", "step": 300, "accuracy": float("nan")},
            {"kind": "val", "step": 350, "accuracy": True},  # not a number
            {"kind": "val", "accuracy": 0.99},  # no step
            {"kind": "val", "step": 400, "accuracy": 0.93}]
    assert steps_to_target(torn, target) == 400
    assert steps_to_target([{"kind": "train", "step": 10, "loss": 1.0}], target) is None
    assert steps_to_target([], target) is None


# -- medians and the best LR -------------------------------------------------------
@pytest.mark.parametrize("steps, median", [
    ([100, 120, 110], 110), ([100, 200], 150), ([100, 120, None], 120), ([100, None, None], None),
    ([100, None], 100), ([100, 200, None, None], 200), ([100, 200, 300, None], 250),
    ([None], None), ([None, None], None), ([7], 7)])
def test_seed_median(steps, median):
    assert seed_median(steps) == median


def test_best_lr_is_the_smallest_median_and_cells_with_too_many_misses_do_not_count():
    cells = {0.1: [100, 110, 120], 0.2: [90, None, 95], 0.4: [50, None, None]}
    runs = [SweepRun(f"j{lr}-{seed}", 256, "lars", lr, seed, records(steps))
            for lr, seeds in cells.items() for seed, steps in enumerate(seeds)]
    result = analyse(runs, TARGET, n_boot=0)
    batch = result.optimizer("LARS").batches[0]
    assert [(c.lr, c.reached, c.median_steps) for c in batch.cells] == [
        (0.1, 3, 110), (0.2, 2, 95), (0.4, 1, None)]
    assert batch.best_lr == 0.2 and batch.median_steps == 95
    assert batch.median_examples == 95 * 256
    assert batch.best.steps == (90, None, 95)  # per seed, kept for the bootstrap
    assert result.runs[0].examples == 100 * 256


def test_a_batch_where_no_lr_reaches_has_no_best():
    runs = [SweepRun(f"j{seed}", 512, "sgd", 0.1, seed, records(None)) for seed in range(3)]
    batch = analyse(runs, TARGET, n_boot=0).optimizers[0].batches[0]
    assert batch.best is None and batch.best_lr is None and batch.median_steps is None


# -- the fit ----------------------------------------------------------------------------
def test_fit_is_exact_on_noiseless_steps():
    steps = [S_MIN * (1 + B_CRIT / b) for b in BATCHES]
    s_min, b_crit, rms, edge = fit_steps(BATCHES, steps)
    assert s_min == pytest.approx(S_MIN, rel=1e-6)
    assert b_crit == pytest.approx(B_CRIT, rel=1e-6)
    assert rms < 1e-6 and edge is None


@pytest.mark.parametrize("steps, edge", [([1e6 / b for b in BATCHES], "high"),  # perfect scaling
                                         ([500.0] * len(BATCHES), "low")])  # flat
def test_fit_says_when_b_crit_is_outside_the_data(steps, edge):
    assert fit_steps(BATCHES, steps)[3] == edge


def test_fit_recovers_b_crit_and_the_interval_covers_it(report):
    fit = report.optimizer("lars").fit
    # 8 seeds with 10% multiplicative noise: over 40 such sweeps the fitted B_crit was within
    # 10% of the truth (standard deviation 4%); 20% is five standard deviations.
    assert fit.b_crit == pytest.approx(B_CRIT, rel=0.2)
    assert fit.s_min == pytest.approx(S_MIN, rel=0.2)
    lo, hi = fit.b_crit_interval
    assert lo <= B_CRIT <= hi
    assert hi / lo < 1.6  # an interval, not "anything"
    assert fit.s_min_interval[0] <= S_MIN <= fit.s_min_interval[1]
    assert fit.bootstrap_used == fit.bootstrap_n == 500
    assert fit.batches == BATCHES and fit.edge is None


def test_bootstrap_interval_covers_the_truth_across_sweeps():
    covered = 0
    for k in range(20):
        fit = analyse(synthetic_sweep(np.random.default_rng(100 + k), seeds=6,
                                      batches=BATCHES[::2], penalty=(1.0,)),
                      TARGET, n_boot=200, seed=k).optimizers[0].fit
        lo, hi = fit.b_crit_interval
        covered += lo <= B_CRIT <= hi
    assert covered >= 16  # nominal 95%: 19 of 20 expected


def test_bootstrap_is_reproducible_and_seeded():
    runs = synthetic_sweep(np.random.default_rng(1), seeds=4, batches=BATCHES[::2], penalty=(1.0,))
    a = analyse(runs, TARGET, n_boot=100, seed=5).optimizers[0].fit
    b = analyse(runs, TARGET, n_boot=100, seed=5).optimizers[0].fit
    c = analyse(runs, TARGET, n_boot=100, seed=6).optimizers[0].fit
    assert a == b
    assert a.b_crit_interval != c.b_crit_interval


def test_regimes_as_defined(report):
    o = report.optimizer("lars")
    b_crit = o.fit.b_crit
    for r in o.regimes:
        expected = ("perfect scaling" if r.effective_batch <= b_crit / 3 else
                    "maximal parallelism" if r.effective_batch >= 3 * b_crit else "diminishing returns")
        assert r.regime == expected
        assert r.over_linear == pytest.approx(1 + r.effective_batch / b_crit)
        assert r.over_min == pytest.approx(1 + b_crit / r.effective_batch)
    # With the true B_crit = 2048: <= 683 perfect, >= 6144 maximal.
    assert [r.regime for r in o.regimes] == ["perfect scaling"] * 3 + ["diminishing returns"] * 3 \
        + ["maximal parallelism"] * 3
    # The thresholds mean: steps within 33% of the linear-scaling line / of S_min.
    assert regime(100, 300) == "perfect scaling"
    assert regime(101, 300) == "diminishing returns"
    assert regime(899, 300) == "diminishing returns"
    assert regime(900, 300) == "maximal parallelism"


def test_fewer_than_three_batches_reaching_gives_no_fit_with_the_reason():
    runs = [SweepRun(f"j{b}-{s}", b, "lars", 0.1, s,
                     records(round(S_MIN * (1 + B_CRIT / b)) if b <= 512 else None))
            for b in (256, 512, 1024, 2048) for s in range(3)]
    o = analyse(runs, TARGET, n_boot=50).optimizers[0]
    assert o.fit is None and o.regimes == () and o.zhang_model is None
    assert "2 of 4 batch sizes reached val/accuracy>=0.9 (B = 256, 512)" in o.no_fit_reason
    assert "at least 3" in o.no_fit_reason
    assert o.no_fit_reason in render(analyse(runs, TARGET, n_boot=50))


def test_one_seed_per_batch_fits_without_an_interval():
    runs = [SweepRun(f"j{b}", b, "lars", 0.1, 0, records(round(S_MIN * (1 + B_CRIT / b))))
            for b in BATCHES]
    fit = analyse(runs, TARGET).optimizers[0].fit
    assert fit.b_crit == pytest.approx(B_CRIT, rel=0.01)  # rounding to whole steps only
    assert fit.b_crit_interval is None and "one seed" in fit.interval_note


# -- the two critical-batch definitions and the noise-scale prediction ------------------
def test_zhang_measured_interpolates_in_log_log():
    # Ratios to the smallest batch's linear extrapolation: 1, 1.2^0.5, 1.2^1.5 -> crossing at
    # halfway in log B between 200 and 400.
    steps = [1000.0, 1.2 ** 0.5 * 1000 * 100 / 200, 1.2 ** 1.5 * 1000 * 100 / 400]
    value, note = zhang_empirical([100, 200, 400], steps)
    assert value == pytest.approx(200 * math.sqrt(2))
    assert "between B=200 and B=400" in note
    value, note = zhang_empirical([100, 200, 400], [1000.0, 520.0, 270.0])
    assert value is None and "above the measured range" in note
    assert zhang_empirical([100], [1000.0])[0] is None


def test_zhang_under_the_model_and_measured(report):
    o = report.optimizer("lars")
    assert o.zhang_model == pytest.approx(0.2 * o.fit.b_crit)
    # Measured against B0 = 128, which is itself 1 + 128/2048 above the linear line: under the
    # model the crossing is at 1.2 B0 + 0.2 B_crit = 563; log-log interpolation between 512 and
    # 1024 and the noise move it somewhat.
    assert o.zhang_measured == pytest.approx(1.2 * 128 + 0.2 * B_CRIT, rel=0.25)


def test_predicted_b_noise_ratio_as_measured():
    runs = synthetic_sweep(np.random.default_rng(2), seeds=3, batches=BATCHES[::2], penalty=(1.0,))
    runs += synthetic_sweep(np.random.default_rng(3), optimizer="sgd", b_crit=512, seeds=3,
                            batches=BATCHES[::2], penalty=(1.0,))
    rep = analyse(runs, TARGET, predicted_b_noise={"LARS": 1000.0}, n_boot=50)
    lars, sgd = rep.optimizer("lars"), rep.optimizer("sgd")
    assert lars.b_crit_over_predicted == pytest.approx(lars.fit.b_crit / 1000.0)
    assert sgd.predicted_b_noise is None and sgd.b_crit_over_predicted is None
    rep = analyse(runs, TARGET, predicted_b_noise=700.0, n_boot=0)
    assert [o.predicted_b_noise for o in rep.optimizers] == [700.0, 700.0]
    with pytest.raises(ValueError, match="predicted_b_noise"):
        analyse(runs, TARGET, predicted_b_noise=-1.0, n_boot=0)


def test_predicted_b_noise_from_the_runs_records():
    def run(job, optimizer, value):
        recs = [{"kind": "train", "step": s, "total_steps": 100, "noise_scale": value}
                for s in (10, 50, 100)]
        return SweepRun(job, 256, optimizer, 0.1, int(value), recs)

    runs = [run("a", "lars", 100.0), run("b", "lars", 300.0), run("c", "sgd", 1000.0),
            SweepRun("d", 256, "lars", 0.2, 0, records(10))]  # logged none: left out
    assert predicted_b_noise(runs, "lars") == 200.0
    assert predicted_b_noise(runs) == 300.0
    assert predicted_b_noise(runs[3:]) is None



def test_the_report_names_the_noise_scale_each_prediction_used():
    """A LARS run that logged the trust-ratio-preconditioned noise scale is predicted from it, and
    the report says so: it is not B_simple (the study's report once called it B_simple)."""
    def run(job, optimizer, lars):
        recs = [{"kind": "train", "step": s, "total_steps": 100, "noise_scale": 1000.0,
                 **({"noise_scale_lars": 100.0} if lars else {})} for s in (10, 50, 100)]
        return SweepRun(job, 256, optimizer, 0.1, 100, recs)

    noisy = [run("a", "lars", True), run("b", "sgd", False), run("c", "lars", False)]
    assert noise_prediction(noisy[:1], "lars") == (100.0, "lars-preconditioned")
    assert noise_prediction(noisy[1:2], "sgd") == (1000.0, "sgd")
    assert noise_prediction(noisy, "lars") == (550.0, "lars-preconditioned, sgd")  # mixed: both named
    assert noise_prediction(noisy, "lamb") == (None, None)
    runs = synthetic_sweep(np.random.default_rng(2), seeds=1, batches=BATCHES[::2], penalty=(1.0,))
    runs += synthetic_sweep(np.random.default_rng(3), optimizer="sgd", seeds=1, batches=BATCHES[::2],
                            penalty=(1.0,))
    rep = analyse(runs, TARGET, predicted_b_noise={"lars": 100.0, "sgd": 1000.0},
                  predicted_estimator={"lars": "lars-preconditioned", "sgd": "sgd"}, n_boot=0)
    assert rep.optimizer("lars").predicted_estimator == "lars-preconditioned"
    lines = [line for line in render(rep).splitlines() if line.startswith("Noise-scale prediction")]
    assert len(lines) == 2
    assert "trust-ratio-preconditioned" in lines[0] and "B_simple" not in lines[0]
    assert "B_simple" in lines[1] and "preconditioned" not in lines[1]
    assert rep.to_dict()["optimizers"][0]["predicted_estimator"] == "lars-preconditioned"

# -- input checks ----------------------------------------------------------------------
def test_bad_runs_are_named():
    with pytest.raises(ValueError, match="j1: effective_batch"):
        SweepRun("j1", 0, "lars", 0.1, 0)
    with pytest.raises(ValueError, match="j2: lr"):
        SweepRun("j2", 256, "lars", float("nan"), 0)
    assert SweepRun("j3", 256, "lars", 0.1, 0).optimizer == "LARS"
    twins = [SweepRun("a", 256, "lars", 0.1, 0, records(10)), SweepRun("b", 256, "LARS", 0.1, 0)]
    with pytest.raises(ValueError, match="b: the same optimizer, batch, lr and seed as a"):
        analyse(twins, TARGET)
    with pytest.raises(ValueError, match="meets it at step 0"):
        analyse([SweepRun("z", 256, "lars", 0.1, 0,
                          [{"kind": "val", "step": 0, "accuracy": 0.95}])], TARGET)
    with pytest.raises(ValueError, match="'val/acc'"):
        analyse([], "val/acc")


# -- text, json, figure --------------------------------------------------------------------
def test_render_names_every_definition(report):
    text = render(report)
    for words in ("McCandlish et al. 2018 (arXiv 1812.06162)", "S = 2 S_min",
                  "Zhang et al. 2024 (arXiv 2410.21676)", "exceed linear scaling by 20%",
                  "under the fitted model (0.2 B_crit)", "perfect scaling B <= B_crit/3",
                  "maximal parallelism B >= 3 B_crit", "diminishing returns between",
                  "95% bootstrap over seeds", "Steps to val/accuracy>=0.9", "## LARS"):
        assert words in text
    assert render(report, markdown=False) != text


def test_render_lists_runs_still_running():
    runs = [SweepRun(f"j{b}", b, "lars", 0.1, 0, records(100 * 4096 // b)) for b in (256, 512)]
    runs.append(SweepRun("late", 1024, "lars", 0.1, 0, records(None, done=False)))
    text = render(analyse(runs, TARGET, n_boot=0))
    assert "1 run not finished and not at the target yet" in text and "late" in text


def test_to_dict_is_json(report):
    d = json.loads(json.dumps(report.to_dict()))
    assert d["target"] == TARGET
    lars = d["optimizers"][0]
    assert lars["fit"]["b_crit"] == pytest.approx(report.optimizers[0].fit.b_crit)
    assert lars["batches"][0]["best_lr"] == report.optimizers[0].batches[0].best_lr
    assert set(d["definitions"]) == {"b_crit", "zhang", "regimes"}


@pytest.mark.parametrize("width, height, dpi", [(1600, 1000, 100), (900, 640, 80)])
def test_figure_is_a_png_of_the_requested_size(width, height, dpi):
    runs = synthetic_sweep(np.random.default_rng(4), seeds=3, batches=BATCHES[::2], penalty=(1.0,))
    runs += synthetic_sweep(np.random.default_rng(5), optimizer="sgd", b_crit=512, seeds=3,
                            batches=BATCHES[1::2], penalty=(1.0,))
    rep = analyse(runs, TARGET, predicted_b_noise={"lars": 1500.0}, n_boot=20)
    png = figure_png(rep, width, height, dpi)
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert (image.format, image.size) == ("PNG", (width, height))
    fig = figure(rep, width, height, dpi)
    steps_ax = fig.axes[0]
    labels = [line.get_label() for line in steps_ax.get_lines()]
    for label in ("LARS best-LR median", "SGD best-LR median", "LARS predicted B_noise"):
        assert label in labels
    assert any(label.startswith("LARS fit, B_crit=") for label in labels)
    assert any("slope -1" in label for label in labels)
    assert steps_ax.get_xscale() == steps_ax.get_yscale() == "log"
    assert [ax.get_title() for ax in fig.axes][1:] == [
        "Examples vs steps (Pareto)", "Steps over linear scaling from the smallest batch", "Best LR"]


def test_figure_of_a_sweep_where_little_or_nothing_reached():
    for reaching in ((), (256,)):
        runs = [SweepRun(f"j{b}-{s}", b, "lars", 0.1, s, records(1000 if b in reaching else None))
                for b in (256, 512, 1024) for s in range(2)]
        rep = analyse(runs, TARGET, predicted_b_noise=300.0, n_boot=10)
        image = Image.open(io.BytesIO(figure_png(rep, 800, 600, 100)))
        assert image.size == (800, 600)
