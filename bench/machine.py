"""One line saying which machine a bench ran on (every bench prints it with its figures)."""
from __future__ import annotations

import os
import platform


def describe() -> str:
    """CPU model and count, GPU, torch version and threads, load average, OS."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}; {os.cpu_count()} logical CPUs; {gpu}; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; load average {load:.2f}; {platform.platform()}")
