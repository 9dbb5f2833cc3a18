"""ImageFolder loaders: exact, resumable order and augmentation; rank sharding; bad input."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from trainer.data import DataConfig, DataError, build_loaders
from trainer.data.sampling import PaddedEvalSampler, ResumableTrainSampler, epoch_order


def config(digits, **overrides) -> DataConfig:
    values = dict(kind="imagefolder", train_dir=str(digits.train_dir), val_dir=str(digits.val_dir),
                  image_size=32, batch_size=16, val_batch_size=128, workers=0, seed=7)
    return DataConfig(**{**values, **overrides})


def epoch_batches(loaders, epoch: int, start_batch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loaders.set_epoch(epoch, start_batch)
    return [(images.clone(), labels.clone()) for images, labels in loaders.train]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_are_a_pure_function_of_seed_and_epoch(digits):
    first = build_loaders(config(digits), rank=1, world_size=4)
    again = build_loaders(config(digits), rank=1, world_size=4)
    torch.manual_seed(123)  # the global RNG plays no part, and is left untouched
    before = torch.get_rng_state()
    batches = epoch_batches(first, 3)
    assert torch.equal(torch.get_rng_state(), before)
    assert_same(batches, epoch_batches(again, 3))
    assert len(batches) == first.steps_per_epoch(1) == 1437 // 4 // 16
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    first.set_epoch(4)
    assert not torch.equal(next(iter(first.train))[0], x)  # a new epoch reshuffles and re-augments
    other_seed = build_loaders(config(digits, seed=8), 1, 4)
    other_seed.set_epoch(3)
    assert not torch.equal(next(iter(other_seed.train))[0], x)


def test_resume_yields_exactly_the_tail_of_the_epoch_in_a_new_process_state(digits):
    """A restarted run (fresh loaders, worker processes this time) picks up at micro-batch 5."""
    full = epoch_batches(build_loaders(config(digits), 0, 4), 2)
    resumed = build_loaders(config(digits, workers=2), 0, 4)
    assert len(resumed.train) == len(full)
    tail = epoch_batches(resumed, 2, start_batch=5)
    assert len(resumed.train) == len(full) - 5  # the skipped micro-batches are never loaded
    assert_same(tail, full[5:])
    assert_same(epoch_batches(resumed, 2), full)  # and a later epoch starts at 0 again


def test_train_stream_yields_whole_optimizer_steps(digits):
    loaders = build_loaders(config(digits, batch_size=64, batches_per_allreduce=4), 0, 2)
    assert loaders.batches_per_epoch == 1437 // 2 // 64 == 11
    assert loaders.steps_per_epoch(4) == len(loaders.train) == 8
    assert loaders.steps_per_epoch(1) == 11 and loaders.steps_per_epoch(3) == 9


def test_ranks_read_disjoint_samples_and_regroup_across_world_sizes():
    n, batch = 1000, 16
    samplers = [ResumableTrainSampler(n, rank, 2, batch, 20, seed=5, batches_per_allreduce=2) for rank in (0, 1)]
    for s in samplers:
        s.set_epoch(3)
    keys = [list(s) for s in samplers]
    assert not {i for _, i in keys[0]} & {i for _, i in keys[1]}
    assert {epoch for epoch, _ in keys[0] + keys[1]} == {3}  # the epoch travels with each key
    # One optimizer step of 2 ranks x 2 micro-batches = one step of 1 rank x 4 micro-batches,
    # micro-batch by micro-batch (the same BatchNorm batches): step s is positions [sB, (s+1)B).
    single = ResumableTrainSampler(n, 0, 1, batch, 40, seed=5, batches_per_allreduce=4)
    single.set_epoch(3)
    alone = [i for _, i in single]
    order = epoch_order(n, 5, 3).tolist()
    for step in range(10):
        split = [[i for _, i in keys[rank][(2 * step + j) * batch:(2 * step + j + 1) * batch]]
                 for rank in (0, 1) for j in (0, 1)]
        assert split == [alone[(4 * step + j) * batch:(4 * step + j + 1) * batch] for j in range(4)]
        assert sum(split, []) == order[step * 4 * batch:(step + 1) * 4 * batch]
    with pytest.raises(ValueError, match="whole steps"):
        ResumableTrainSampler(n, 0, 1, batch, 7, seed=5, batches_per_allreduce=2)


def test_validation_is_split_across_ranks_with_equal_counts():
    shards = [list(PaddedEvalSampler(10, rank, 3)) for rank in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted({i for s in shards for i in s}) == list(range(10))


def test_val_loader_covers_the_val_set_in_order(digits):
    loaders = build_loaders(config(digits), 0, 1)
    labels = torch.cat([y for _, y in loaders.val])
    assert loaders.val_samples == len(labels) == 360 and loaders.num_classes == 10
    assert torch.equal(labels, labels.sort().values)  # ImageFolder order: class by class
    again = torch.cat([x for x, _ in loaders.val])
    assert torch.equal(again, torch.cat([x for x, _ in build_loaders(config(digits), 0, 1).val]))


# --- bad input ------------------------------------------------------------------------------

def tiny_tree(root, classes=("a", "b"), per_class=3):
    for c in classes:
        (root / c).mkdir(parents=True)
        for n in range(per_class):
            Image.new("RGB", (12, 10), (n * 40, 0, 0)).save(root / c / f"{n}.png")
    return root


def tiny(tmp_path, **overrides) -> DataConfig:
    values = dict(kind="imagefolder", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                  image_size=8, batch_size=2, val_batch_size=2, workers=0)
    return DataConfig(**{**values, **overrides})


def test_missing_and_empty_dirs_are_named(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path}/train: train_dir not found"):
        build_loaders(tiny(tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=rf"^{tmp_path}/train: train_dir has no class folders"):
        build_loaders(tiny(tmp_path))
    (tmp_path / "train" / "a").mkdir()
    with pytest.raises(DataError, match=rf"^{tmp_path}/train: train_dir: .*no valid file.*\ba\b"):
        build_loaders(tiny(tmp_path))
    with pytest.raises(DataError, match=r"^val_dir: no directory given"):
        tiny_tree(tmp_path / "ok")
        build_loaders(tiny(tmp_path, train_dir=str(tmp_path / "ok"), val_dir=None))


def test_class_folder_mismatch_is_reported(tmp_path):
    tiny_tree(tmp_path / "train", ("a", "b", "c"))
    tiny_tree(tmp_path / "val", ("a", "b", "d"))
    with pytest.raises(DataError, match=r"class folders differ .*only in train \['c'\], only in val \['d'\]"):
        build_loaders(tiny(tmp_path))


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_reported_with_its_path(tmp_path, workers):
    tiny_tree(tmp_path / "train")
    tiny_tree(tmp_path / "val")
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    loaders = build_loaders(tiny(tmp_path, workers=workers))
    with pytest.raises(DataError) as err:
        list(loaders.train)  # 3 batches of 2: every train image
    assert str(err.value).startswith(f"{bad}: cannot read image (")
    assert "\n" not in str(err.value)


def test_batch_larger_than_the_rank_share_is_rejected(tmp_path):
    tiny_tree(tmp_path / "train")
    tiny_tree(tmp_path / "val")
    with pytest.raises(DataError, match=r"6 training samples are fewer than one optimizer step of "
                                        r"batch_size 2 x 2 ranks x batches_per_allreduce 2"):
        build_loaders(tiny(tmp_path, batches_per_allreduce=2), 0, 2)


def test_config_values_are_checked(tmp_path):
    with pytest.raises(DataError, match=r"^data: expected one of imagefolder, dali, synthetic, got 'webdataset'"):
        build_loaders(DataConfig(kind="webdataset"))
    with pytest.raises(DataError, match=r"^batch_size: expected a positive integer, got 0"):
        build_loaders(DataConfig(kind="synthetic", batch_size=0))
    shutil.rmtree(tmp_path, ignore_errors=True)
