"""The TFRecord checksum (google-crc32c) is TensorFlow's masked CRC-32C, bit for bit."""
from __future__ import annotations

import os

import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorflow_masked_crc32c

from trainer.data.tfrecord import masked_crc32c


@pytest.mark.parametrize("size", [0, 1, 8, 255, 4096, 100_000])
def test_masked_crc32c_matches_tensorflows(size):
    data = os.urandom(size)
    assert masked_crc32c(data) == tensorflow_masked_crc32c(data)
