"""ImageNet train/val transforms whose randomness comes from an explicit generator.

torchvision's RandomResizedCrop and RandomHorizontalFlip draw from the global torch
RNG, so a sample's augmentation would depend on what ran before it in that process
(other samples, worker assignment, the model). Here every random draw takes a
generator seeded from (seed, epoch, sample index), which makes an interrupted and
resumed run see exactly the same pixels as an uninterrupted one.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as F
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
_LOG_RATIO = torch.log(torch.tensor(RATIO)).tolist()


_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """SplitMix64's finaliser: a cheap, well-mixing bijection on 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*keys: int) -> int:
    """One 63-bit seed from several integers (order matters); pure and fast (~1 us a key)."""
    h = 0
    for key in keys:
        h = splitmix64(h ^ (key & _MASK64))
    return h >> 1  # manual_seed takes any int, but keep it positive and within int64


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, index)."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, index))


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return torch.empty(1).uniform_(low, high, generator=gen).item()


def crop_params(width: int, height: int, gen: torch.Generator,
                scale=SCALE, ratio=RATIO) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from `gen` (same distribution)."""
    area = height * width
    # float32 logs and exp, as torchvision computes them, so the draws map to the same crops
    log_ratio = _LOG_RATIO if ratio == RATIO else torch.log(torch.tensor(ratio))
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
