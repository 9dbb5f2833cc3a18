"""Distributed engines behind one interface, loaded lazily by name.

`create_engine("ddp"|"horovod", use_cuda, timeout_s)` returns an initialised Engine; Horovod
is imported only when asked for, and its absence is bad input (exit 2), not a
traceback.
"""
from __future__ import annotations

import importlib

from trainer.engines.base import Engine
from trainer.errors import BadInput

ENGINES = {"ddp": "trainer.engines.ddp:DDPEngine", "horovod": "trainer.engines.horovod:HorovodEngine"}


def available(name: str) -> bool:
    """True when the engine's library imports (Horovod needs a source build)."""
    if name == "horovod":
        try:
            importlib.import_module("horovod.torch")
        except ImportError:
            return False
    return name in ENGINES


DEFAULT_TIMEOUT_S = 1800  # torch.distributed's own default for Gloo, for runs outside a larsctl job


def create_engine(name: str, use_cuda: bool, timeout_s: int = DEFAULT_TIMEOUT_S, deterministic: bool = False) -> Engine:
    """``timeout_s``: how long a collective or the rendezvous may wait for a peer before the
    rank fails (larsctl jobs derive it from their fault bound); ``deterministic``: the same sums
    in the same order on every run (trainer option ``deterministic``)."""
    if name not in ENGINES:
        raise BadInput(f"--engine: {name!r} is not one of {', '.join(ENGINES)}")
    if not available(name):
        raise BadInput(f"--engine {name}: horovod.torch does not import here; install Horovod or use --engine ddp")
    module, attr = ENGINES[name].split(":")
    engine_cls = getattr(importlib.import_module(module), attr)
    return engine_cls(use_cuda, timeout_s, deterministic)


__all__ = ["Engine", "ENGINES", "available", "create_engine"]
