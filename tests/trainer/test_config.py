"""Trainer options: flags, job.yaml merging, LR scaling, launcher environments (pure, in-process)."""
from __future__ import annotations

import math
import re

import pytest
import yaml

from trainer.cli import build_parser, parse_args
from trainer.config import OPTIONS, scaled_lr
from trainer.environment import detect, first_slurm_host
from trainer.errors import BadInput

REFERENCE_FLAGS = ("--train-dir --val-dir --data-dir --log-dir --checkpoint-format --fp16-allreduce "
                   "--batches-per-allreduce --model --batch-size --val-batch-size --epochs --base-lr "
                   "--warmup-epochs --momentum --wd --epsilon --label-smoothing --base-op --bn-bias-separately "
                   "--lr-scaling --no-cuda --seed").split()
NEW_FLAGS = ("--config --engine --data --max-steps --checkpoint-every-steps --amp --channels-last --out-dir "
             "--dataset --image-size --lr-power --end-lr --lars-mode --eeta --keep-checkpoints --workers "
             "--log-every-steps").split()


def test_help_lists_every_flag_with_help_text():
    # Whole flags, not substrings: "--data" must not be satisfied by "--data-dir".
    text = build_parser().format_help()
    shown = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))
    for flag in REFERENCE_FLAGS + NEW_FLAGS:
        assert flag in shown, flag
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_every_option_of_the_table_is_a_flag():
    flags = {s for action in build_parser()._actions for s in action.option_strings}
    assert {o.flag for o in OPTIONS} <= flags


def test_flags_override_job_yaml_trainer_section(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "job": {"name": "x"}, "plan": {"effective_batch": 256},
        "trainer": {"model": "resnet18", "batch_size": 64, "base_lr": 3, "dataset": "digits", "amp": "bf16"}}))
    cfg, plan, _ = parse_args(["--config", str(job), "--batch-size", "32", "--channels-last"])
    assert (cfg.model, cfg.batch_size, cfg.base_lr, cfg.amp, cfg.channels_last) == ("resnet18", 32, 3.0, "bf16", True)
    assert plan == {"effective_batch": 256}


def test_whole_mapping_is_options_when_there_is_no_trainer_section(tmp_path):
    job = tmp_path / "opts.yaml"
    job.write_text("model: resnet34\ndata: synthetic\n")
    cfg, plan, _ = parse_args(["--config", str(job)])
    assert cfg.model == "resnet34" and plan == {}


@pytest.mark.parametrize("content, message", [
    ("trainer: {bogus_key: 1}", "bogus_key: unknown trainer option"),
    ("trainer: {batch_size: '64'}", "batch_size: expected an integer"),
    ("trainer: {base_op: adam, data: synthetic}", "base_op: expected one of lars, lamb, sgd, got 'adam'"),
    ("trainer: [1, 2]", "trainer: expected a mapping"),
    ("trainer: {model: [unclosed", "not valid YAML"),
])
def test_bad_job_yaml_names_the_key(tmp_path, content, message):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    with pytest.raises(BadInput, match=message.replace("[", r"\[")) as err:
        parse_args(["--config", str(job)])
    assert str(job) in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0", "--data", "synthetic"], "--batch-size: expected >= 1"),
    (["--epochs", "2", "--warmup-epochs", "3", "--data", "synthetic"], "--warmup-epochs"),
    ([], "no data"),
    (["--train-dir", "x"], "needs both --train-dir and --val-dir"),
    (["--data", "synthetic", "--checkpoint-format", "ck-{when}.pt"], "needs a {step} or {epoch}"),
    (["--data", "synthetic", "--engine", "mpi"], "invalid choice"),
])
def test_bad_flags(argv, message):
    with pytest.raises(BadInput, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_args(argv)


def test_lr_scaling_sqrt_is_base_lr_times_sqrt_n():
    # The reference computed sqrt(base_lr * N); 2 x sqrt(8) != sqrt(16).
    assert scaled_lr(2.0, "sqrt", 4, 2) == pytest.approx(2.0 * math.sqrt(8))
    assert scaled_lr(2.0, "linear", 4, 2) == 16.0
    assert scaled_lr(2.0, "keep", 4, 2) == 2.0


def test_option_defaults_are_valid_types():
    for opt in OPTIONS:
        assert opt.default is None or isinstance(opt.default, opt.type), opt.name


@pytest.mark.parametrize("env, expect", [
    ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1",
      "MASTER_PORT": "1234"}, ("torchrun", 1, 4, 1, "n1", 1234)),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_orte_hnp_uri": "1895301120.0;tcp://10.1.2.3:40577"},
     ("openmpi", 3, 4, 1, "10.1.2.3", 20000 + (1895301120 >> 16) % 20000)),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, ("openmpi", 1, 2, 1, "127.0.0.1", 29500)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4(x2)",
      "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}, ("slurm", 5, 8, 1, "gpu07", 23456)),
    ({"PMI_RANK": "2", "PMI_SIZE": "3", "MASTER_ADDR": "h0"}, ("pmi", 2, 3, 0, "h0", 29500)),
    ({}, ("single", 0, 1, 0, "127.0.0.1", 29500)),
])
def test_job_environment(env, expect):
    e = detect(env)
    assert (e.launcher, e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port) == expect


def test_multi_node_without_a_derivable_address_is_bad_input():
    with pytest.raises(BadInput, match="set MASTER_ADDR"):
        detect({"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"})


@pytest.mark.parametrize("nodelist, first", [("n1", "n1"), ("gpu[07-09,12],cpu1", "gpu07"),
                                             ("a1,a2", "a1"), ("x[3]", "x3")])
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first
