"""Optimizers and learning-rate schedule of the LARS trainer.

Seed-compatible with the reference ``lars.py``: replace ``from lars import *``
by ``from trainer.optim import *``.
"""
from .lamb import Lamb
from .lars import Lars
from .param_groups import (OPTIMIZERS, bn_bias_param_groups, create_optimizer, create_optimizer_lamb,
                           create_optimizer_lars)
from .schedule import PolynomialWarmup

__all__ = ["Lamb", "Lars", "OPTIMIZERS", "PolynomialWarmup", "bn_bias_param_groups", "create_optimizer",
           "create_optimizer_lamb", "create_optimizer_lars"]
