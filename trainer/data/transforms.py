"""ImageNet train/val transforms whose randomness comes from an explicit generator.

torchvision's RandomResizedCrop and RandomHorizontalFlip draw from the global torch
RNG, so a sample's augmentation would depend on what ran before it in that process
(other samples, worker assignment, the model). Here every random draw takes a
generator seeded from (seed, epoch, sample index), which makes an interrupted and
resumed run see exactly the same pixels as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, index), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return torch.empty(1).uniform_(low, high, generator=gen).item()


def crop_params(width: int, height: int, gen: torch.Generator,
                scale=SCALE, ratio=RATIO) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from `gen` (same distribution)."""
    area = height * width
    # float32 logs and exp, as torchvision computes them, so the draws map to the same crops
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], gen)
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            j = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return i, j, h, w
    in_ratio = width / height  # fallback: central crop, as torchvision does
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _normalize(img: Image.Image) -> torch.Tensor:
    return F.normalize(F.to_tensor(img), MEAN, STD)


def train_transform(img: Image.Image, size: int, gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor + Normalize."""
    i, j, h, w = crop_params(img.width, img.height, gen)
    img = F.resized_crop(img, i, j, h, w, [size, size], antialias=True)
    if torch.rand(1, generator=gen).item() < 0.5:
        img = F.hflip(img)
    return _normalize(img)


def val_size(size: int) -> int:
    """The shorter side before the center crop: 256 for 224, scaled alike for other sizes."""
    return int(round(size * 256 / 224))


def val_transform(img: Image.Image, size: int) -> torch.Tensor:
    """Resize(size*256/224) + CenterCrop(size) + ToTensor + Normalize."""
    img = F.resize(img, val_size(size), antialias=True)
    return _normalize(F.center_crop(img, [size, size]))
