"""torchvision classification models by name, randomly initialised, plus `smallcnn`.

`smallcnn` is a two-convolution network (about 10K parameters with 10 classes) for tests
and CPU experiments: with `--norm group` (or no cross-sample statistics at all) its
per-example gradients are well defined and cheap, which tests/gns uses to check the
gradient noise scale estimator against exact per-example values.
"""
from __future__ import annotations

import functools

import torch
import torchvision

from trainer.errors import BadInput

GROUPS = 32  # GroupNorm groups (Wu & He's default; divides every ResNet width)


def _small_cnn(num_classes: int, norm: str) -> torch.nn.Module:
    """conv3x3(3->16) norm ReLU, conv3x3(16->32, stride 2) norm ReLU, 4x4 average pool, linear."""
    def norm_layer(channels: int) -> torch.nn.Module:
        return torch.nn.GroupNorm(8, channels) if norm == "group" else torch.nn.BatchNorm2d(channels)

    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), norm_layer(16), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), norm_layer(32), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, num_classes))


EXTRA_MODELS = {"smallcnn": _small_cnn}


def model_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models) + sorted(EXTRA_MODELS)


def build_model(name: str, num_classes: int, norm: str = "batch") -> torch.nn.Module:
    names = model_names()
    if name not in names:
        resnets = ", ".join(n for n in names if n.startswith("resnet"))
        raise BadInput(f"--model: {name!r} is not a torchvision classification model (e.g. {resnets})")
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name](num_classes, norm)
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if name.startswith("inception") or name == "googlenet":
        kwargs["aux_logits"] = False  # one output tensor, like every other model
        kwargs["init_weights"] = True
    if norm == "group":
        kwargs["norm_layer"] = functools.partial(torch.nn.GroupNorm, GROUPS)
    try:
        return torchvision.models.get_model(name, **kwargs)
    except TypeError as exc:
        if norm == "group" and "norm_layer" in str(exc):
            raise BadInput(f"--norm group: model {name} has no norm_layer argument (use a ResNet family model)") \
                from None
        raise
