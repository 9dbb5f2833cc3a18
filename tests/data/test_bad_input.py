"""Bad input and a full disk: one line, exit 2 (input) or 1 (the world), nothing half-written
left looking complete."""
from __future__ import annotations

import json
import os
import resource
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.data.helpers import TRAIN_SHARDS, VAL_SHARDS, cli, one_line, run_cli, tree

REPO = Path(__file__).resolve().parents[2]


def copy_archives(src: Path, dst: Path, *names: str) -> Path:
    dst.mkdir()
    for name in names:
        (dst / name).symlink_to(src / name)
    return dst


def unpacked_devkit(archives: Path, where: Path) -> Path:
    with tarfile.open(archives / "ILSVRC2012_devkit_t12.tar.gz") as devkit:
        devkit.extractall(where, filter="data")
    return where / "ILSVRC2012_devkit_t12" / "data"


def test_missing_train_archive(archives, tmp_path):
    src = copy_archives(archives[0], tmp_path / "a", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")
    r = cli("prepare", src, tmp_path / "out")
    assert r.exit_code == 2 and r.stdout == ""
    assert one_line(r) == (f"Error: {src}/ILSVRC2012_img_train.tar: not found; expected the official train "
                           "archive (1,000 per-class tars such as n01440764.tar)")
    assert not (tmp_path / "out").exists()


def test_missing_validation_labels(archives, tmp_path):
    src = copy_archives(archives[0], tmp_path / "a", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
    r = cli("prepare", src, tmp_path / "out")
    assert r.exit_code == 2
    assert one_line(r).startswith(f"Error: {src}: no validation labels found; expected the devkit "
                                  "ILSVRC2012_devkit_t12.tar.gz, its ILSVRC2012_validation_ground_truth.txt")


def test_ground_truth_with_the_wrong_line_count(archives, tmp_path):
    data = unpacked_devkit(archives[0], tmp_path / "devkit")
    truth = data / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("".join(truth.read_text().splitlines(keepends=True)[:-1]))
    r = cli("prepare", archives[0], tmp_path / "out", "--val-labels", truth)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {truth}: 8 lines, expected 9 (one ILSVRC2012_ID for each image of the "
                           "validation archive, in file-name order)")
    assert not (tmp_path / "out").exists()


def test_a_sorted_synset_list_is_refused_as_the_id_mapping(archives, tmp_path):
    data = unpacked_devkit(archives[0], tmp_path / "devkit")
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} class {w}\n" for w in archives[1].classes))
    r = cli("prepare", archives[0], tmp_path / "out", "--val-labels", data / "ILSVRC2012_validation_ground_truth.txt",
            "--meta", mapping)
    assert r.exit_code == 2
    line = one_line(r)
    assert line.startswith(f"Error: {mapping}: a synset list (such as LOC_synset_mapping.txt), not the devkit's "
                           "meta.mat: its lines are in sorted WNID order, not ILSVRC2012_ID order")


def test_kaggle_csv_without_a_row_for_an_image(archives, tmp_path):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("".join((archives[0] / "LOC_val_solution.csv").read_text().splitlines(keepends=True)[:-1]))
    r = cli("prepare", archives[0], tmp_path / "out", "--val-labels", csv)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {csv}: 8 images, expected 9 (one row for each image of the validation "
                           "archive)")


def test_output_directory_that_holds_another_data_set(archives, prepared, converted, tmp_path):
    other = tmp_path / "other"
    (other / "train" / "cats").mkdir(parents=True)
    (other / "train" / "cats" / "1.jpg").write_bytes(b"not ours")
    r = cli("prepare", archives[0], other)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {other}: holds files that `larsctl data prepare` did not write (train); "
                           "expected a new or empty directory")
    assert sorted(str(p.relative_to(other)) for p in other.rglob("*")) == ["train", "train/cats", "train/cats/1.jpg"]

    r = cli("convert", prepared, prepared)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {prepared}: holds an ImageFolder data set written by `larsctl data prepare`; "
                           "expected a new or empty directory for `larsctl data convert`")
    r = cli("prepare", archives[0], converted)
    assert r.exit_code == 2
    assert "holds a TFRecord data set written by `larsctl data convert`" in one_line(r)
    r = cli("convert", prepared, converted, "--train-shards", "3", "--val-shards", VAL_SHARDS)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {converted}: was started by `larsctl data convert` with train_shards "
                           f"{TRAIN_SHARDS}, now 3; use a new directory, or the same inputs and options to continue it")


def test_convert_refuses_class_sets_that_differ_and_too_many_shards(prepared, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(prepared, src, ignore=shutil.ignore_patterns(".larsctl", "manifest.json"))
    r = cli("convert", src, tmp_path / "out", "--train-shards", "100", "--val-shards", "1")
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: --train-shards 100: more shards than the 23 images in {src}/train; "
                           "expected at most 23")
    shutil.rmtree(next((src / "val").iterdir()))
    r = cli("convert", src, tmp_path / "out")
    assert r.exit_code == 2
    assert one_line(r).startswith(f"Error: {src}/val: class folders differ from {src}/train: only in train [")
    assert not (tmp_path / "out").exists()


