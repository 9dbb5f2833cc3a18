"""Cluster profiles: shipped files load, user files override, every schema error is one exact line."""
from __future__ import annotations

import pytest

from larsctl.errors import UserError
from larsctl.config.env import expand_path
from larsctl.config.profiles import (ProfileError, list_profiles, load_profile,
                              read_profile, shipped_dir)

BASE = ["name: t", "scheduler: slurm", "nodes: 2", "gpus_per_node: 4", "gpu_type: V100-16GB",
        "cpus_per_node: 40", "interconnect_gbps: 100", "mpi: openmpi", "engine: horovod",
        'walltime: "24:00:00"', "workdir: /scratch"]

# case -> (lines replaced by index, lines appended, expected message after "<file>:")
SCHEMA_ERRORS = {
    "scheduler": ({1: "scheduler: sge"}, [],
                  "2: scheduler: expected 'local', 'slurm' or 'pbs' (got 'sge')"),
    "nodes": ({2: "nodes: 0"}, [], "3: nodes: expected >= 1 (got 0)"),
    "gpus_per_node": ({3: "gpus_per_node: four"}, [],
                      "4: gpus_per_node: expected a valid integer (got 'four')"),
    "gpu_type": ({4: "gpu_type: V100"}, [],
                 "5: gpu_type: expected 'V100-16GB', 'V100-32GB', 'P100-12GB', 'P100-16GB', "
                 "'A100-40GB', 'A100-80GB', 'H100-80GB' or 'cpu' (got 'V100')"),
    "interconnect": ({6: "interconnect_gbps: -1"}, [],
                     "7: interconnect_gbps: expected > 0 (got -1)"),
    "mpi": ({7: "mpi: slurm"}, [],
            "8: mpi: expected 'openmpi', 'mpich', 'intelmpi', 'mvapich2', 'srun', 'srun-pmix' or "
            "'gloo' (got 'slurm')"),
    "directive": ({}, ["directives: ['--qos=high; rm -rf /', 'reservation']"],
                  "12: directives[1]: expected one scheduler option such as \"--reservation=big\" or "
                  "\"-l place=scatter\" (got 'reservation')"),
    "interface": ({}, ["network_interface: ib0 eth0"],
                  "12: network_interface: expected a network interface name such as ib0, eth0 or ipogif0 "
                  "(got 'ib0 eth0')"),
    "constraint_on_pbs": ({1: "scheduler: pbs"}, ["constraint: gpu"],
                          "12: constraint: applies to scheduler slurm only (PBS: put node features in "
                          "directives) (got 'gpu')"),
    "fabric": ({}, ["fabric: ib"],
               "12: fabric: expected 'tcp', 'infiniband', 'roce', 'omnipath', 'aries' or 'slingshot' "
               "(got 'ib')"),
    "engine": ({8: "engine: tensorflow"}, [],
               "9: engine: expected 'horovod' or 'ddp' (got 'tensorflow')"),
    "walltime": ({9: 'walltime: "48:00"'}, [],
                 '10: walltime: expected "HH:MM:SS" or "D-HH:MM:SS" (longer than zero) '
                 "(got '48:00')"),
    "walltime_zero": ({9: 'walltime: "00:00:00"'}, [],
                      '10: walltime: expected "HH:MM:SS" or "D-HH:MM:SS" (longer than zero) '
                      "(got '00:00:00')"),
    "signal_margin": ({}, ["signal_margin: 5m"],
                      "12: signal_margin: expected seconds or \"MM:SS\" (got '5m')"),
    "signal_margin_too_long": ({}, ["signal_margin: 90000"],
                               "12: signal_margin: expected fewer seconds than the walltime "
                               "24:00:00 (got 90000)"),
    "env_name": ({}, ["env:", "  GOOD: x", "  1BAD: y"],
                 "14: env.1BAD: expected a shell variable name ([A-Za-z_][A-Za-z0-9_]*) "
                 "(got '1BAD')"),
    "unknown_key": ({}, ["foo: 1"],
                    "12: foo: unknown key; expected one of: name, description, scheduler, nodes, "
                    "gpus_per_node, gpu_type, cpus_per_node, interconnect_gbps, fabric, mpi, engine, "
                    "partition, account, constraint, directives, network_interface, walltime, "
                    "signal_margin, walltime_margin, gpu_directive, modules, env, venv, container, "
                    "workdir, python, faults (got 1)"),
    "missing": ({4: "# no gpu_type"}, [], "1: gpu_type: missing required field"),
    "container_runtime": ({}, ["container:", "  runtime: docker", "  image: /x.sif"],
                          "13: container.runtime: expected 'apptainer' or 'singularity' "
                          "(got 'docker')"),
    "modules_not_list": ({}, ["modules: gcc"], "12: modules: expected a valid list (got 'gcc')"),
    "module_not_string": ({}, ["modules:", "  - gcc", "  - {a: 1}"],
                          "14: modules[1]: expected a valid string (got {a: 1})"),
    "name": ({0: "name: my cluster"}, [],
             "1: name: expected letters, digits, '_', '.' or '-' only (got 'my cluster')"),
    "gpu_directive": ({}, ["gpu_directive: gpus"],
                      "12: gpu_directive: expected 'gres' or 'gpus-per-node' (got 'gpus')"),
}

