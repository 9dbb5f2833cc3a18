"""bench measures the trainer's own loaders and says plainly whether a plan's GPUs would starve."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from larsctl.data.bench import Measurement, Need, fastest_line, option, verdict
from tests.data.helpers import cli

REPO = Path(__file__).resolve().parents[2]


def test_bench_measures_both_layouts_against_a_plan(prepared, converted):
    r = cli("bench", prepared, converted, "--workers", "0,1", "--batch-size", "4", "--batches", "2",
            "--image-size", "32", "--cluster", "slurm-v100", "--recipe", REPO / "jobs" / "resnet50-lars-1k.yaml")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("input pipeline on ") and "32 px, batch 4" in lines[0]
    # --workers 0,1 and the recipe's own workers=4: loader, workers (DALI: threads), images/s, per worker
    rows = [line.split() for line in lines[2:8]]
    assert [row[:3] for row in rows[:5]] == [["imagefolder", "0", rows[0][2]], ["imagefolder", "1", rows[1][2]],
                                             ["imagefolder", "4", rows[2][2]], ["dali", "cpu", "1"],
                                             ["dali", "cpu", "4"]]
    assert all(float(row[-1]) > 0 for row in rows[:5])
    assert rows[5][:2] == ["dali", "mixed"] and (lines[7].endswith("(no GPU on this node)") or float(rows[5][-1]))
    assert "against slurm-v100" in r.stdout
    assert any(line.startswith("plan: 2 node(s) x 4 GPUs, step ") for line in lines)
    assert lines[-1].startswith("verdict: ")
    # the advice follows this table (slurm-v100 has 10 CPUs per GPU: the figures stand as measured)
    fastest = max(measured_rows(lines[2:8]), key=lambda m: (m.images_per_second, -m.workers))
    assert lines[8].startswith(f"fastest here: {fastest.loader} with {fastest.workers} "), lines[8]
    mine_is_fastest = (fastest.loader, fastest.workers) == ("imagefolder", 4)  # the recipe's
    assert option(fastest) in lines[-1] or mine_is_fastest and lines[-1].startswith(
        "verdict: the input pipeline keeps up: --data imagefolder with workers=4"), (lines[2:8], lines[-1])


ROW = re.compile(r"^\s+(imagefolder|dali cpu|dali mixed)\s+(\d+)\s+([\d.]+)\s+[\d.]+$")


def measured_rows(lines: list[str]) -> list[Measurement]:
    """The rows of bench's table that have a figure."""
    return [Measurement(m.group(1), int(m.group(2)), float(m.group(3))) for m in map(ROW.match, lines) if m]


def need(**overrides) -> Need:
    """A plan that needs 1,000 images/s per GPU (4 GPUs and 40 CPUs per node), --data imagefolder, workers=4."""
    values = dict(cluster="c", recipe="r", nodes=8, gpus=32, gpus_per_node=4, cpus_per_node=40, step_seconds=0.3,
                  images_per_second=32 * 1000.0, data="imagefolder", workers=4, image_size=224)
    return Need(**{**values, **overrides})


def measured(*rows) -> list[Measurement]:
    return [Measurement(loader, workers, rate) for loader, workers, rate in rows]


