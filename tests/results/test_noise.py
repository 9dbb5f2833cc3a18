"""larsctl.results.noise: B_simple over training progress, the trade-off, the limits text."""
from __future__ import annotations

import json

import pytest

from larsctl.results import noise


def train(step, value, total=1000, **extra):
    return {"kind": "train", "step": step, "total_steps": total, "epoch": step / 100,
            "steps_per_epoch": 100, "loss": 1.0, "lr": 0.1, "effective_batch": 256, "time": step,
            "noise_scale": value, **extra}


def dense_early_sparse_late():
    """B_simple 100 logged every 10 steps up to 10% of training, then 1000 at 50% and 100%."""
    return ([train(s, 100.0, gns_b_small=32, gns_b_big=256) for s in range(10, 101, 10)]
            + [train(500, 1000.0), {"kind": "val", "step": 500, "loss": 1.0, "accuracy": 0.5},
               train(1000, 1000.0)])


def test_average_is_over_progress_not_over_records():
    s = noise.noise_summary(dense_early_sparse_late())
    # Piecewise-linear curve against progress, covered from 1% to 100%:
    # 0.01-0.1 at 100, 0.1-0.5 from 100 to 1000 (mean 550), 0.5-1.0 at 1000.
    expected = (0.09 * 100 + 0.4 * 550 + 0.5 * 1000) / 0.99
    assert s.recommended == pytest.approx(expected)
    per_record = (10 * 100 + 2 * 1000) / 12  # what a mean over records would say: 250
    assert s.recommended > 2.5 * per_record
    assert s.covered == (pytest.approx(0.01), 1.0)


def test_quarters_early_and_last():
    s = noise.noise_summary(dense_early_sparse_late())
    at_quarter = 100 + 900 * (0.25 - 0.1) / 0.4  # the curve at progress 0.25
    q1 = (0.09 * 100 + 0.15 * (100 + at_quarter) / 2) / 0.24  # covered part of [0, 0.25]
    q2 = 0.25 * ((at_quarter + 1000) / 2) / 0.25
    assert s.quarters == (pytest.approx(q1), pytest.approx(q2), 1000.0, 1000.0)
    assert (s.early, s.early_points) == (100.0, noise.EARLY_POINTS)
    assert (s.last, s.last_step, s.total_steps) == (1000.0, 1000, 1000)
    assert (s.b_small, s.b_big, s.effective_batch) == (32, 256, 256)


def test_early_is_the_median_of_the_first_values_and_quarters_not_covered_are_none():
    # A run cut at 40%: values only in the first two quarters.
    records = [train(s, v) for s, v in [(10, 50.0), (20, 70.0), (30, 60.0), (40, 80.0), (50, 90.0),
                                       (60, 500.0), (400, 300.0)]]
    s = noise.noise_summary(records)
    assert s.early == 70.0  # median of 50, 70, 60, 80, 90
    assert s.quarters[2:] == (None, None)
    at_quarter = 500 - 200 * (0.25 - 0.06) / (0.4 - 0.06)  # the curve at progress 0.25
    assert s.quarters[1] == pytest.approx((at_quarter + 300) / 2)  # the covered part, 0.25-0.4
    assert s.coverage == pytest.approx(0.39)
    assert "cover only 39%" in noise.render(s, [])


def test_records_without_a_usable_noise_scale_are_skipped():
    records = [train(5, None), train(10, float("nan")), train(15, -3.0), train(20, 200.0),
               {"kind": "train", "step": 30, "total_steps": 1000, "loss": 1.0},  # no gns fields
               train(40, 400.0)]
    s = noise.noise_summary(records)
    assert [p.step for p in s.points] == [20, 40]
    assert s.skipped == 4
    assert s.recommended == pytest.approx(300.0)


def test_a_rerun_step_counts_once_the_later_copy_winning():
    s = noise.noise_summary([train(10, 100.0), train(20, 999.0), train(20, 200.0)])
    assert [p.value for p in s.points] == [100.0, 200.0]


