"""Cost and tightness of the general-graph bound machinery, variants side by side.

Usage: python benchmarks/bench_graphs.py [--items chunks,skip,pwl,forward]
       [--threads 1] [--deadline 120]

Each row runs in its own process (for its peak memory) on the first case of a
shared instance, in float64 on the CPU, and prints seconds, peak resident memory
and a tightness figure; the rows of one item differ only in the variant:

* ``chunks``: the CROWN bounds of the first softmax-difference value of the
  ViT ``ibp_3_3_8`` (13,872 neurons), in one pass (``max_elements`` unlimited, the
  former behaviour) and in chunks under the default cap; figure: mean width.
* ``skip``: CROWN bounds of every value of the LSTM ``lstm_op_8x8_h16`` with and
  without the passes from monotone elementwise outputs (``interval_suffices``);
  figure: summed widths (must be equal or smaller with the skip).
* ``pwl``: CROWN bounds of the 2024 ACOPF surrogates with the sums of shifted
  ReLUs merged into piecewise-linear nodes or left as they are; figure: the worst
  clause margin of CROWN on the property (> 0: proven).
* ``forward``: the cGAN's intermediate bounds by forward linear bounds plus cheap
  CROWN passes (the default), by CROWN alone (stopped at ``--deadline``), and by
  intervals; figure: the width of the last value before the output sigmoid.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from known import SHARED

ITEMS = {
    "chunks": [
        ("one pass", {"model": "vit", "cap": 1 << 62}),
        ("chunked (default cap)", {"model": "vit"}),
    ],
    "skip": [
        ("every pass", {"model": "lstm", "skip": False}),
        ("monotone outputs skipped", {"model": "lstm", "skip": True}),
    ],
    "pwl": [
        ("14-bus residual, ReLUs", {"model": "acopf14r", "pwl": False}),
        ("14-bus residual, merged", {"model": "acopf14r", "pwl": True}),
        ("14-bus nonresidual, ReLUs", {"model": "acopf14n", "pwl": False}),
        ("14-bus nonresidual, merged", {"model": "acopf14n", "pwl": True}),
        ("118-bus nonresidual, ReLUs", {"model": "acopf118n", "pwl": False}),
        ("118-bus nonresidual, merged", {"model": "acopf118n", "pwl": True}),
    ],
    "forward": [
        ("forward + cheap CROWN", {"model": "cgan"}),
        ("CROWN only (deadline)", {"model": "cgan", "forward": False}),
        ("interval", {"model": "cgan", "interval": True}),
    ],
}

MODELS = {
    "vit": ("vit_2023", "ibp_3_3_8.onnx.gz", "ibp_3_3_8_1264.vnnlib.gz"),
    "lstm": (None, "lstm_op_8x8_h16.onnx", "lstm_op_8x8_h16_img5_eps0.01.vnnlib"),
    "acopf14r": (
        "ml4acopf_2024", "14_ieee_ml4acopf-linear-residual.onnx.gz",
        "14_ieee_prop4.vnnlib.gz",
    ),
    "acopf14n": (
        "ml4acopf_2024", "14_ieee_ml4acopf-linear-nonresidual.onnx.gz",
        "14_ieee_prop3.vnnlib.gz",
    ),
    "acopf118n": (
        "ml4acopf_2024", "118_ieee_ml4acopf-linear-nonresidual.onnx.gz",
        "118_ieee_prop4.vnnlib.gz",
    ),
    "cgan": (
        "cgan_2023", "cGAN_imgSz32_nCh_3_nonlinear_activations.onnx.gz",
        "cGAN_imgSz32_nCh_3_nonlinear_activations_prop_0_input_eps_0.010"
        "_output_eps_0.015.vnnlib.gz",
    ),
}  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]


def _paths(key: str) -> tuple[Path, Path]:
    family, model, prop = MODELS[key]
    if family is None:
        return ROOT / "models" / model, ROOT / "vnnlib" / prop
    return SHARED / family / "onnx" / model, SHARED / family / "vnnlib" / prop


def measure(spec: dict, deadline: float) -> dict:
    """One row, in this process: seconds, peak memory, figure."""
    import torch

    from genbab.bounds import Box, Engine, build_objective
    from genbab.bounds.rewrite import decompose_softmax, prepare_for_bounds
    from genbab.model import load_model
    from genbab.spec import read_vnnlib

    model, prop_path = _paths(spec["model"])
    graph = load_model(model)
    rewrite = prepare_for_bounds if spec.get("pwl", True) else decompose_softmax
    graph = rewrite(graph).to("cpu", torch.float64)
    case = read_vnnlib(prop_path, graph.num_inputs, graph.num_outputs).cases[0]

    def t(v):
        return torch.tensor(v, dtype=torch.float64).reshape(1, *graph.input_shape)

    box = Box(t(case.lower), t(case.upper))
    options = {}
    if "cap" in spec:
        options["max_elements"] = spec["cap"]
    if spec.get("forward") is False:
        options["forward_max_inputs"] = 0
    engine = Engine(graph, torch.float64, **options)
    if spec.get("skip") is False:
        engine.interval_suffices = lambda name: False  # type: ignore[method-assign]
    start = time.monotonic()
    with torch.no_grad():
        if spec["model"] == "vit":
            bounds = engine.interval(box)
            name = next(n for n in engine.needs_bounds() if n.endswith("Softmax/diff"))
            for earlier in engine.needs_bounds():
                if earlier == name:
                    break
                if earlier != graph.input_name:
                    bounds[earlier] = engine.crown_value(earlier, box, bounds)
                    bounds = engine.interval(box, bounds)
            start = time.monotonic()
            lo, hi = engine.crown_value(name, box, bounds)
            figure = (hi - lo).mean().item()
        elif spec.get("interval"):
            bounds = engine.interval(box)
        else:
            bounds = engine.crown_bounds(box, deadline=start + deadline)
        if spec["model"] == "lstm":
            figure = sum((h - l).sum().item() for l, h in bounds.values())
        elif spec["model"].startswith("acopf"):
            objective = build_objective([case], torch.float64, "cpu")
            low = engine.objective_lower(objective.coeffs, box, bounds)
            figure = objective.clause_margins(low).min().item()
        elif spec["model"] == "cgan":
            last = engine.needs_bounds()[-1]
            figure = (bounds[last][1] - bounds[last][0]).max().item()
    seconds = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak, "figure": figure}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default=",".join(ITEMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(json.loads(args.one), args.deadline)))
        return 0
    print(
        f"{'item':8s} {'variant':30s} {'seconds':>9s} {'peak MB':>9s} {'figure':>12s}"
    )
    for item in args.items.split(","):
        for label, spec in ITEMS[item]:
            cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
            cmd += ["--threads", str(args.threads), "--deadline", str(args.deadline)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
                print(f"{item:8s} {label:30s} {'-':>9s} {'-':>9s}  {tail[0]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{item:8s} {label:30s} {row['seconds']:9.2f} {row['peak_mb']:9.0f}"
                f" {row['figure']:12.5g}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
