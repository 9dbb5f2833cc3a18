"""torchvision classification models by name, randomly initialised."""
from __future__ import annotations

import functools

import torch
import torchvision

from trainer.errors import BadInput

GROUPS = 32  # GroupNorm groups (Wu & He's default; divides every ResNet width)


def model_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def build_model(name: str, num_classes: int, norm: str = "batch") -> torch.nn.Module:
    names = model_names()
    if name not in names:
        resnets = ", ".join(n for n in names if n.startswith("resnet"))
        raise BadInput(f"--model: {name!r} is not a torchvision classification model (e.g. {resnets})")
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