def test_one_value_is_its_own_average():
    s = noise.noise_summary([train(10, None), train(600, 123.0)])
    assert s.recommended == s.early == s.last == 123.0
    assert s.quarters == (None, None, 123.0, None)


@pytest.mark.parametrize("records, words", [
    ([{k: v for k, v in train(s, 1.0).items() if k != "noise_scale"} for s in (10, 20)],
     ["logged no noise scale", "batches_per_allreduce 1", "--no-noise-scale"]),
    ([train(10, None), train(20, 0.0)], ["null or not positive in all 2 train records"]),
    ([{"kind": "val", "step": 10, "accuracy": 0.5}], ["no train records"]),
])
def test_a_run_without_noise_scale_says_why(records, words):
    with pytest.raises(ValueError) as info:
        noise.noise_summary(records)
    for word in words:
        assert word in str(info.value)


def test_tradeoff_at_half_one_and_two_times():
    rows = noise.tradeoff(1000.0, [500, 1000, 2000])
    assert [(t.steps_ratio, t.examples_ratio) for t in rows] == [(3.0, 1.5), (2.0, 2.0), (1.5, 3.0)]
    assert [t.multiple for t in rows] == [0.5, 1.0, 2.0]
    s = noise.noise_summary(dense_early_sparse_late())
    assert [t.batch for t in noise.around(s)] == pytest.approx([0.5 * s.recommended, s.recommended,
                                                                2 * s.recommended])


@pytest.mark.parametrize("b_noise, batches, bad", [(0, [1], "b_noise"), (float("nan"), [1], "b_noise"),
                                                   (10.0, [0], "batch"), (10.0, [-5], "batch")])
def test_tradeoff_rejects_bad_values(b_noise, batches, bad):
    with pytest.raises(ValueError, match=bad):
        noise.tradeoff(b_noise, batches)


def test_render_and_json():
    s = noise.noise_summary(dense_early_sparse_late())
    text = noise.render(s, noise.around(s), job="demo-1")
    for word in ("demo-1", "arXiv 1812.06162", "recommended (average over progress)", "736.4",
                 "1st quarter", "S/S_min = 1 + B_noise/B", "plain-SGD", "LARS", "BatchNorm",
                 "lower estimate early", "well conditioned"):
        assert word in text
    assert noise.LIMITS in text
    d = json.loads(json.dumps(noise.to_dict(s, noise.around(s))))
    assert d["summary"]["recommended"] == pytest.approx(s.recommended)
    assert d["summary"]["n_points"] == 12 and "points" not in d["summary"]
    assert [t["examples_ratio"] for t in d["tradeoffs"]] == [1.5, 2.0, 3.0]
    assert len(s.to_dict(points=True)["points"]) == 12


# -- which noise scale: the LARS-preconditioned one for trust-ratio optimizers ------------------

def both(step, sgd, lars, total=1000, **extra):
    return train(step, sgd, total, noise_scale_lars=lars, **extra)


@pytest.mark.parametrize("optimizer, lars, name, words", [
    ("lars", 50.0, "lars-preconditioned", ["LARS", "trust ratio", "noise_scale_lars"]),
    ("LAMB", 50.0, "lars-preconditioned", ["LAMB"]),
    ("lars", None, "sgd", ["LARS", "no train record has a usable noise_scale_lars", "not calibrated"]),
    ("sgd", 50.0, "sgd", ["SGD"]),
    (None, 50.0, "sgd", ["not known"]),
])
def test_the_estimator_follows_the_optimizer_and_says_why(optimizer, lars, name, words):
    records = [both(s, 100.0, lars) for s in (10, 20)]
    estimator = noise.choose_estimator(records, optimizer)
    assert estimator.name == name and estimator.field == noise.ESTIMATORS[name]
    for word in words:
        assert word in estimator.why
    s = noise.noise_summary(records, optimizer)
    assert s.recommended == (50.0 if name == "lars-preconditioned" else 100.0)
    d = noise.to_dict(s, [])
    assert (d["estimator"], d["summary"]["estimator"]) == (name, name)
    assert d["estimator_why"] == estimator.why
    assert f"Estimator: {name} ({estimator.field}): {estimator.why}" in noise.render(s, [])


