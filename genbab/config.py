"""Typed options, loaded from YAML and overridden by ``--set section.key=value``.

Every option lives in one frozen dataclass per section. Unknown sections or keys and
values of the wrong type are :class:`~genbab.errors.ConfigError`, never ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from genbab.errors import ConfigError


@dataclass(frozen=True)
class GeneralConfig:
    """Where and how tensors are computed."""

    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    num_threads: int = 0  # 0: torch's default


@dataclass(frozen=True)
class AttackConfig:
    """PGD attack on the property's violation margin."""

    enabled: bool = True
    restarts: int = 20
    steps: int = 100
    step_size: float = 0.1  # relative to the box's half-width
    batch_size: int = 256
    # Replay candidates with onnxruntime before reporting sat.
    check_onnxruntime: bool = True
    # Share of the time limit the attack may use before the bounds start (a
    # property with hundreds of input boxes would otherwise spend it all).
    time_share: float = 0.25


@dataclass(frozen=True)
class BoundsConfig:
    """Incomplete verification by bound propagation."""

    method: str = "alpha-crown"  # interval | crown | alpha-crown
    # interval | crown | alpha-crown: bounds of nonlinear inputs
    intermediate: str = "crown"
    alpha_iterations: int = 50
    alpha_lr: float = 0.1
    alpha_lr_decay: float = 0.98
    early_stop_patience: int = 10
    # Largest number of output constraints bounded in one backward pass.
    spec_batch_size: int = 512
    # Largest number of entries of one coefficient tensor in the CROWN passes of
    # intermediate bounds ([domains, rows, *value shape]); wider values are
    # bounded a chunk of rows at a time (8 Mi entries: 64 MiB in float64).
    max_pass_elements: int = 1 << 23
    # Models with at most this many inputs get forward linear bounds of every
    # value before the CROWN passes (0: never); with them, values whose CROWN
    # passes would cost more than max_pass_work (rows times the sizes of the
    # values visited) keep the forward bounds.
    forward_max_inputs: int = 16
    max_pass_work: int = 1 << 26
    # intermediate = alpha-crown: Adam steps and learning rate per value.
    intermediate_iterations: int = 20
    intermediate_lr: float = 0.1
    intermediate_lr_decay: float = 1.0


@dataclass(frozen=True)
class BabConfig:
    """Branch-and-bound on the inputs of nonlinearities (GenBaB)."""

    enabled: bool = True
    batch_size: int = 64  # domains split per round (children: twice as many)
    max_domains: int = 200_000  # domains bounded before giving up
    max_pool_mb: int = 4096  # open domains' storage before giving up
    heuristic: str = "bbps"  # bbps | babsr | widest
    # BBPS: candidates per domain whose shortcut score is computed exactly
    # (all others are ranked by a cheaper first-order estimate).
    candidates: int = 8
    # How a split's score combines its children's estimated margins: worst
    # (the worst child's) or open_sum (sum of the children's negative parts).
    score_reduce: str = "open_sum"
    branching_point: str = "table"  # table | midpoint
    tables_dir: str = ""  # empty: the lookup_tables/ shipped with genbab
    # Bounding each round's children: alpha (relaxations) and beta (split
    # constraints) optimized by Adam, warm-started from the parent.
    iterations: int = 10
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98
    beta: bool = True
    root_iterations: int = 50  # alpha steps on the open clauses before BaB
    # CROWN bounds of the values after the split node for every child (slow);
    # otherwise a child inherits its parent's intermediate bounds.
    recompute_intermediate: bool = False
    min_gap: float = 1e-3  # intervals narrower than this are not split
    # Split several levels at once while the pool is small (children up to
    # 2 * batch_size), at most this many.
    max_split_depth: int = 4
    # Re-rank the best `filter_candidates` neurons per domain by bounding
    # their children with `filter_iterations` steps (0: off).
    filter_candidates: int = 0
    filter_iterations: int = 5


@dataclass(frozen=True)
class InputSplitConfig:
    """Branch-and-bound over the input box, for models with few inputs."""

    mode: str = "auto"  # auto | always | never
    max_inputs: int = 12  # auto: split inputs when the model has at most this many
    batch_size: int = 1024  # boxes bounded together
    method: str = "crown"  # crown | alpha-crown, on each round's boxes
    alpha_iterations: int = 5
    alpha_lr: float = 0.1
    heuristic: str = "smart"  # smart | widest
    max_domains: int = 5_000_000
    max_split_dims: int = 3  # dimensions halved at once while the pool is small


@dataclass(frozen=True)
class Config:
    """All options of one run."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    bounds: BoundsConfig = field(default_factory=BoundsConfig)
    bab: BabConfig = field(default_factory=BabConfig)
    input_split: InputSplitConfig = field(default_factory=InputSplitConfig)


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("general", "dtype"): ("float32", "float64"),
    ("bounds", "method"): ("interval", "crown", "alpha-crown"),
    ("bounds", "intermediate"): ("interval", "crown", "alpha-crown"),
    ("bab", "heuristic"): ("bbps", "babsr", "widest"),
    ("bab", "branching_point"): ("table", "midpoint"),
    ("bab", "score_reduce"): ("worst", "open_sum"),
    ("input_split", "mode"): ("auto", "always", "never"),
    ("input_split", "method"): ("crown", "alpha-crown"),
    ("input_split", "heuristic"): ("smart", "widest"),
}


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Build a :class:`Config` from an optional YAML file and ``key=value`` strings.

    Args:
        path: YAML file with a mapping of sections to mappings of options.
        overrides: Strings ``section.key=value``; the value is read as YAML
            (``--set attack.enabled=false``). Applied after the file.

    Raises:
        ConfigError: Unreadable file, unknown section or key, or a wrong type.
    """
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section '{section}' must be a mapping")
            data.setdefault(str(section), {}).update(values)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects section.key=value, got '{item}'")
        data.setdefault(section, {})[name] = yaml.safe_load(raw) if raw else ""
    return build_config(data, str(path) if path else "--set")


def build_config(data: dict[str, dict[str, Any]], origin: str = "config") -> Config:
    """Validate a nested mapping and turn it into a :class:`Config`."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built: dict[str, Any] = {}
    for section, values in data.items():
        if section not in sections:
            known = ", ".join(sections)
            raise ConfigError(f"{origin}: unknown section '{section}' (known: {known})")
        cls = typing.get_type_hints(Config)[section]
        built[section] = _build_section(cls, section, values, origin)
    return Config(**built)


def _build_section(cls: type, section: str, values: dict[str, Any], origin: str):
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(hints)
            raise ConfigError(
                f"{origin}: unknown option '{section}.{key}' (known: {known})"
            )
        kwargs[key] = _check_type(f"{section}.{key}", hints[key], value, origin)
        choices = CHOICES.get((section, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(
                f"{origin}: '{section}.{key}' must be one of {', '.join(choices)},"
                f" got '{value}'"
            )
    return cls(**kwargs)


def _check_type(name: str, hint: Any, value: Any, origin: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    base = typing.get_origin(hint)
    if base in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _check_type(name, option, value, origin)
                except ConfigError:
                    continue
    elif isinstance(hint, type) and isinstance(value, hint):
        if not (hint is int and isinstance(value, bool)):
            return value
    raise ConfigError(
        f"{origin}: '{name}' expects {getattr(hint, '__name__', hint)}, got {value!r}"
    )


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The options as a nested mapping (for reports and ``--print-config``)."""
    return dataclasses.asdict(config)
