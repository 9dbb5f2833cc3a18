"""Facts several layers of larsctl need, below all of them: where a job keeps its files
(jobdir), the states a job can be in (states), the GPU and model tables (hardware), the
names of the planner's rules and the walltime margin's defaults (rules).

The layers, bottom up: facts, config, planning, results, schedulers, jobs, then doctor
and data, then the commands; a module imports only from its own layer and those below
(tests/test_layers.py checks it).  The trainer package is below them all.
"""
