"""What a sweep is asked, and how its LR grid grows.  Pure.

A ``SweepDefinition`` is the grid (batches x optimizers x LRs x seeds), the target and the
protocol (how often each point evaluates, its step limit, how far an LR grid may grow, how many
points run at once); ``points()`` is the grid, each point once (a grid that names a value twice
is refused naming the flag).

Grids that find the optimum: for each (optimizer, batch) whose runs have all ended, when the
best LR (``larsctl.results.steps``) is the smallest or largest of that batch's LRs, the grid
grows one step beyond that edge, by the grid's own factor there (the ratio of the two LRs at
that edge), until the best is inside or ``lr_extend`` steps were added on that side.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from larsctl.errors import UserError
from larsctl.facts.rules import LR_RULES
from larsctl.planning.planner import lr_by_rule

DEFAULT_LR_EXTEND = 2  # grid steps an LR grid may grow beyond each edge
DEFAULT_EVAL_SHARE = 0.25  # evaluation may cost at most this share of a point's training


@dataclass(frozen=True)
class SweepPoint:
    batch: int
    optimizer: str
    lr: float
    seed: int

    @property
    def label(self) -> str:
        return f"b{self.batch}-{self.optimizer}-lr{self.lr:.4g}-s{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepDefinition:
    """What ``larsctl sweep`` was asked; kept in the sweep's sweep.json."""

    cluster: str
    recipe: str
    target: str
    batches: list[int]
    optimizers: list[str]
    lrs: list[float] | None            # the same LRs at every batch, or
    lr_rules: dict[str, str] | None    # optimizer -> rule, times each factor
    lr_factors: list[float]
    seeds: int
    eval_examples: int
    max_steps: int | None
    trainer: dict = field(default_factory=dict)
    tracking: dict | None = None       # --track: None, the recipe's tracking:; {}: off
    eval_share: float = DEFAULT_EVAL_SHARE
    gpus: int | None = None            # every point on this many GPUs (else the planner's spread)
    max_concurrent: int | None = None  # points running at once (None: the scheduler's choice)
    lr_extend: int = DEFAULT_LR_EXTEND

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepDefinition:
        """Keys newer than the file take their defaults."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def lrs_for(self, batch: int, optimizer: str) -> list[float]:
        """The grid's own LRs at ``batch`` (before any growth)."""
        if self.lrs is not None:
            return list(self.lrs)
        base = lr_by_rule(self.lr_rules[optimizer], batch)[0]
        return [base * factor for factor in self.lr_factors]

    def points(self) -> list[SweepPoint]:
        """Every point of the grid, each once; UserError naming a flag that gives a value twice."""
        for flag, values in (("--batches", self.batches), ("--optimizers", self.optimizers),
                             ("--lrs", self.lrs or []), ("--lr-factors", [] if self.lrs else self.lr_factors)):
            _once(flag, values)
        out = [SweepPoint(batch, optimizer, lr, seed)
               for batch in self.batches for optimizer in self.optimizers
               for lr in self.lrs_for(batch, optimizer) for seed in range(1, self.seeds + 1)]
        _once("grid points", [p.label for p in out])  # LRs that differ beyond 4 digits print alike
        return out


def _once(flag: str, values: list) -> None:
    seen = set()
    for value in values:
        if value in seen:
            text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
            shown = f"{value:g}" if isinstance(value, float) else value
            raise UserError(f"{flag} {text}: {shown} is given twice; each grid point once")
        seen.add(value)


def parse_lr_rules(text: str | None, optimizers: list[str]) -> dict[str, str] | None:
    """``legw`` (every optimizer) or ``lars=legw,sgd=linear``."""
    if text is None:
        return None
    if "=" not in text:
        rules = {opt: text for opt in optimizers}
    else:
        rules = {}
        for part in text.split(","):
            opt, sep, rule = part.partition("=")
            if not sep:
                raise UserError(f"--lr-rule {text!r}: expected RULE or OPTIMIZER=RULE,...")
            rules[opt.strip()] = rule.strip()
        missing = [opt for opt in optimizers if opt not in rules]
        if missing:
            raise UserError(f"--lr-rule {text!r}: no rule for {', '.join(missing)}")
    for rule in rules.values():
        if rule not in LR_RULES:
            raise UserError(f"--lr-rule {text!r}: {rule!r} is not one of {', '.join(LR_RULES)}")
    return rules


# -- growing the grid beyond an edge -------------------------------------------------
@dataclass(frozen=True)
class BatchGrid:
    """One (optimizer, batch) of a sweep as it stands: its LRs, where its best LR sits
    (``BatchResult.edge``: low, high, only or None) and whether all its runs have ended (only
    then is the best LR known)."""

    optimizer: str
    batch: int
    lrs: tuple[float, ...]        # ascending, every LR that has points
    edge: str | None
    ended: bool


def grown(definition: SweepDefinition, grids: list[BatchGrid]) -> list[SweepPoint]:
    """The points one grid step beyond the edge of every ended (optimizer, batch) whose best LR
    is at its low or high edge, while fewer than ``lr_extend`` steps were added on that side."""
    out = []
    for grid in grids:
        if not grid.ended or grid.edge not in ("low", "high"):
            continue
        own = sorted(definition.lrs_for(grid.batch, grid.optimizer))
        if grid.edge == "low":
            added, (a, b) = sum(lr < own[0] for lr in grid.lrs), grid.lrs[:2]
        else:
            added, (a, b) = sum(lr > own[-1] for lr in grid.lrs), grid.lrs[:-3:-1]
        if added < definition.lr_extend:
            lr = a * (a / b)  # the grid's own factor at that edge
            out += [SweepPoint(grid.batch, grid.optimizer, lr, seed) for seed in range(1, definition.seeds + 1)]
    return out