def test_limits_name_both_estimators():
    for word in ("lars-preconditioned", "noise_scale_lars", "trust ratio", "LAMB"):
        assert word in noise.LIMITS


# -- enough measured steps ----------------------------------------------------------------------

def test_the_minimum_is_one_time_constant_of_the_trainers_moving_averages():
    from trainer.gns import EMA_DECAY

    assert noise.min_measured_steps() == round(1 / (1 - EMA_DECAY)) == 100


def test_measured_steps_are_the_optimizer_steps_up_to_the_last_value():
    # The moving averages decay per optimizer step, however many of the steps were measured
    # (noise_scale_every: gns_steps counts 2 of each 10 here): their span is in optimizer steps.
    records = [train(10, 5.0, gns_steps=2), train(20, 6.0, gns_steps=2), train(30, None, gns_steps=2)]
    assert noise.noise_summary(records).measured_steps == 20


def test_too_few_measured_steps_are_refused_with_how_many_more():
    short = noise.noise_summary([train(s, 100.0, gns_steps=1) for s in range(1, 41)])
    with pytest.raises(ValueError) as info:
        noise.check_measured(short)
    assert "measured over 40 optimizer steps" in str(info.value)
    assert "at least 100" in str(info.value) and "60 more" in str(info.value)
    noise.check_measured(noise.noise_summary([train(s, 100.0, gns_steps=1) for s in range(1, 101)]))


# -- the recommended batch: a power of two, at most the training images -----------------------

@pytest.mark.parametrize("b_noise, size, batch, capped", [
    (1261.0, 1437, 1024, False), (1500.0, 1437, 1024, True), (3000.0, 1437, 1024, True),
    (300.0, None, 256, False), (2500.0, None, 2048, False), (0.3, 1437, 1, False)])
def test_the_recommended_batch_is_capped_by_the_training_images(b_noise, size, batch, capped):
    record = train(10, b_noise, gns_data_size=size) if size else {"kind": "train", "step": 10, "noise_scale": b_noise}
    s = noise.noise_summary([record])
    assert (s.batch.batch, s.batch.capped, s.data_size) == (batch, capped, size)
    assert s.batch.batch <= (size or s.batch.batch)
    text = noise.render(s, [])
    assert f"Recommended effective batch {batch}:" in text
    assert ("capped by the 1,437 training images" in text) == capped
    assert noise.to_dict(s, [])["recommended_batch"]["capped"] == capped


def test_the_training_images_without_gns_data_size_are_at_least_an_epochs_steps_times_the_batch():
    s = noise.noise_summary([train(10, 100.0)])  # steps_per_epoch 100, effective_batch 256
    assert s.data_size == 25600 and "at least steps_per_epoch x effective_batch" in s.data_size_from
    s = noise.noise_summary([{"kind": "train", "step": 10, "noise_scale": 100.0}])
    assert s.data_size is None and "not known" in s.data_size_from


# -- S(B0), the steps the run took to its target ------------------------------------------------

def test_steps_to_target():
    records = [train(s, 1.0, total=50) for s in range(1, 41)] + [
        {"kind": "val", "step": 20, "accuracy": 0.85}, {"kind": "val", "step": 30, "accuracy": 0.9},
        {"kind": "val", "step": 40, "accuracy": 0.95}]
    assert noise.steps_to_target(records, 0.9) == (30, "it reached val/accuracy>=0.9 at step 30")
    steps, why = noise.steps_to_target(records, 0.99)
    assert steps == 40 and "has not reached" in why and "lower bound" in why
    steps, why = noise.steps_to_target(records, None)
    assert steps == 50 and "planned steps" in why
    with pytest.raises(ValueError, match="no train records"):
        noise.steps_to_target(records[-3:], None)
