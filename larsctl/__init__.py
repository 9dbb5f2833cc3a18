"""larsctl: plan, submit and track large-batch LARS training on HPC clusters."""
__version__ = "0.1.0"