# (measured loader, workers, images/s; the plan's differences from need(); the lines after the plan's)
ADVICE = {
    "more workers were faster and keep up": (
        measured(("imagefolder", 1, 300.0), ("imagefolder", 2, 400.0), ("imagefolder", 4, 500.0)),
        dict(images_per_second=32 * 450.0, workers=2),
        ["imagefolder: 2 workers per GPU would starve the GPUs (400 < 450 images/s, 89% busy); 4 per GPU keep up "
         "as measured (500 images/s)",
         "verdict: as configured the input pipeline would starve the GPUs; use --data imagefolder with --set "
         "workers=4, the fastest measured here (500 >= 450 images/s per GPU)"]),
    "more workers than measured: extrapolated from the most measured": (
        measured(("imagefolder", 1, 150.0), ("imagefolder", 2, 300.0), ("imagefolder", 4, 560.0)), {},
        ["imagefolder: 4 workers per GPU would starve the GPUs (560 < 1,000 images/s, 56% busy); 8 per GPU should "
         "keep up at the 140 images/s per worker measured with 4 (32 of a node's 40 CPUs; not measured)",
         "verdict: every configuration measured here would starve the GPUs (the fastest, --data imagefolder with "
         "--set workers=4, feeds 560 < 1,000 images/s per GPU); --data imagefolder with --set workers=8 should keep "
         "up: measure it with --workers 8"]),
    "DALI fastest, the recipe's loader keeps up too": (
        measured(("imagefolder", 4, 1200.0), ("dali cpu", 4, 2000.0), ("dali mixed", 4, 5000.0)), {},
        ["imagefolder: keeps up with 4 workers per GPU (1,200 >= 1,000 images/s)",
         "dali cpu: keeps up with 4 threads per GPU (2,000 >= 1,000 images/s)",
         "dali mixed: 5,000 images/s per GPU here: keeps up (1,000 needed)",
         "verdict: the input pipeline keeps up: --data imagefolder with workers=4 feeds 1,200 >= 1,000 images/s "
         "per GPU; fastest here: --data dali with --set workers=4 (GPU decoding), 5,000 images/s per GPU"]),
    "DALI on the CPU fastest, the recipe's loader starves": (
        measured(("imagefolder", 1, 100.0), ("imagefolder", 4, 380.0), ("dali cpu", 1, 300.0),
                 ("dali cpu", 4, 1100.0)), {},
        ["imagefolder: 4 workers per GPU would starve the GPUs (380 < 1,000 images/s, 38% busy); not even all 40 "
         "CPUs of a node would do at the 95 images/s per worker measured with 4 (3,800 < 4,000 images/s per node)",
         "dali cpu: keeps up with 4 threads per GPU (1,100 >= 1,000 images/s)",
         "verdict: as configured the input pipeline would starve the GPUs; use --data dali with --set workers=4 "
         "(measured decoding on the CPU), the fastest measured here (1,100 >= 1,000 images/s per GPU)"]),
    "the GPUs of a node share its CPUs": (
        measured(("imagefolder", 8, 1600.0)), dict(workers=8, cpus_per_node=16),
        ["imagefolder: 8 workers per GPU would starve the GPUs (800 < 1,000 images/s, 80% busy, 4 CPUs per GPU); "
         "not even all 16 CPUs of a node would do at the 200 images/s per worker measured with 8 (3,200 < 4,000 "
         "images/s per node)",
         "verdict: the input pipeline would starve the GPUs with every loader measured here (the fastest, --data "
         "imagefolder with --set workers=8, feeds 800 < 1,000 images/s per GPU); decode on the GPU (--data dali "
         "on a GPU node) or use more CPUs per GPU"]),
    "GPU decoding keeps up where no CPU loader can": (
        measured(("imagefolder", 2, 100.0), ("dali cpu", 2, 300.0), ("dali mixed", 2, 3000.0)), dict(data="dali"),
        ["imagefolder: 2 workers per GPU, the fastest measured, would starve the GPUs (100 < 1,000 images/s, 10% "
         "busy); not even all 40 CPUs of a node would do at the 50 images/s per worker measured with 2 (2,000 < "
         "4,000 images/s per node)",
         "dali cpu: 2 threads per GPU, the fastest measured, would starve the GPUs (300 < 1,000 images/s, 30% "
         "busy); 7 per GPU should keep up at the 150 images/s per thread measured with 2 (28 of a node's 40 CPUs; "
         "not measured)",
         "dali mixed: 3,000 images/s per GPU here: keeps up (1,000 needed)",
         "verdict: the input pipeline keeps up: --data dali with workers=4 feeds 3,000 >= 1,000 images/s per GPU"]),
}


@pytest.mark.parametrize("case", ADVICE)
def test_the_advice_follows_the_measurements(case):
    rows, plan, expected = ADVICE[case]
    assert verdict(rows, need(**plan))[1:] == expected


@pytest.mark.parametrize("rows, line", [
    (measured(("imagefolder", 0, 40.0), ("imagefolder", 2, 90.5), ("dali cpu", 1, 60.0)),
     "fastest here: imagefolder with 2 workers, 90.5 images/s: --data imagefolder with --set workers=2"),
    (measured(("imagefolder", 4, 900.0), ("dali cpu", 4, 700.0), ("dali mixed", 4, 2500.0)),
     "fastest here: dali mixed with 4 threads, 2,500.0 images/s: --data dali with --set workers=4 (GPU decoding)"),
    (measured(("imagefolder", 2, 50.0), ("dali cpu", 1, 70.0), ("dali cpu", 2, 70.0)),
     "fastest here: dali cpu with 1 thread, 70.0 images/s: --data dali with --set workers=1 (measured decoding on "
     "the CPU)"),
])
def test_without_a_plan_the_fastest_configuration_is_named(rows, line):
    assert fastest_line(rows) == line
