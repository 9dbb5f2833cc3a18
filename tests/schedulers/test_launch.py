"""Launch lines per MPI flavour and engine, and real local runs of them."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from larsctl.config.profiles import ClusterProfile
from larsctl.schedulers.launch import LaunchError, build_launch, setup_lines, shell_path


def _line(support, mpi, engine="horovod", scheduler="slurm", **update):
    p = support.local_profile(scheduler=scheduler, mpi=mpi, engine=engine, **update)
    spec = support.make_spec(p)
    return build_launch(p, spec.plan, "/runs/a b", scheduler=scheduler, job_id="j1"), spec.plan


def test_openmpi_line_has_the_documented_flags(support):
    launch, plan = _line(support, "openmpi")
    words = shlex.split(launch.line)
    assert words[:10] == ["mpirun", "-np", str(plan.gpus), "-npernode", str(plan.gpus_per_node),
                          "-bind-to", "none", "-map-by", "slot", "-x"]
    for name in ("NCCL_DEBUG", "LD_LIBRARY_PATH", "PATH", "OMP_NUM_THREADS"):
        assert words[words.index(name) - 1] == "-x"
    assert " -mca pml ob1 -mca btl tcp,self,vader " in launch.line  # fabric tcp, the default
    assert words[-6:] == ["-m", "trainer", "--config", "/runs/a b/job.yaml", "--out-dir", "/runs/a b"]


# fabric -> the transport words Open MPI's documentation gives for it (launch.py cites the pages)
OPENMPI_TRANSPORTS = {
    "tcp": "-mca pml ob1 -mca btl tcp,self,vader",
    "infiniband": "-mca pml ucx -mca btl '^openib'",
    "roce": "-mca pml ucx -mca btl '^openib'",
    "omnipath": "-mca pml cm -mca mtl psm2",
    "aries": "-mca pml ob1 -mca btl ugni,self,vader",
    "slingshot": "-mca pml cm -mca mtl ofi",
}


@pytest.mark.parametrize("fabric", sorted(OPENMPI_TRANSPORTS))
@pytest.mark.parametrize("engine", ["horovod", "ddp"])
def test_openmpi_transport_follows_the_fabric(support, fabric, engine):
    profile = ClusterProfile.model_validate({
        **support.local_profile(scheduler="pbs", mpi="openmpi", engine=engine, nodes=4, gpus_per_node=2,
                                gpu_type="V100-16GB").to_dict(), "fabric": fabric})
    line = build_launch(profile, support.big_spec(profile).plan, "/w", job_id="j1").line
    assert f" {OPENMPI_TRANSPORTS[fabric]} " in line  # ddp: the mpirun that starts one torchrun per node
    assert line.count("-mca pml") == 1 and line.count("-mca btl") <= 1


def test_every_fabric_has_an_openmpi_transport_and_tcp_is_the_default(support):
    from larsctl.config.profiles import FABRICS
    assert sorted(FABRICS) == sorted(OPENMPI_TRANSPORTS)
    assert support.local_profile().fabric == "tcp"


@pytest.mark.parametrize("mpi", ["mpich", "intelmpi", "mvapich2"])
def test_hydra_flavours_use_mpiexec_n_ppn_genv(support, mpi):
    launch, plan = _line(support, mpi)
    words = shlex.split(launch.line)
    assert words[:5] == ["mpiexec", "-n", str(plan.gpus), "-ppn", str(plan.gpus_per_node)]
    # -genvall: a -genvlist would replace what modules set (CUDA_HOME, I_MPI_*) on ssh-started ranks
    assert "-genvall" in words and "-genvlist" not in words
    assert ("MV2_ENABLE_AFFINITY" in words) == (mpi == "mvapich2")


def test_plain_srun_leaves_the_mpi_plugin_to_the_site(support):
    launch, plan = _line(support, "srun")
    words = shlex.split(launch.line)
    assert words[0] == "srun" and not any(w.startswith("--mpi") for w in words)
    assert f"--ntasks={plan.gpus}" in words


def test_gloo_with_a_container_across_nodes_is_refused(support):
    profile = ClusterProfile.model_validate({
        **support.local_profile(scheduler="slurm", mpi="gloo", nodes=4, gpus_per_node=2,
                              gpu_type="V100-16GB").to_dict(),
        "container": {"runtime": "apptainer", "image": "/x.sif"}})
    with pytest.raises(LaunchError, match="outside the image"):
        build_launch(profile, support.big_spec(profile).plan, "/w", scheduler="slurm")
    one_node = support.make_spec(profile, target_batch=256, per_gpu_batch=128)  # 2 GPUs of one node
    assert one_node.plan.nodes == 1
    assert build_launch(profile, one_node.plan, "/w").line.startswith("apptainer exec ")


def test_network_interface_reaches_every_launcher(support):
    profile = support.local_profile(scheduler="slurm", mpi="gloo", nodes=4, gpus_per_node=2,
                                    gpu_type="V100-16GB", network_interface="ib0")
    line = build_launch(profile, support.big_spec(profile).plan, "/w").line
    assert "--network-interfaces ib0" in line
    setup = setup_lines(profile)
    for name in ("OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include", "GLOO_SOCKET_IFNAME",
                 "NCCL_SOCKET_IFNAME"):
        assert f"export {name}=ib0" in setup
    mpirun = build_launch(profile.model_copy(update={"mpi": "openmpi"}), support.big_spec(profile).plan,
                          "/w").line
    assert "-x OMPI_MCA_btl_tcp_if_include -x OMPI_MCA_oob_tcp_if_include" in mpirun


def test_srun_uses_pmix_never_pmi2(support):
    launch, plan = _line(support, "srun-pmix")
    assert launch.line.startswith("srun --mpi=pmix ")
    assert f"--ntasks={plan.gpus}" in launch.line and "pmi2" not in launch.line


def test_srun_outside_slurm_is_refused(support):
    with pytest.raises(LaunchError, match="srun-pmix needs scheduler slurm"):
        _line(support, "srun-pmix", scheduler="pbs")


@pytest.mark.parametrize("scheduler, hosts", [("slurm", 'scontrol show hostnames "$SLURM_JOB_NODELIST"'),
                                              ("pbs", '"$PBS_NODEFILE"')])
def test_gloo_takes_hosts_from_the_allocation(support, scheduler, hosts):
    launch, plan = _line(support, "gloo", scheduler=scheduler)
    assert " -m horovod.runner.launch --gloo -np 2 -H \"$LARSCTL_HOSTS\" " in launch.line
    assert hosts in launch.setup[0] and launch.setup[0].startswith("LARSCTL_HOSTS=$(")
    with pytest.raises(LaunchError):
        launch.argv  # the host list exists only in the batch shell


def test_local_lines_are_plain_argv(support):
    launch, _ = _line(support, "gloo", scheduler="local")
    assert launch.setup == ("LARSCTL_HOSTS=localhost:2",)
    launch, _ = _line(support, "openmpi", scheduler="local")
    assert launch.argv[0] == "mpirun" and "/runs/a b/job.yaml" in launch.argv


def test_ddp_uses_torchrun_standalone_on_one_node(support):
    launch, _ = _line(support, "gloo", engine="ddp", scheduler="local")
    words = launch.argv
    assert words[1:4] == ["-m", "torch.distributed.run", "--nnodes=1"]
    assert "--nproc-per-node=2" in words and "--standalone" in words


def test_ddp_multi_node_rendezvous_on_first_host(support):
    p = support.load_profile(support.PROFILES / "slurm-h100-ddp.yaml")
    spec = support.big_spec(p)
    launch = build_launch(p, spec.plan, "/r", job_id="j1")
    assert launch.line.startswith(f"srun --nodes={spec.plan.nodes} --ntasks={spec.plan.nodes} --ntasks-per-node=1")
    assert "--rdzv-backend=c10d" in launch.line and '"$LARSCTL_MASTER:' in launch.line
    assert launch.setup == ('LARSCTL_MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',)


def test_container_prefix_wraps_each_rank(support):
    p = support.load_profile(support.PROFILES / "slurm-a100-pmix-apptainer.yaml")
    spec = support.big_spec(p)
    line = build_launch(p, spec.plan, "/r", job_id="j1").line
    assert "--kill-on-bad-exit=1 apptainer exec --nv --bind /scratch '/images/lars torch.sif' python -m trainer" in line


def test_shell_path_expands_home_and_vars_but_nothing_else():
    assert shell_path("~/v/$USER/x") == '"$HOME"/v/"${USER}"/x'
    assert shell_path("/a b/$(touch x)") == "'/a b/$(touch x)'"


@pytest.mark.slow
@pytest.mark.parametrize("mpi, engine", [("openmpi", "horovod"), ("gloo", "horovod"), ("gloo", "ddp")])
def test_local_launch_line_starts_two_real_ranks(support, tmp_path, mpi, engine):
    """The local argv really starts 2 ranks through mpirun / horovodrun / torchrun."""
    p = support.local_profile(scheduler="local", mpi=mpi, engine=engine)
    spec = support.make_spec(p)
    d = support.job_dir(tmp_path, "with space")
    launch = build_launch(p, spec.plan, d, scheduler="local", job_id="j1")
    env = support.fake_env()
    hosts = dict(line.split("=", 1) for line in launch.setup)
    argv = [hosts.get("LARSCTL_HOSTS", w) if w == '"$LARSCTL_HOSTS"' else w for w in launch.words]
    # cwd: the job dir, as in the batch scripts (the repo root would shadow the fake trainer)
    r = subprocess.run([str(w) for w in argv], env=env, cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    notes = support.rank_notes(d)
    assert sorted(notes) == ["rank0", "rank1"]
    assert all(lines[-1] == "done" for lines in notes.values())


def test_profile_env_and_container_options_are_not_repeated(support):
    from larsctl.config.profiles import Container
    box = Container(runtime="singularity", image="/i.sif", options=["--nv"])
    launch, _ = _line(support, "openmpi", env={"NCCL_DEBUG": "INFO"}, container=box, gpu_type="V100-16GB")
    assert launch.line.count("-x NCCL_DEBUG") == 1 and launch.line.count("--nv") == 1


def test_mpi_flavours_are_the_profiles_and_each_has_one_launcher(support):
    """The profile's mpi choices and the launcher groups build_launch dispatches on are one table
    (larsctl/config/profiles.py); every flavour gets a line on Slurm."""
    from larsctl.config import profiles
    from larsctl.schedulers import launch

    groups = (profiles.OPENMPI_FLAVOURS, profiles.HYDRA_FLAVOURS, profiles.SRUN_FLAVOURS,
              profiles.GLOO_FLAVOURS)
    assert sorted(sum(groups, ())) == sorted(profiles.MPI_FLAVOURS) == sorted(m.value for m in profiles.Mpi)
    assert launch.HYDRA_FLAVOURS is profiles.HYDRA_FLAVOURS and launch.SRUN_FLAVOURS is profiles.SRUN_FLAVOURS
    for mpi in profiles.MPI_FLAVOURS:
        launch_line, _ = _line(support, mpi)
        assert launch_line.line
