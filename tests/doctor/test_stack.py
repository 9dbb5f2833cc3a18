"""The stack rows: one real probe of this environment, read against other profiles' needs."""
from __future__ import annotations

from larsctl.doctor.launcher import Needs, check_launchers, default_layout, needs_for
from larsctl.doctor.report import FAIL, OK, WARN, ok
from larsctl.doctor.runner import ProbeResult
from larsctl.doctor.stack import _dali_rows, check_python_side


def rows_of(profile, probe) -> dict:
    needs = needs_for(profile, default_layout(profile))
    return {r.name: r for r in check_python_side(profile, probe, needs, None, False)}


def test_engine_ddp_needs_no_horovod(make_profile, local_probe):
    profile = make_profile(name="localddp", engine="ddp")
    rows = rows_of(profile, local_probe)
    assert rows["horovod"] == ok("horovod", "not needed: engine ddp uses torch.distributed (torchrun)")
    assert "horovod ops" not in rows
    assert rows["torch.distributed"].status == OK and "the ddp engine uses gloo" in rows["torch.distributed"].found
    needs = needs_for(profile, default_layout(profile))
    assert needs.modules == ("torch.distributed.run",) and needs.executables == ()
    (row,) = check_launchers(profile, needs, local_probe)
    assert row.status == OK and row.name == "launcher torchrun"


def test_gpu_profile_rows_follow_what_this_machine_has(make_profile, local_probe):
    """The same real probe read against a GPU profile: what a login node without GPUs looks like."""
    profile = make_profile(name="gpus", scheduler="slurm", gpu_type="A100-80GB", mpi="openmpi",
                           gpus_per_node=4, partition="gpu")
    rows = rows_of(profile, local_probe)
    torch_info, hvd = local_probe.data["torch"], local_probe.data["horovod"]
    if torch_info.get("cuda") or torch_info.get("hip"):
        assert rows["torch"].status == OK
    else:
        assert rows["torch"].status == FAIL and "needs a CUDA build" in rows["torch"].found
    if not torch_info["devices"]:
        assert rows["gpus"].status == WARN
        assert "srun --partition gpu --gres=gpu:1 --pty larsctl doctor --cluster gpus" in rows["gpus"].fix
    assert "mpi openmpi needs MPI; gpu_type A100-80GB wants NCCL" in rows["horovod ops"].found
    if hvd.get("mpi") and not hvd.get("nccl"):
        assert rows["horovod ops"].status == WARN and "NCCL no" in rows["horovod ops"].found
        assert "HOROVOD_GPU_OPERATIONS=NCCL" in rows["horovod ops"].fix


def test_no_launch_line_leaves_the_engine_unchecked(make_profile, local_probe):
    profile = make_profile(name="pbssrun", scheduler="pbs", mpi="srun")
    rows = rows_of(profile, local_probe)
    assert rows["horovod ops"].status == WARN and "the profile has no launch line" in rows["horovod ops"].found


def test_a_section_the_probe_could_not_collect_is_one_warning(make_profile, local_probe):
    """What the probe sends when its own code fails in a section (see test_probe.py)."""
    data = dict(local_probe.data, torchvision={"could_not_collect": "AttributeError: x"})
    rows = rows_of(make_profile(name="cpu"), ProbeResult(data=data))
    assert rows["torchvision"].status == WARN and rows["torchvision"].found == "could not collect: AttributeError: x"
    assert "probe.py" in rows["torchvision"].fix
    assert rows["torch"].status == OK


def test_dali_row_depends_on_the_recipe(make_profile, local_probe):
    profile = make_profile(name="cpu")
    info = local_probe.data["dali"]
    (needed,) = _dali_rows(info, profile, "dali", True)
    (unused,) = _dali_rows(info, profile, "imagefolder", True)
    if "version" in info:
        assert needed.status == unused.status == OK and "data: dali" in needed.found
    else:  # not installed: fatal only when the recipe reads TFRecords
        assert needed.status == FAIL and unused.status == OK


def test_needs_without_a_launch_line_look_up_nothing():
    assert Needs(error="no line").executables == () and Needs(error="no line").modules == ()
