"""bn/bias separation and the optimizer registry used by the trainer."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from trainer.optim import (Lamb, Lars, bn_bias_param_groups, create_optimizer, create_optimizer_lars)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)                  # weight: decay, bias: exempt
        self.bn = nn.BatchNorm2d(4)                     # exempt
        self.gn = nn.GroupNorm(2, 4)                    # exempt
        self.proj = nn.Linear(4, 6, bias=False)         # decay
        self.ln = nn.LayerNorm(6)                       # exempt
        self.head = nn.Linear(6, 6)                     # weight: decay, bias: exempt
        self.tied = self.head                           # shared module: listed once
        self.frozen = nn.Linear(6, 2)
        self.frozen.requires_grad_(False)               # left out


def _ids(params):
    return {id(p) for p in params}


def test_norm_layers_and_biases_go_to_a_second_group():
    m = Mixed()
    groups = bn_bias_param_groups(m, weight_decay=5e-5)
    assert len(groups) == 2
    decay, exempt = groups
    assert _ids(decay["params"]) == _ids([m.conv.weight, m.proj.weight, m.head.weight])
    assert _ids(exempt["params"]) == _ids([m.conv.bias, m.bn.weight, m.bn.bias, m.gn.weight, m.gn.bias,
                                           m.ln.weight, m.ln.bias, m.head.bias])
    assert decay["weight_decay"] == 5e-5 and "lars" not in decay
    assert exempt["weight_decay"] == 0.0 and exempt["lars"] is False
    assert len(decay["params"]) + len(exempt["params"]) == len(set(map(id, decay["params"] + exempt["params"])))


def test_only_non_empty_groups_are_returned():
    assert len(bn_bias_param_groups(nn.Linear(3, 3, bias=False), 1e-4)) == 1
    only_norm = bn_bias_param_groups(nn.BatchNorm1d(3), 1e-4)
    assert len(only_norm) == 1 and only_norm[0]["lars"] is False
    assert bn_bias_param_groups(nn.ReLU(), 1e-4) == []


def test_without_separation_everything_decays_in_one_lars_group():
    m = Mixed()
    opt = create_optimizer_lars(m, lr=1.0, momentum=0.9, weight_decay=1e-4, bn_bias_separately=False)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-4 and group["lars"] is True
    assert len(group["params"]) == len([p for p in m.parameters() if p.requires_grad])


def test_resnet50_split_matches_its_layers():
    """ResNet-50: 53 convs + fc weight decay; 53 BatchNorms (2 each) + fc bias do not."""
    model = torchvision.models.resnet50(weights=None)
    decay, exempt = bn_bias_param_groups(model, 1e-4)
    assert len(decay["params"]) == 54 and len(exempt["params"]) == 107


def test_reference_call_signature_still_works():
    """The reference README's call, unchanged (epsilon has a default)."""
    opt = create_optimizer_lars(model=Mixed(), lr=4.0, momentum=0.9, weight_decay=1e-4, bn_bias_separately=True)
    assert isinstance(opt, Lars) and opt.param_groups[0]["epsilon"] == 0.0
    assert [g["lars"] for g in opt.param_groups] == [True, False]


def test_registry_builds_each_optimizer_with_the_same_grouping():
    m = Mixed()
    lars = create_optimizer("lars", m, lr=2.0, momentum=0.8, weight_decay=1e-4, epsilon=1e-5,
                            bn_bias_separately=True, mode="tf", eeta=2e-3)
    assert isinstance(lars, Lars)
    assert [(g["mode"], g["eeta"], g["epsilon"], g["momentum"]) for g in lars.param_groups] == [
        ("tf", 2e-3, 1e-5, 0.8)] * 2

    lamb = create_optimizer("lamb", m, lr=0.01, weight_decay=0.01, bn_bias_separately=True)
    assert isinstance(lamb, Lamb) and lamb.param_groups[0]["eps"] == 1e-6
    assert [g["weight_decay"] for g in lamb.param_groups] == [0.01, 0.0]
    assert create_optimizer("lamb", m, lr=0.01, epsilon=1e-8).param_groups[0]["eps"] == 1e-8

    sgd = create_optimizer("sgd", m, lr=0.1, momentum=0.9, weight_decay=1e-4, bn_bias_separately=True)
    assert type(sgd) is torch.optim.SGD
    assert [(g["weight_decay"], g["foreach"], "lars" in g) for g in sgd.param_groups] == [
        (1e-4, True, False), (0.0, True, False)]
    for opt in (lars, lamb, sgd):
        assert sum(len(g["params"]) for g in opt.param_groups) == 11


def test_registry_passes_foreach_through():
    opt = create_optimizer("sgd", Mixed(), lr=0.1, foreach=False)
    assert opt.param_groups[0]["foreach"] is False


def test_optimizer_names_live_in_the_trainer_config_and_everyone_imports_them():
    """One list: the trainer's --base-op choices, the registry's entries (in that order) and
    larsctl's sweep choices are the same object; every name builds an optimizer."""
    import click

    from larsctl.commands.sweep import _optimizers
    from trainer.config import BY_NAME, OPTIMIZER_NAMES
    from trainer.optim import OPTIMIZERS

    assert BY_NAME["base_op"].choices is OPTIMIZER_NAMES
    assert _optimizers(None, None, ",".join(OPTIMIZER_NAMES)) == list(OPTIMIZER_NAMES)
    with pytest.raises(click.BadParameter, match=f"expected some of {', '.join(OPTIMIZER_NAMES)}, got"):
        _optimizers(None, None, "adamw")
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
    from trainer.optim import param_groups
    assert set(param_groups._BUILDERS) == set(OPTIMIZER_NAMES)  # no builder outside the list
    for name in OPTIMIZER_NAMES:
        assert isinstance(create_optimizer(name, Mixed(), lr=0.1), torch.optim.Optimizer)
