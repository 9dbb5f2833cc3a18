"""The optimizer of each job in ``larsctl compare`` (the table, which is Markdown, and --json):
job.yaml's trainer base_op, or, for a plain ``python -m trainer --out-dir DIR`` run, the
trainer config its checkpoints carry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.results import tables
from larsctl.results.runs import load_run


def compare(*args) -> str:
    result = CliRunner().invoke(cli, ["compare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def cells(table: str) -> list[dict[str, str]]:
    """The Markdown pipe table as one dict per row, by column name."""
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|:- ")
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def write_checkpoint(out_dir: Path, step: int, **options) -> Path:
    """A checkpoint as the trainer writes it (CheckpointStore.save of a state with every
    required key), for a config resolved from ``options`` as the trainer resolves its flags."""
    import torch

    from trainer.checkpoint import FORMAT_VERSION, CheckpointStore
    from trainer.config import resolve

    cfg = resolve({}, {"dataset": "digits", "out_dir": str(out_dir), **options})
    store = CheckpointStore(str(out_dir / "checkpoints" / "checkpoint-{step:08d}.pt"), keep=3,
                            model_name=cfg.model)
    model = torch.nn.Linear(2, 2)
    return store.save({"format_version": FORMAT_VERSION, "model_name": cfg.model, "model": model.state_dict(),
                       "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 0, "step_in_epoch": step,
                       "global_step": step, "world_size": 1, "batches_per_allreduce": 1,
                       "batch_size": cfg.batch_size, "config": cfg.to_dict()})


def test_compare_has_an_optimizer_column_in_the_table_and_the_json(make_run):
    jobs = [make_run("lars", batch=512), make_run("lamb", batch=1024, optimizer="lamb"),
            make_run("sgd", batch=256, optimizer="sgd")]
    rows = cells(compare(*jobs))
    assert "Optimizer" in tables.COLUMNS
    assert [(row["Job"], row["Optimizer"]) for row in rows] == [("sgd", "SGD"), ("lars", "LARS"),
                                                                ("lamb", "LAMB")]
    data = json.loads(compare(*jobs, "--json"))
    assert [(row["name"], row["optimizer"]) for row in data] == [("sgd", "SGD"), ("lars", "LARS"),
                                                                 ("lamb", "LAMB")]
    # The other columns are where they were; the Markdown lines up in a terminal.
    assert rows[0]["Effective batch"] == "256" and rows[0]["Val accuracy"].endswith("%")
    assert len({len(line) for line in compare(*jobs).splitlines()}) == 1


def test_a_plain_trainer_run_takes_its_optimizer_from_its_checkpoints_config(make_run):
    plain = make_run("plain", job_yaml=False)
    write_checkpoint(plain, 10, base_op="lamb", warmup_epochs=0.25, batch_size=16)
    write_checkpoint(plain, 20, base_op="sgd", warmup_epochs=0.5, batch_size=16)  # the newest wins
    [row] = cells(compare(plain))
    assert (row["Optimizer"], row["Warmup epochs"], row["Batch"]) == ("SGD", "0.5", "16")
    [data] = json.loads(compare(plain, "--json"))
    assert (data["optimizer"], data["warmup_epochs"], data["per_gpu_batch"]) == ("SGD", 0.5, 16)


@pytest.mark.parametrize("damage", ["none", "truncated"])
def test_a_plain_run_without_a_readable_checkpoint_has_no_optimizer(make_run, damage):
    plain = make_run("plain", job_yaml=False)
    if damage == "truncated":
        path = write_checkpoint(plain, 10, base_op="lamb")
        path.write_bytes(path.read_bytes()[:100])
    [row] = cells(compare(plain))
    assert row["Optimizer"] == "-"
    assert load_run(plain).summary().optimizer is None
