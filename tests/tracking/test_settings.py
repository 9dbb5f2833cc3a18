"""The tracking settings: the recipe's tracking: section, submit's --track, job.yaml, and the refusals
(one line naming the field or flag and what was expected, exit 2, nothing written)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from larsctl.config.recipes import RecipeError, load_recipe
from larsctl.planning.spec import JobSpec, resolve_job
from trainer.tracking import TrackingError, TrackingSettings, merge, parse_track

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "demo.yaml"
SMALL = ["--recipe", str(DEMO), "--target-batch", "16", "--per-gpu-batch", "8", "--set", "image_size=16"]

TRACK_FLAGS = {
    "mlflow:http://mlflow.example:5000": {"backend": "mlflow", "uri": "http://mlflow.example:5000"},
    "mlflow:~/mlruns": {"backend": "mlflow", "uri": "~/mlruns"},
    "wandb": {"backend": "wandb"},
    "wandb:offline": {"backend": "wandb", "mode": "offline"},
    "wandb:online": {"backend": "wandb", "mode": "online"},
    "off": None,
}


@pytest.mark.parametrize("flag", sorted(TRACK_FLAGS))
def test_track_flags(flag):
    assert parse_track(flag) == TRACK_FLAGS[flag]


@pytest.mark.parametrize("flag", ["mlflow", "mlflow:", "wandb:later", "tensorboard", "off:now"])
def test_a_bad_track_flag_is_named(flag):
    with pytest.raises(TrackingError) as info:
        parse_track(flag)
    assert str(info.value).startswith(f"--track {flag!r}: expected mlflow:URI")


SECTION_ERRORS = {
    "no backend": ({"uri": "x"}, "tracking.backend: expected one of mlflow, wandb, got None"),
    "unknown backend": ({"backend": "neptune"}, "tracking.backend: expected one of mlflow, wandb, got 'neptune'"),
    "mlflow without uri": ({"backend": "mlflow"}, "tracking.uri: mlflow needs a tracking URI or a local directory "
                                                  "(e.g. http://mlflow.example:5000 or ~/mlruns)"),
    "mlflow with mode": ({"backend": "mlflow", "uri": "x", "mode": "offline"},
                         "tracking.mode: only for wandb (mlflow takes uri and experiment)"),
    "wandb with uri": ({"backend": "wandb", "uri": "x"},
                       "tracking.uri: only for mlflow (wandb takes mode, entity, dir, experiment)"),
    "wandb mode": ({"backend": "wandb", "mode": "sometimes"},
                   "tracking.mode: expected offline or online, got 'sometimes'"),
    "unknown key": ({"backend": "wandb", "project": "p"},
                    "tracking: unknown field 'project' (expected backend, uri, mode, experiment, entity, dir)"),
    "number": ({"backend": "wandb", "experiment": 3}, "tracking.experiment: expected a non-empty string, got 3"),
    "experiment": ({"backend": "wandb", "experiment": "a;b"},
                   "tracking.experiment: expected up to 128 letters, digits and _.:/- (got 'a;b')"),
}


@pytest.mark.parametrize("case", sorted(SECTION_ERRORS))
def test_a_bad_tracking_section_names_its_field(case):
    section, message = SECTION_ERRORS[case]
    with pytest.raises(TrackingError) as info:
        TrackingSettings.from_dict(section)
    assert str(info.value) == message


def test_a_recipe_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ntarget_batch: 256\ntracking:\n  backend: mlflow\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.message == (f"{path}:3: tracking: uri: mlflow needs a tracking URI or a local directory "
                                  "(e.g. http://mlflow.example:5000 or ~/mlruns) (got {backend: mlflow})")


def test_the_flag_goes_over_the_recipe():
    recipe = {"backend": "wandb", "mode": "online", "experiment": "lars", "entity": "team"}
    assert merge(recipe, parse_track("wandb:offline")) == {**recipe, "mode": "offline"}
    assert merge(recipe, parse_track("wandb")) == recipe
    assert merge(recipe, parse_track("mlflow:/x")) == {"backend": "mlflow", "uri": "/x"}
    assert merge(recipe, parse_track("off")) == {}


def test_job_yaml_carries_the_settings_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(DEMO.read_text() + "tracking:\n  backend: wandb\n  dir: $RUNS/wandb\n"
                      "  experiment: lars-study\n")
    spec = resolve_job("local", recipe)
    assert spec.tracking == TrackingSettings("wandb", experiment="lars-study", dir=str(tmp_path / "runs/wandb"))
    text = spec.to_yaml()
    assert "tracking:\n  backend: wandb\n  experiment: lars-study\n" in text
    assert JobSpec.from_yaml(text).tracking == spec.tracking
    relative = TrackingSettings.from_dict({"backend": "mlflow", "uri": "store"}).absolute()
    assert relative.uri == str(tmp_path / "store")
    assert TrackingSettings("mlflow", uri="http://h:5000").absolute().uri == "http://h:5000"
    assert "tracking" not in resolve_job("local", DEMO).to_dict()  # an untracked job's job.yaml as before


def _larsctl(*args, hide: str | None = None, cwd=REPO):
    """The CLI in a real process; ``hide``: a library made unimportable there, as if not installed."""
    code = "import sys\n"
    if hide:
        code += f"sys.modules[{hide!r}] = None\n"
    code += "from larsctl.cli import main\nsys.argv = ['larsctl', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("backend,track", [("mlflow", "mlflow:/tmp/nowhere"), ("wandb", "wandb")])
def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(backend, track, larsctl_dirs):
    for args in (["--track", track], ["--track", track, "--dry-run"]):
        r = _larsctl("submit", "--cluster", "local", *SMALL, *args, hide=backend)
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr.splitlines() == [
            f"Error: tracking.backend {backend}: needs the {backend} package, which {sys.executable} does not "
            f"have: pip install 'larsctl[{backend}]'"]
    assert not (larsctl_dirs["home"] / "runs").exists() and not (larsctl_dirs["home"] / "jobs.sqlite").exists()


def test_a_recipe_asking_for_a_missing_tracker_is_refused_too(tmp_path, larsctl_dirs):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(DEMO.read_text() + "tracking:\n  backend: wandb\n")
    r = _larsctl("submit", "--cluster", "local", "--recipe", str(recipe), hide="wandb")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("Error: tracking.backend wandb: needs the wandb package")
    assert not (larsctl_dirs["home"] / "runs").exists()


def test_a_bad_flag_is_one_line(larsctl_dirs):
    r = _larsctl("submit", "--cluster", "local", *SMALL, "--track", "wandb:later", "--dry-run")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == ["Error: --track 'wandb:later': expected mlflow:URI (a tracking URI or a "
                                     "local directory), wandb, wandb:offline, wandb:online or off"]