FILE_ERRORS = {
    "syntax": ("name: t\nscheduler: [slurm\n",
               "3: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    "tab": ("name: t\n\tnodes: 1\n",
            "2: YAML syntax error: found character '\\t' that cannot start any token"),
    "list": ("- a\n- b\n", "1: expected a mapping of field names (got list)"),
    "empty": ("", "1: expected a mapping of field names (got an empty file)"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_ERRORS))
def test_schema_error_is_one_exact_line(variant, case):
    replaced, appended, expected = SCHEMA_ERRORS[case]
    path = variant(case, BASE, replaced, appended)
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert info.value.message == f"{path}:{expected}"
    assert isinstance(info.value, UserError) and info.value.exit_code == 2


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_file_errors_name_file_and_line(tmp_path, case):
    text, expected = FILE_ERRORS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert info.value.message == f"{path}:{expected}"


def test_several_errors_report_the_first_and_count_the_rest(tmp_path):
    path = tmp_path / "two.yaml"
    lines = list(BASE)
    lines[1], lines[2] = "scheduler: sge", "nodes: 0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert info.value.message == (f"{path}:2: scheduler: expected 'local', 'slurm' or 'pbs' "
                                  "(got 'sge') [+1 more error]")


def test_shipped_profiles_are_valid_and_complete():
    names = sorted(p.stem for p in shipped_dir().glob("*.yaml"))
    assert names == ["local", "pbs-v100", "slurm-p100", "slurm-v100"]
    by_name = {p.name: p for p in list_profiles()}
    assert sorted(by_name) == names
    local = by_name["local"]
    assert (local.scheduler, local.gpu_type, local.mpi, local.engine) == \
        ("local", "cpu", "gloo", "horovod")
    assert (local.nodes, local.gpus_per_node) == (1, 2)
    assert (by_name["slurm-p100"].gpus_per_node, by_name["slurm-p100"].gpu_type) == (1, "P100-16GB")
    assert by_name["pbs-v100"].scheduler == "pbs"
    assert by_name["pbs-v100"].container.runtime == "singularity"
    # fabric: what each cluster's network between nodes is (Open MPI's launch line follows it)
    assert {name: p.fabric for name, p in by_name.items()} == {
        "local": "tcp", "pbs-v100": "infiniband", "slurm-p100": "aries", "slurm-v100": "infiniband"}
    for name in names[1:]:  # the three examples say they are examples to copy
        assert "EXAMPLE to copy" in (shipped_dir() / f"{name}.yaml").read_text()


def test_walltime_and_signal_margin_forms(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("\n".join(BASE[:9] + ['walltime: "1-12:00:00"', "workdir: /s",
                                          'signal_margin: "02:30"']) + "\n")
    profile = read_profile(path)
    assert profile.walltime_seconds == 36 * 3600
    assert profile.signal_margin == profile.signal_margin_seconds == 150


def test_env_numbers_become_strings(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("\n".join(BASE + ["env:", "  OMP_NUM_THREADS: 4"]) + "\n")
    assert read_profile(path).env == {"OMP_NUM_THREADS": "4"}


def test_user_profile_overrides_shipped_one_with_the_same_name(user_profile):
    user_profile(name="local", nodes=1, gpus_per_node=3, gpu_type="cpu", filename="mine.yaml")
    profile = load_profile("local")
    assert profile.gpus_per_node == 3
    assert [p.gpus_per_node for p in list_profiles() if p.name == "local"] == [3]


def test_load_by_path_and_unknown_name(user_profile, larsctl_dirs):
    path = user_profile(name="mycluster")
    assert load_profile(str(path)).name == "mycluster"
    assert load_profile("mycluster").source == path
    with pytest.raises(ProfileError) as info:
        load_profile("nosuch")
    assert info.value.message == (
        "unknown cluster 'nosuch'; expected one of: local, mycluster, pbs-v100, slurm-p100, "
        f"slurm-v100 (or add {larsctl_dirs['config'] / 'clusters' / 'nosuch.yaml'})")


def test_local_workdir_expands_larsctl_home(larsctl_dirs):
    assert load_profile("local").expanded_workdir() == larsctl_dirs["home"] / "runs"
    assert expand_path("~/x").startswith("/")
