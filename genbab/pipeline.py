"""Verify one instance: attack, then bounds; the verdict and its evidence.

``unsat`` is returned only when every case of the property is proven by sound
bounds; ``sat`` only with a counterexample that onnxruntime confirmed.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from genbab.bab.input_split import InputSplitOptions, input_split_bab
from genbab.bab.loop import run_bab
from genbab.bounds import Box, Engine, bound_objective, build_objective
from genbab.bounds.rewrite import prepare_for_bounds
from genbab.config import Config, InputSplitConfig
from genbab.errors import GenbabError
from genbab.model import load_model
from genbab.model.graph import Graph
from genbab.result import Counterexample, Result, Verdict
from genbab.spec import Property, read_vnnlib

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Clock:
    """Elapsed time and the deadline of one run."""

    def __init__(self, timeout: float | None) -> None:
        self.start = time.monotonic()
        # Keep a little of the budget to wrap up (the last round, writing files).
        slack = 0.0 if timeout is None else min(2.0, 0.05 * timeout)
        self.deadline = None if timeout is None else self.start + timeout - slack

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def share(self, fraction: float) -> float | None:
        """The deadline of a step allowed ``fraction`` of the whole budget."""
        if self.deadline is None:
            return None
        return self.start + fraction * (self.deadline - self.start)


def verify(
    model_path: str | os.PathLike,
    property_path: str | os.PathLike,
    *,
    timeout: float | None = None,
    config: Config | None = None,
) -> Result:
    """Verify that the model satisfies the property (the VNN-LIB file encodes
    its violation).

    Args:
        model_path: ONNX model (``.onnx`` or ``.onnx.gz``).
        property_path: VNN-LIB property (``.vnnlib`` or ``.vnnlib.gz``).
        timeout: Seconds; the run stops and returns ``timeout`` soon after.
        config: Options; defaults when None.

    Returns:
        The :class:`Result`. Bad input gives ``Verdict.ERROR`` with a one-line
        message rather than an exception.
    """
    config = config or Config()
    clock = _Clock(timeout)
    stats: dict = {}
    try:
        graph = load_model(model_path)
        prop = read_vnnlib(property_path, graph.num_inputs, graph.num_outputs)
        verdict, message, cex = _run(graph, prop, str(model_path), config, clock, stats)
    except GenbabError as exc:
        # The caller reports the message (the CLI prints it once).
        logger.debug("verify failed: %s", exc)
        return Result(Verdict.ERROR, clock.elapsed(), message=str(exc), stats=stats)
    return Result(verdict, clock.elapsed(), cex, message, stats)


def _run(
    graph: Graph,
    prop: Property,
    model_path: str,
    config: Config,
    clock: _Clock,
    stats: dict,
):
    general = config.general
    if general.num_threads > 0:
        torch.set_num_threads(general.num_threads)
    torch.manual_seed(general.seed)
    device = torch.device(general.device)
    dtype = DTYPES[general.dtype]
    logger.info(
        "model %s: %d inputs, %d outputs, %d nodes; property %s: %d case(s)",
        model_path,
        graph.num_inputs,
        graph.num_outputs,
        len(graph.nodes),
        prop.path,
        len(prop.cases),
    )

    # 1. Look for a counterexample.
    if config.attack.enabled:
        from genbab.attack import pgd_attack

        t0 = time.monotonic()
        cex = pgd_attack(
            graph.to(device, torch.float32),
            prop,
            config.attack,
            device=device,
            dtype=torch.float32,
            seed=general.seed,
            deadline=clock.share(config.attack.time_share),
        )
        stats["attack_seconds"] = time.monotonic() - t0
        if cex is not None:
            return Verdict.SAT, "counterexample found by PGD", cex
        if clock.expired():
            return Verdict.TIMEOUT, "time limit reached during the attack", None

    # 2. Prove every case with bounds (and branch and bound).
    engine = Engine(
        prepare_for_bounds(graph).to(device, dtype),
        dtype,
        device,
        max_elements=config.bounds.max_pass_elements,
        forward_max_inputs=config.bounds.forward_max_inputs,
        max_pass_work=config.bounds.max_pass_work,
    )
    if _splits_inputs(graph, config.input_split):
        return _run_input_split(engine, graph, prop, config, clock, stats)
    t0 = time.monotonic()
    proven, worst = _prove_cases(engine, prop, config, clock, stats)
    stats["bounds_seconds"] = time.monotonic() - t0
    stats["bounds_method"] = config.bounds.method
    stats["worst_margin"] = worst
    stats["cases_proven"] = int(sum(proven))
    stats["cases"] = len(prop.cases)
    if all(proven):
        if stats.get("bab_items"):
            how = f"branch and bound ({stats.get('bab_domains', 0)} domains)"
        else:
            how = config.bounds.method
        return Verdict.UNSAT, f"proven by {how}", None
    stopped = stats.get("bab_stopped")
    # Branch and bound stops a little early when its next round would not fit
    # in the time left: that is the time limit too.
    if clock.expired() or stopped == "timeout":
        return Verdict.TIMEOUT, "time limit reached", None
    message = (
        f"{config.bounds.method} proved {sum(proven)} of {len(proven)} case(s);"
        f" worst margin {worst:.4g}"
    )
    if stopped:
        message += (
            f"; branch and bound stopped ({stopped}) after"
            f" {stats.get('bab_domains', 0)} domains, worst domain margin"
            f" {stats.get('bab_worst_margin', float('nan')):.4g}"
        )
    return Verdict.UNKNOWN, message, None


def _splits_inputs(graph: Graph, options: InputSplitConfig) -> bool:
    """Whether to branch on the input box rather than on nonlinear nodes."""
    if options.mode == "auto":
        return graph.num_inputs <= options.max_inputs
    return options.mode == "always"


def _run_input_split(
    engine: Engine,
    graph: Graph,
    prop: Property,
    config: Config,
    clock: _Clock,
    stats: dict,
):
    """Bound every case; split the input boxes of those left open."""
    t0 = time.monotonic()
    proven, worst = _prove_cases(engine, prop, config, clock, stats, use_bab=False)
    stats["bounds_seconds"] = time.monotonic() - t0
    stats["bounds_method"] = config.bounds.method
    stats["worst_margin"] = worst
    stats["cases"] = len(prop.cases)
    open_cases = [i for i, done in enumerate(proven) if not done]
    if not open_cases:
        return Verdict.UNSAT, f"proven by {config.bounds.method}", None
    if clock.expired():
        return Verdict.TIMEOUT, "time limit reached", None

    from genbab.attack import make_validator

    replay = make_validator(graph, prop, config.attack)
    found: list[Counterexample] = []

    def validate(index: int, x: np.ndarray) -> bool:
        cex = replay(x, open_cases[index])
        if cex is not None:
            found.append(cex)
        return cex is not None

    split = config.input_split
    options = InputSplitOptions(
        batch_size=split.batch_size,
        method=split.method,
        alpha_iterations=split.alpha_iterations,
        alpha_lr=split.alpha_lr,
        heuristic=split.heuristic,
        max_domains=split.max_domains,
        max_split_dims=split.max_split_dims,
    )
    result = input_split_bab(
        engine,
        [prop.cases[i] for i in open_cases],
        options,
        deadline=clock.deadline,
        validate=validate,
    )
    stats.update(result.stats())
    if result.verdict == "sat":
        return Verdict.SAT, "counterexample found by input splitting", found[-1]
    if result.verdict == "unsat":
        return Verdict.UNSAT, "proven by input splitting", None
    if clock.expired():
        return Verdict.TIMEOUT, "time limit reached during input splitting", None
    return Verdict.UNKNOWN, f"input splitting stopped: {result.reason}", None


def _prove_cases(
    engine: Engine,
    prop: Property,
    config: Config,
    clock: _Clock,
    stats: dict,
    use_bab: bool = True,
) -> tuple[list[bool], float]:
    """Bound every case; return which are proven and the worst clause margin."""
    dtype, device = engine.dtype, engine.device
    shape = engine.graph.input_shape
    proven: list[bool] = []
    worst = float("inf")
    chunk = max(1, config.bounds.spec_batch_size // 16)
    cases = list(prop.cases)
    for start in range(0, len(cases), chunk):
        part = cases[start : start + chunk]
        box = Box(
            torch.stack([_tensor(c.lower, shape, dtype, device) for c in part]),
            torch.stack([_tensor(c.upper, shape, dtype, device) for c in part]),
        )
        objective = build_objective(part, dtype, device)
        lower, bounds = bound_objective(
            engine, box, objective, config.bounds, deadline=clock.deadline
        )
        margins = objective.clause_margins(lower)
        done = (margins > 0).all(-1)
        if use_bab and config.bab.enabled and not done.all() and not clock.expired():
            result = run_bab(
                engine,
                box,
                objective,
                bounds,
                lower,
                config.bab,
                deadline=clock.deadline,
                table=_branching_table(config),
            )
            _merge_stats(stats, result.stats)
            if result.proven:
                done = torch.ones_like(done)
            elif result.reason:
                stats["bab_stopped"] = result.reason
        proven.extend(bool(p) for p in done)
        worst = min(worst, float(margins.min()))
        if clock.expired():
            proven.extend(False for _ in cases[start + chunk :])
            break
    return proven, worst


def _merge_stats(stats: dict, new: dict) -> None:
    """Add branch-and-bound statistics of one chunk of cases to ``stats``."""
    for key, value in new.items():
        if key == "bab_max_depth":
            stats[key] = max(stats.get(key, 0), value)
        elif key == "bab_worst_margin":
            stats[key] = min(stats.get(key, float("inf")), value)
        elif key == "bab_batch_size":
            stats[key] = value
        elif key == "bab_domains_per_second":
            continue
        else:
            stats[key] = stats.get(key, 0) + value
    if stats.get("bab_seconds"):
        stats["bab_domains_per_second"] = stats["bab_domains"] / stats["bab_seconds"]


def _branching_table(config: Config):
    """The branching-point lookup tables, or None for midpoints."""
    if config.bab.branching_point != "table":
        return None
    try:
        from genbab.tables import load_branching_points
    except ImportError:
        logger.debug("no branching-point tables available; using midpoints")
        return None
    return load_branching_points(config.bab.tables_dir or None)


def _tensor(values, shape, dtype, device) -> torch.Tensor:
    array = np.array(values, dtype=np.float64)  # a writable copy
    return torch.as_tensor(array, dtype=dtype, device=device).reshape(shape)
