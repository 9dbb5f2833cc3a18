"""hvd.DistributedOptimizer rebuilds the optimizer as cls(param_groups, ...)
with no lr argument (horovod/torch/optimizer.py); Lars and Lamb must accept
that and then step exactly like the unwrapped optimizer (one rank: the
allreduce average is the identity).  Runs in a subprocess so that Horovod's
background thread does not outlive the test."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import torch, horovod.torch as hvd
    from torch import nn
    from trainer.optim import create_optimizer

    hvd.init()
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3
    for name, kw in (("lars", {"mode": "nus"}), ("lars", {"mode": "tf"}), ("lamb", {})):
        models = []
        for wrap in (False, True):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
            opt = create_optimizer(name, model, lr=0.5, momentum=0.9, weight_decay=1e-4,
                                   bn_bias_separately=True, **kw)
            if wrap:
                opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
                assert isinstance(opt, type(opt).__mro__[1]) and [g.get("mode") for g in opt.param_groups] \\
                    == [kw.get("mode")] * 2
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            models.append(model)
        for a, b in zip(*(m.parameters() for m in models)):
            assert torch.equal(a, b), name
    print("ok")
""")


def test_horovod_distributed_optimizer_wraps_lars_and_lamb(tmp_path):
    if importlib.util.find_spec("horovod") is None:
        pytest.skip("Horovod is not installed (.ci/setup.sh builds it)")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
