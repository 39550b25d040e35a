"""The GenBaB loop (genbab.bab.loop) on tiny networks with a known truth.

A dense grid of the 2-D input box gives each network's minimum to within the
grid's resolution: properties just above it are false and must never come out
proven; properties well below it that alpha-CROWN cannot prove must be proven by
branch and bound. Limits (deadline, domain count, memory) must be respected.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from bab_nets import grid_values, net, objective, unit_box

from genbab.bab import bounding, loop
from genbab.bab.loop import is_out_of_memory, run_bab
from genbab.bounds import bound_objective
from genbab.config import BabConfig, BoundsConfig, load_config

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"

# (activation, seed, layer sizes, box radius): alpha-CROWN fails on these
# properties at 0.05 below the grid minimum, branch and bound proves them.
HARD = [
    ("Sigmoid", 0, (2, 16, 16, 1), 4.0),
    ("Tanh", 1, (2, 8, 8, 1), 1.0),
    ("Sin", 1, (2, 16, 16, 1), 1.0),
]


def _instance(tmp_path, act, seed, sizes, radius, offset):
    engine = net(tmp_path, act, seed, sizes)
    box = unit_box(engine, radius)
    _, values = grid_values(engine, box, 301)
    y_min = float(values[engine.graph.output_name].min())
    obj = objective(y_min + offset)
    lower, bounds = bound_objective(engine, box, obj, BoundsConfig())
    return engine, box, obj, bounds, lower


def _bab(engine, box, obj, bounds, lower, seconds=30.0, **options):
    cfg = replace(BabConfig(branching_point="midpoint"), **options)
    deadline = time.monotonic() + seconds
    return run_bab(engine, box, obj, bounds, lower, cfg, deadline=deadline)


# BaBSR-like scores (intercept changes only) do not find the sigmoid proof: see
# test_bbps_beats_babsr_on_sigmoid.
PROVABLE = [(*h, "bbps") for h in HARD] + [(*h, "babsr") for h in HARD[1:]]


@pytest.mark.parametrize(("act", "seed", "sizes", "radius", "heuristic"), PROVABLE)
def test_bab_proves_what_alpha_crown_cannot(
    tmp_path, act, seed, sizes, radius, heuristic
):
    engine, box, obj, bounds, lower = _instance(
        tmp_path, act, seed, sizes, radius, -0.05
    )
    assert not bool(obj.proven(lower).all())  # alpha-CROWN alone fails
    result = _bab(engine, box, obj, bounds, lower, heuristic=heuristic)
    assert result.proven, result.stats
    assert result.stats["bab_domains"] > 0
    assert result.stats["bab_open_domains"] == 0


def test_bbps_beats_babsr_on_sigmoid(tmp_path):
    # The ablation's order on one instance: BBPS proves it in a few rounds,
    # BaBSR-like scores leave it open after many times as many domains.
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[0], -0.05)
    bbps = _bab(engine, box, obj, bounds, lower, heuristic="bbps")
    babsr = _bab(engine, box, obj, bounds, lower, heuristic="babsr", max_domains=1000)
    assert bbps.proven
    assert not babsr.proven
    assert babsr.stats["bab_domains"] > 20 * bbps.stats["bab_domains"]


FALSE = [(*h, "bbps") for h in HARD] + [(*HARD[0], "babsr"), (*HARD[0], "widest")]


@pytest.mark.parametrize(("act", "seed", "sizes", "radius", "heuristic"), FALSE)
def test_false_property_is_never_proven(tmp_path, act, seed, sizes, radius, heuristic):
    # The grid holds an input whose output is 0.01 below the threshold.
    engine, box, obj, bounds, lower = _instance(
        tmp_path, act, seed, sizes, radius, 0.01
    )
    result = _bab(
        engine, box, obj, bounds, lower, seconds=10.0, heuristic=heuristic,
        max_domains=800,
    )  # fmt: skip
    assert not result.proven
    assert result.reason in ("max_domains", "timeout", "unsplittable")


def test_recompute_intermediate_proves_too(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[1], -0.05)
    result = _bab(engine, box, obj, bounds, lower, recompute_intermediate=True)
    assert result.proven


def test_filter_reranks_and_proves(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[1], -0.05)
    result = _bab(engine, box, obj, bounds, lower, filter_candidates=3)
    assert result.proven


def test_deadline_is_honoured(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[2], 0.01)
    start = time.monotonic()
    result = _bab(engine, box, obj, bounds, lower, seconds=1.5, max_domains=10**9)
    elapsed = time.monotonic() - start
    assert result.reason == "timeout"
    assert elapsed < 1.5 + 1.0


def test_domain_limit(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[2], 0.01)
    result = _bab(engine, box, obj, bounds, lower, max_domains=100, batch_size=16)
    assert result.reason == "max_domains"
    # The limit is checked before each round of at most 2 * 16 children.
    assert 100 <= result.stats["bab_domains"] < 100 + 32


def test_unsplittable_domains_stop_the_loop(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[1], 0.01)
    result = _bab(engine, box, obj, bounds, lower, min_gap=1e9)
    assert not result.proven and result.reason == "unsplittable"


def test_batch_halves_on_out_of_memory(tmp_path, monkeypatch):
    # Far from true: the pool grows at every round.
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[2], 0.5)
    real = bounding.optimize
    calls = []

    def small_memory(problem, doms, *args, **kw):
        calls.append(len(doms))
        if len(doms) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(problem, doms, *args, **kw)

    monkeypatch.setattr(loop.bounding, "optimize", small_memory)
    result = _bab(
        engine, box, obj, bounds, lower, batch_size=64, max_split_depth=1,
        max_domains=100,
    )  # fmt: skip
    assert result.reason == "max_domains"
    assert result.stats["bab_oom_halvings"] >= 1
    assert result.stats["bab_batch_size"] <= 4
    assert max(calls) > 8


def test_out_of_memory_is_recognized():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_two_clauses_are_separate_items(tmp_path):
    # Clause 0: y > t (hard, true); clause 1: -y > -(y_max + 1) (easy, true).
    engine, box, _, _, _ = _instance(tmp_path, *HARD[1], -0.05)
    _, values = grid_values(engine, box, 301)
    y = values[engine.graph.output_name]
    t = float(y.min()) - 0.05
    from genbab.bounds.objective import Objective

    obj = Objective(
        torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64),
        torch.tensor([[t, -float(y.max()) - 1.0]], dtype=torch.float64),
        torch.tensor([[True, True]]),
        1,
    )
    lower, bounds = bound_objective(engine, box, obj, BoundsConfig())
    result = _bab(engine, box, obj, bounds, lower)
    assert result.proven
    assert result.stats["bab_items"] == 1  # only the open clause is branched


def test_every_shared_family_has_a_config_that_loads():
    families = sorted(
        p.name for p in SHARED.iterdir() if (p / "instances.csv").exists()
    )
    if not families:
        pytest.skip("shared benchmarks not present")
    for family in families:
        path = CONFIGS / f"{family}.yaml"
        assert path.exists(), f"no config for {family}"
        load_config(path)  # unknown keys or bad values raise


def test_shipped_configs_load_and_use_only_known_options():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path)
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data, path
        assert config.bab.heuristic in ("bbps", "babsr", "widest")


def test_nan_root_bounds_count_as_open(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[1], 0.01)
    nan = torch.full_like(lower, float("nan"))
    result = _bab(engine, box, obj, bounds, nan, max_domains=50)
    assert result.stats["bab_items"] == 1
    assert not result.proven


def test_pool_memory_limit(tmp_path):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[2], 0.5)
    result = _bab(engine, box, obj, bounds, lower, max_pool_mb=0)
    assert result.reason == "max_pool_mb" and not result.proven
