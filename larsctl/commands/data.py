"""``larsctl data prepare|convert|verify|bench``: ImageNet from the official archives to
the trainer's layouts, checked and measured (the work is in larsctl/data/)."""
from __future__ import annotations

from pathlib import Path

import click

from larsctl.errors import Failure, UserError

WORKERS_HELP = "Worker processes (default: the CPUs this process may use)."


def _call(fn, where: Path):
    """Run the work; a full disk, a permission error or a dead worker is one line, exit 1."""
    from concurrent.futures.process import BrokenProcessPool

    from larsctl.data.common import world_error

    try:
        return fn()
    except (OSError, BrokenProcessPool) as exc:
        raise world_error(exc, where) from None


def _workers(value: int | None) -> int:
    from larsctl.data.common import usable_cpus

    return value or usable_cpus()


def _left_out(left_out: list[dict], manifest: Path, strict: bool) -> None:
    if not left_out:
        return
    noun = "file that does not" if len(left_out) == 1 else "files that do not"
    line = f"left out {len(left_out):,} {noun} decode (listed in {manifest})"
    if strict:
        raise Failure(f"{line}; --strict")
    click.echo(line)


@click.group()
def data() -> None:
    """ImageNet from the official archives to ImageFolder and DALI TFRecords, checked.

    \b
    Example:
      larsctl data prepare ~/Downloads/ILSVRC2012 /scratch/imagenet
      larsctl data convert /scratch/imagenet /scratch/imagenet/tfrecord
      larsctl data verify /scratch/imagenet/tfrecord
      larsctl data bench /scratch/imagenet --cluster mycluster --recipe jobs/resnet50-lars-32k.yaml
    """


@data.command()
@click.argument("archives_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--val-labels", type=click.Path(path_type=Path), metavar="FILE",
              help="Validation labels: ILSVRC2012_devkit_t12.tar.gz, its ILSVRC2012_validation_ground_truth.txt "
                   "(with meta.mat), Kaggle's LOC_val_solution.csv or imagenet_2012_validation_synset_labels.txt "
                   "(default: the first of these found in ARCHIVES_DIR).")
@click.option("--meta", type=click.Path(path_type=Path), metavar="FILE",
              help="The devkit's meta.mat (ILSVRC2012_ID to WNID) for a ground-truth file without it beside.")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=None, help=WORKERS_HELP)
@click.option("--strict", is_flag=True, help="Exit 1 if any image does not decode (it is left out either way).")
def prepare(archives_dir: Path, out: Path, val_labels: Path | None, meta: Path | None, workers: int | None,
            strict: bool) -> None:
    """Unpack the official ILSVRC2012 archives in ARCHIVES_DIR into OUT/train/<wnid>/ and
    OUT/val/<wnid>/ (ImageFolder), with the validation images sorted into class folders.

    ARCHIVES_DIR holds ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and the validation
    labels. The tars are streamed (nothing is unpacked first); a rerun skips finished
    classes; OUT/manifest.json is written last.

    \b
    Example:
      larsctl data prepare ~/Downloads/ILSVRC2012 /scratch/imagenet --workers 8
    """
    from larsctl.data.prepare import prepare as run

    summary = _call(lambda: run(archives_dir, out, val_labels=val_labels, meta=meta,
                                workers=_workers(workers), echo=click.echo), out)
    train, val = summary.counts["train"], summary.counts["val"]
    click.echo(f"wrote {out}: train {summary.images('train'):,} images in {len(train):,} classes "
               f"({summary.classes_written:,} classes written, {summary.classes_skipped:,} already done), "
               f"val {summary.images('val'):,} images in {len(val):,} classes")
    _left_out(summary.left_out, out / "manifest.json", strict)


@data.command()
@click.argument("imagefolder", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--train-shards", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Shards of the train split.")
@click.option("--val-shards", type=click.IntRange(min=1), default=128, show_default=True,
              help="Shards of the validation split.")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=None, help=WORKERS_HELP)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the shuffle of the train images over the shards.")