def test_an_undecodable_image_is_named_and_left_out_and_strict_exits_1(prepared, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(prepared, src, ignore=shutil.ignore_patterns(".larsctl", "manifest.json"))
    bad = next((src / "train").iterdir()) / "broken.JPEG"
    bad.write_bytes(b"<html>an error page saved as .JPEG</html>")
    r = cli("convert", src, tmp_path / "out", "--train-shards", "2", "--val-shards", "1", "--strict",
            "--workers", "1")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"Warning: {bad}: cannot decode (not an image format Pillow reads); left out"
    assert lines[-1] == (f"Error: left out 1 file that does not decode (listed in {tmp_path / 'out'}/manifest.json); "
                         "--strict")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [item["path"] for item in manifest["left_out"]] == [str(bad)]
    assert manifest["splits"]["train"]["images"] == 23


def test_bad_arguments_of_verify_and_bench(tmp_path):
    r = cli("verify", tmp_path / "nope")
    assert r.exit_code == 2
    assert one_line(r) == f"Error: {tmp_path / 'nope'}: nothing at this path; {EXPECTED_DATA_SET}"
    r = cli("bench", tmp_path, "--recipe", REPO / "jobs" / "demo.yaml")
    assert r.exit_code == 2
    assert one_line(r) == "Error: --cluster and --recipe go together: the plan needs both"
    r = cli("bench", tmp_path, "--workers", "a,b")
    assert r.exit_code == 2
    assert one_line(r) == "Error: --workers 'a,b': expected comma-separated integers >= 0, such as 0,1,2"


EXPECTED_DATA_SET = ("expected a data set directory: TFRecord shards from `larsctl data convert` (train/, "
                     "validation/, idx_files/) or ImageFolder class folders from `larsctl data prepare` (train/, val/)")


def test_verify_of_a_file_says_it_expects_a_directory_and_what_it_found(converted, tmp_path):
    shard = converted / "train" / "train-00000-of-00004"
    r = run_cli("verify", shard)  # a real process: one line on stderr, exit 2
    assert r.returncode == 2 and r.stdout == ""
    assert one_line(r) == f"Error: {shard}: a TFRecord shard, not a directory; {EXPECTED_DATA_SET}"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a data set\n")
    r = cli("verify", notes)
    assert r.exit_code == 2
    assert one_line(r) == f"Error: {notes}: a file, not a directory; {EXPECTED_DATA_SET}"
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "moved")
    r = cli("verify", link)
    assert r.exit_code == 2
    assert one_line(r) == (f"Error: {link}: a broken symbolic link (to {tmp_path / 'moved'}); "
                           f"{EXPECTED_DATA_SET}")


# --- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(mount_tmpfs):
    """A 384 KiB tmpfs."""
    return mount_tmpfs("384k")


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system but `leave` bytes."""
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    filler = mnt / "filler"
    filler.write_bytes(b"x" * (free - leave))
    return filler


def test_full_disk_during_prepare(archives, small_tmpfs):
    out = small_tmpfs / "imagenet"
    fill(small_tmpfs, 64 * 1024)  # room for the claim and a class or two
    r = run_cli("prepare", archives[0], out, "--workers", "1")
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: no space left while writing ") and line.endswith(": No space left on device")
    assert "Traceback" not in r.stderr
    assert not (out / "manifest.json").exists() and not (out / "val").exists()
    assert not list((out / ".larsctl" / "partial" / "train").glob("*"))  # half a class was removed again
    truth = archives[1]
    for folder in (out / "train").iterdir() if (out / "train").exists() else []:
        expected = {n for n in truth.train[folder.name]
                    if f"ILSVRC2012_img_train.tar/{folder.name}.tar/{n}" not in truth.undecodable}
        assert {p.name for p in folder.iterdir()} == expected  # only whole classes in train/


def test_file_size_limit_during_convert(prepared, tmp_path):
    """RLIMIT_FSIZE (EFBIG) in the command and its workers: one line, exit 1, no shard that
    looks finished but is not, no temporary file left."""
    out = tmp_path / "out"
    r = run_cli("convert", prepared, out, "--train-shards", "2", "--val-shards", "1", "--workers", "2",
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)))
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"Error: no space left while writing {out}: File too large"
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.rglob(".*.tmp")]
    assert not [p for p in (out / "train").iterdir()]


def test_full_disk_during_convert_then_more_room(prepared, converted, small_tmpfs):
    out = small_tmpfs / "tfrecord"
    filler = fill(small_tmpfs, 64 * 1024)
    args = ("convert", prepared, out, "--train-shards", TRAIN_SHARDS, "--val-shards", VAL_SHARDS, "--workers", "1")
    r = run_cli(*args)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("No space left on device")
    assert not (out / "manifest.json").exists() and not [p for p in out.rglob(".*.tmp")]
    for shard in (out / "train").iterdir():  # whatever is there is whole
        record = json.loads((out / ".larsctl" / "done" / "train" / f"{shard.name}.json").read_text())
        assert shard.read_bytes() == (converted / "train" / shard.name).read_bytes()
        assert shard.stat().st_size == record["bytes"]
    filler.unlink()
    r = cli(*args)  # with room again, continued in this process
    assert r.exit_code == 0, r.output
    assert tree(out) == tree(converted)  # as if the disk had never been full


def test_prepare_strict_exits_1_after_doing_the_work(archives, tmp_path):
    out = tmp_path / "out"
    r = cli("prepare", archives[0], out, "--strict", "--workers", "1")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (f"Error: left out 1 file that does not decode (listed in "
                                                 f"{out}/manifest.json); --strict")
    assert (out / "manifest.json").is_file()  # the rest is there; a rerun with --strict says the same
