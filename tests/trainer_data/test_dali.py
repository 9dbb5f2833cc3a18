"""The DALI TFRecord loaders read the same images, with the same labels, as ImageFolder."""
from __future__ import annotations

import pytest
import torch

from trainer.data import DataConfig, DataError, build_loaders


def config(digits, kind: str, **overrides) -> DataConfig:
    values = dict(kind=kind, train_dir=str(digits.train_dir), val_dir=str(digits.val_dir),
                  data_dir=str(digits.data_dir), image_size=32, batch_size=32, val_batch_size=100, workers=1)
    return DataConfig(**{**values, **overrides})


def whole(stream) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*[(x.cpu(), y.cpu()) for x, y in stream])
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def imagefolder_val(digits):
    return whole(build_loaders(config(digits, "imagefolder", workers=0)).val)


@pytest.fixture(scope="module")
def dali_val(digits):
    return whole(build_loaders(config(digits, "dali")).val)


def test_cpu_pipeline_reads_the_val_set_with_zero_based_labels(dali_val, imagefolder_val):
    (xd, yd), (xi, yi) = dali_val, imagefolder_val
    assert xd.shape == (360, 3, 32, 32) and xd.dtype == torch.float32 and yd.dtype == torch.int64
    assert torch.equal(torch.bincount(yd, minlength=10), torch.bincount(yi, minlength=10))
    # Same scans (JPEG vs PNG, DALI vs PIL resizing): each DALI image's nearest ImageFolder
    # image carries the same label and is far closer than unrelated images are.
    dist = torch.cdist(xd.flatten(1), xi.flatten(1))
    nearest = dist.min(dim=1)
    assert torch.equal(yi[nearest.indices], yd)
    assert nearest.values.max() < 0.5 * dist.median()
    assert abs(xd.mean() - xi.mean()) < 0.02 and abs(xd.std() - xi.std()) < 0.02
    for c in range(10):
        by_mean = [x[y == c].mean(dim=(1, 2, 3)).sort().values for x, y in (dali_val, imagefolder_val)]
        assert (by_mean[0] - by_mean[1]).abs().max() < 0.1


def test_two_ranks_split_the_records(digits, dali_val):
    shards = [build_loaders(config(digits, "dali"), rank, 2) for rank in (0, 1)]
    val = [whole(s.val) for s in shards]
    assert [len(y) for _, y in val] == [180, 180] and [len(s.val) for s in shards] == [2, 2]
    both = torch.cat([x for x, _ in val]).flatten(1)
    match = torch.cdist(both, dali_val[0].flatten(1), compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    assert match.values.max() < 1e-4 and len(set(match.indices.tolist())) == 360  # disjoint, complete
    assert torch.equal(torch.cat([y for _, y in val]), dali_val[1][match.indices])
    for loaders in shards:  # equal micro-batch counts on every rank, every epoch
        counts = []
        for epoch in range(2):
            loaders.set_epoch(epoch)
            counts.append(sum(1 for _ in loaders.train))
        assert counts == [loaders.steps_per_epoch(1)] * 2 == [1437 // 2 // 32] * 2
        loaders.set_epoch(2, start_batch=20)
        images, labels = next(iter(loaders.train))
        assert len(loaders.train) == 2 and images.shape == (32, 3, 32, 32) and 0 <= labels.min() <= labels.max() < 10


def test_padded_validation_shards_have_equal_counts(digits):
    """360 records over 7 ranks: shards of 51 or 52; the short ones repeat a sample to reach 52."""
    sizes = [len(whole(build_loaders(config(digits, "dali", val_batch_size=26), rank, 7).val)[1])
             for rank in (0, 6)]
    assert sizes == [52, 52]


def test_missing_tfrecords_and_gpu_without_cuda_are_reported(tmp_path, digits):
    with pytest.raises(DataError, match=rf"^{tmp_path}/train: TFRecord directory not found"):
        build_loaders(DataConfig(kind="dali", data_dir=str(tmp_path), image_size=32))
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match=r"^use_gpu: DALI mixed decoding needs a CUDA device"):
            build_loaders(config(digits, "dali", use_gpu=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for DALI mixed decoding")
def test_mixed_gpu_decoding_matches_the_cpu_pipeline(digits, dali_val):
    loaders = build_loaders(config(digits, "dali", use_gpu=True))
    images, labels = next(iter(loaders.val))
    assert images.is_cuda and images.shape == (100, 3, 32, 32)
    xg, yg = whole(loaders.val)
    assert torch.equal(yg, dali_val[1])
    assert (xg - dali_val[0]).abs().mean() < 0.05  # nvJPEG and libjpeg-turbo differ slightly
    loaders.set_epoch(0)
    x, y = next(iter(loaders.train))
    assert x.is_cuda and x.shape == (32, 3, 32, 32) and 0 <= y.min() <= y.max() < 10