@click.option("--strict", is_flag=True, help="Exit 1 if any image does not decode (it is left out either way).")
def convert(imagefolder: Path, out: Path, train_shards: int, val_shards: int, workers: int | None, seed: int,
            strict: bool) -> None:
    """Convert IMAGEFOLDER (train/, val/) to TFRecord shards with DALI index files in OUT
    (train/train-00000-of-01024, validation/..., idx_files/...), as the trainer's
    --data dali reads them. Labels are the sorted class index + 1.

    CMYK, grayscale and PNG images are re-encoded as RGB JPEG; an image that does not
    decode is reported and left out. Deterministic and resumable: a rerun writes only
    the missing shards.

    \b
    Example:
      larsctl data convert /scratch/imagenet /scratch/imagenet/tfrecord --workers 16
    """
    from larsctl.data.convert import convert as run

    summary = _call(lambda: run(imagefolder, out, train_shards=train_shards, val_shards=val_shards,
                                workers=_workers(workers), seed=seed, echo=click.echo), out)
    parts = [f"{split} {info['images']:,} records in {len(info['shards']):,} shards"
             for split, info in summary.splits.items()]
    click.echo(f"wrote {out}: {', '.join(parts)} ({summary.shards_written:,} shards written, "
               f"{summary.shards_skipped:,} already done); {summary.reencoded:,} images re-encoded as RGB JPEG")
    _left_out(summary.left_out, out / "manifest.json", strict)


@data.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--full", is_flag=True, help="Decode every image / record, and recount the classes from the labels.")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=None, help=WORKERS_HELP)
def verify(directory: Path, full: bool, workers: int | None) -> None:
    """Check a data set in either layout; exit 1 listing every mismatch.

    ImageFolder: train and val have the same classes, none empty, counts per class as
    in manifest.json, a sample decodes. TFRecord: every shard present with its DALI
    index, the index matching the shard, the shard's sha256 matching manifest.json,
    labels in range, a sample decodes. --full decodes everything.

    \b
    Example:
      larsctl data verify /scratch/imagenet/tfrecord --full
    """
    from larsctl.data.verify import verify as run

    report = _call(lambda: run(directory, full=full, workers=_workers(workers)), directory)
    for line in report.lines:
        click.echo(line)
    for problem in report.problems:
        click.echo(f"mismatch: {problem}", err=True)
    if report.problems:
        raise Failure(f"{directory}: {len(report.problems):,} mismatch(es) in the {report.layout} data set")
    click.echo(f"ok: {directory} ({report.layout})")


@data.command()
@click.argument("dirs", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cluster", "-c", help="Cluster profile whose nodes the plan runs on (with --recipe).")
@click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe to plan (with --cluster): what the GPUs will need per second.")
@click.option("--workers", default="0,1,2", show_default=True,
              help="DataLoader workers (ImageFolder) / DALI threads to measure, comma-separated.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Per-rank batch.")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="Crop size in pixels (default: the recipe's, else 224).")
@click.option("--batches", type=click.IntRange(min=1), default=20, show_default=True,
              help="Batches timed per loader, after its start-up and prefetched batches.")
def bench(dirs: tuple[Path, ...], cluster: str | None, recipe: Path | None, workers: str, batch_size: int,
          image_size: int | None, batches: int) -> None:
    """Images/s of the trainer's input pipeline on this node for each DIR (ImageFolder:
    DataLoader workers; TFRecord: DALI on the CPU, and mixed GPU decoding where a GPU
    is visible), and whether that would starve the GPUs of a plan.

    \b
    Example:
      larsctl data bench /scratch/imagenet /scratch/imagenet/tfrecord \\
          --cluster mycluster --recipe jobs/resnet50-lars-32k.yaml
    """
    from larsctl.data import bench as mod

    try:
        counts = tuple(sorted({int(w) for w in workers.split(",")}))
        if min(counts) < 0:
            raise ValueError
    except ValueError:
        raise UserError(f"--workers {workers!r}: expected comma-separated integers >= 0, such as 0,1,2") from None
    if (cluster is None) != (recipe is None):
        raise UserError("--cluster and --recipe go together: the plan needs both")
    need = None
    if recipe is not None:
        if not recipe.is_file():
            raise UserError(f"--recipe {recipe}: no such file")
        need = mod.plan_need(cluster, recipe)
        counts = tuple(sorted(set(counts) | {need.workers}))  # measure what the recipe runs with too
    size = image_size or (need.image_size if need else mod.trainer_default("image_size"))
    measurements = []
    for directory in dirs:
        measurements += _call(lambda: mod.measure(directory, image_size=size, batch_size=batch_size,
                                                  workers=counts, batches=batches), directory)
    for line in mod.describe(measurements, size, batch_size, batches):
        click.echo(line)
    if need is not None:
        click.echo(f"against {need.cluster}, {need.recipe}:")
        for line in mod.verdict(measurements, need):
            click.echo(line)
