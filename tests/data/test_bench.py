"""bench measures the trainer's own loaders and says plainly whether a plan's GPUs would starve."""
from __future__ import annotations

from pathlib import Path

from larsctl.data.bench import Measurement, Need, verdict
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


def need(**overrides) -> Need:
    values = dict(cluster="c", recipe="r", nodes=8, gpus=32, gpus_per_node=4, cpus_per_node=40, step_seconds=0.3,
                  images_per_second=32 * 1000.0, data="imagefolder", workers=4, image_size=224)
    return Need(**{**values, **overrides})


def test_verdict_when_more_workers_would_do():
    lines = verdict([Measurement("imagefolder", 1, 150.0), Measurement("imagefolder", 2, 300.0),
                     Measurement("imagefolder", 4, 560.0)], need())
    assert lines[1] == ("imagefolder: 150 images/s per worker here: 4 workers per GPU would starve the GPUs "
                        "(560 < 1,000 images/s, 56% busy); 7 per GPU keep up (28 of a node's 40 CPUs)")
    assert lines[-1] == ("verdict: as configured the input pipeline would starve the GPUs; use --data imagefolder "
                         "with --set workers=7")


def test_verdict_counts_the_cpus_that_the_gpus_of_a_node_share():
    """8 workers per GPU would do on a node of its own, but 4 GPUs x 8 exceed the node's 16 CPUs."""
    lines = verdict([Measurement("imagefolder", 8, 1600.0)], need(workers=8, cpus_per_node=16))
    assert lines[1].startswith("imagefolder: 200 images/s per worker here: would starve the GPUs even with all 16 "
                               "CPUs of a node (3,200 < 4,000 images/s per node)")


def test_verdict_when_no_cpu_loader_can_keep_up_but_gpu_decoding_does():
    measured = [Measurement("imagefolder", 2, 100.0), Measurement("dali cpu", 2, 300.0),
                Measurement("dali mixed", 2, 3000.0)]
    lines = verdict(measured, need(data="dali"))
    assert lines[1].startswith("imagefolder: 50 images/s per worker here: would starve the GPUs even with all 40 CPUs")
    assert lines[3] == "dali mixed: 3,000 images/s per GPU here: keeps up (1,000 needed)"
    assert lines[-1] == "verdict: the input pipeline keeps up: --data dali with workers=4 feeds 1,000 images/s per GPU"


def test_verdict_when_nothing_keeps_up():
    lines = verdict([Measurement("imagefolder", 1, 10.0), Measurement("dali mixed", 0, None, "no GPU on this node")],
                    need())
    assert lines[-1].startswith("verdict: the input pipeline would starve the GPUs with every loader measured here")
