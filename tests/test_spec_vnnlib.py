"""Tests of the VNN-LIB 1.0 reader (genbab.spec)."""

from __future__ import annotations

import gzip
import itertools
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest

from genbab.errors import SpecError, VNNLibParseError
from genbab.spec import Case, Clause, Property, read_vnnlib
from genbab.spec import vnnlib as vnnlib_module

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def declare(num_inputs: int, num_outputs: int) -> str:
    names = [f"X_{i}" for i in range(num_inputs)] + [
        f"Y_{j}" for j in range(num_outputs)
    ]
    return "".join(f"(declare-const {name} Real)\n" for name in names)


def read_both(
    tmp_path: Path, text: str, name: str = "p.vnnlib", **kwargs: int
) -> Property:
    """Reads ``text`` through read_vnnlib and checks the precise (token by token)
    reader gives exactly the same property."""
    path = tmp_path / name
    path.write_text(text)
    prop = read_vnnlib(path, **kwargs)
    precise = vnnlib_module._parse_text(
        text, str(path), kwargs.get("num_inputs"), kwargs.get("num_outputs"), False
    )
    assert_same(prop, precise)
    return prop


def assert_same(a: Property, b: Property) -> None:
    assert (a.num_inputs, a.num_outputs, len(a.cases)) == (
        b.num_inputs,
        b.num_outputs,
        len(b.cases),
    )
    for case_a, case_b in zip(a.cases, b.cases, strict=True):
        np.testing.assert_array_equal(case_a.lower, case_b.lower)
        np.testing.assert_array_equal(case_a.upper, case_b.upper)
        for cl_a, cl_b in zip(case_a.clauses, case_b.clauses, strict=True):
            np.testing.assert_array_equal(cl_a.matrix, cl_b.matrix)
            np.testing.assert_array_equal(cl_a.rhs, cl_b.rhs)


def clause_pairs(case: Case) -> list[tuple[list[list[float]], list[float]]]:
    return [(c.matrix.tolist(), c.rhs.tolist()) for c in case.clauses]


# -- hand-written files ---------------------------------------------------------------


def test_plain_box_and_single_atom(tmp_path: Path) -> None:
    text = declare(2, 2) + (
        "(assert (>= X_0 -1.5))\n(assert (<= X_0 2))\n"
        "(assert (>= X_1 0))\n(assert (<= X_1 0.25))\n"
        "(assert (<= Y_0 3.5))\n"
    )
    prop = read_both(tmp_path, text, num_inputs=2, num_outputs=2)
    assert (prop.num_inputs, prop.num_outputs) == (2, 2)
    assert prop.path == str(tmp_path / "p.vnnlib")
    (case,) = prop.cases
    assert case.lower.tolist() == [-1.5, 0.0]
    assert case.upper.tolist() == [2.0, 0.25]
    assert clause_pairs(case) == [([[1.0, 0.0]], [3.5])]
    assert case.lower.dtype == np.float64 and case.clauses[0].matrix.dtype == np.float64
    assert not case.lower.flags.writeable


@pytest.mark.parametrize(
    ("atom", "row", "rhs"),
    [
        ("(<= Y_1 4)", [0.0, 1.0], 4.0),
        ("(>= Y_1 4)", [0.0, -1.0], -4.0),
        ("(<= 4 Y_1)", [0.0, -1.0], -4.0),
        ("(>= 4 Y_1)", [0.0, 1.0], 4.0),
        ("(< Y_1 4)", [0.0, 1.0], 4.0),
        ("(> Y_1 4)", [0.0, -1.0], -4.0),
        ("(<= Y_0 Y_1)", [1.0, -1.0], 0.0),
        ("(>= Y_0 Y_1)", [-1.0, 1.0], 0.0),
        ("(> Y_1 Y_0)", [1.0, -1.0], 0.0),
    ],
)
def test_output_atom_direction(
    tmp_path: Path, atom: str, row: list[float], rhs: float
) -> None:
    text = (
        declare(1, 2) + f"(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert {atom})\n"
    )
    (case,) = read_both(tmp_path, text).cases
    assert clause_pairs(case) == [([row], [rhs])]


@pytest.mark.parametrize(
    ("atoms", "lower", "upper"),
    [
        ("(<= X_0 3) (>= X_0 -1)", -1.0, 3.0),
        ("(>= 3 X_0) (<= -1 X_0)", -1.0, 3.0),
        ("(< X_0 3) (> X_0 -1)", -1.0, 3.0),
        ("(<= X_0 3) (<= X_0 2) (>= X_0 -1) (>= X_0 0)", 0.0, 2.0),
        ("(<= X_0 0.5) (>= X_0 0.5)", 0.5, 0.5),
    ],
)
def test_input_bounds_either_side_and_intersected(
    tmp_path: Path, atoms: str, lower: float, upper: float
) -> None:
    text = declare(1, 1) + f"(assert (and {atoms}))\n(assert (<= Y_0 0))\n"
    (case,) = read_both(tmp_path, text).cases
    assert (case.lower.tolist(), case.upper.tolist()) == ([lower], [upper])


def test_or_of_ands_and_or_of_bare_atoms(tmp_path: Path) -> None:
    box = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
    text = (
        declare(1, 2)
        + box
        + ("(assert (or (and (>= Y_0 Y_1) (<= Y_0 1)) (and (<= Y_1 -2))))\n")
    )
    (case,) = read_both(tmp_path, text).cases
    assert clause_pairs(case) == [
        ([[-1.0, 1.0], [1.0, 0.0]], [0.0, 1.0]),
        ([[0.0, 1.0]], [-2.0]),
    ]
    bare = declare(1, 2) + box + "(assert (or (<= Y_0 1) (>= Y_1 2)))\n"
    (case,) = read_both(tmp_path, bare, "bare.vnnlib").cases
    assert clause_pairs(case) == [([[1.0, 0.0]], [1.0]), ([[0.0, -1.0]], [-2.0])]


def test_cross_product_of_two_ors_and_later_assert_joins_every_disjunct(
    tmp_path: Path,
) -> None:
    text = declare(1, 2) + (
        "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
        "(assert (or (and (<= Y_0 1)) (and (<= Y_0 2))))\n"
        "(assert (or (and (<= Y_1 3)) (and (<= Y_1 4))))\n"
        "(assert (>= Y_0 -9))\n"
    )
    (case,) = read_both(tmp_path, text).cases
    last = [-1.0, 0.0]
    expected = [
        ([[1.0, 0.0], [0.0, 1.0], last], [a, b, 9.0])
        for a, b in itertools.product([1.0, 2.0], [3.0, 4.0])
    ]
    assert clause_pairs(case) == expected


def test_per_disjunct_boxes_are_merged_and_do_not_leak(tmp_path: Path) -> None:
    text = declare(2, 2) + (
        "(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"
        "(assert (>= X_0 0))\n(assert (<= X_0 10))\n"
        "(assert (or\n"
        "  (and (<= X_0 3) (<= Y_0 0))\n"
        "  (and (>= X_0 5) (>= X_1 0.5) (<= Y_1 0))\n"
        "  (and (<= X_0 3) (>= Y_1 5))\n"
        "))\n"
    )
    prop = read_both(tmp_path, text)
    assert len(prop.cases) == 2
    first, second = prop.cases
    assert (first.lower.tolist(), first.upper.tolist()) == ([0.0, -1.0], [3.0, 1.0])
    assert clause_pairs(first) == [([[1.0, 0.0]], [0.0]), ([[0.0, -1.0]], [-5.0])]
    # the second box tightens X_1 itself; X_0 keeps the global upper bound 10
    assert (second.lower.tolist(), second.upper.tolist()) == ([5.0, 0.5], [10.0, 1.0])
    assert clause_pairs(second) == [([[0.0, 1.0]], [0.0])]


def test_input_disjunction_times_output_disjunction(tmp_path: Path) -> None:
    """The acasxu prop_6 shape: two boxes in one assert, outputs in another."""
    text = declare(1, 3) + (
        "(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n"
        "(assert (or (and (<= Y_1 Y_0)) (and (<= Y_2 Y_0))))\n"
    )
    prop = read_both(tmp_path, text)
    assert [(c.lower.tolist(), c.upper.tolist()) for c in prop.cases] == [
        ([0.0], [1.0]),
        ([2.0], [3.0]),
    ]
    for case in prop.cases:
        assert clause_pairs(case) == [
            ([[-1.0, 1.0, 0.0]], [0.0]),
            ([[-1.0, 0.0, 1.0]], [0.0]),
        ]


def test_numbers_scientific_negation_and_full_precision(tmp_path: Path) -> None:
    text = declare(3, 2) + (
        "(assert (<= X_0 1e-05))\n(assert (>= X_0 -5.4e-10))\n"
        "(assert (<= X_1 (- 1.0)))\n(assert (>= X_1 (- 2.5E+1)))\n"
        "(assert (<= X_2 0.49999999998567607))\n(assert (>= X_2 -3))\n"
        "(assert (<= Y_0 (- 7)))\n(assert (>= Y_1 .5))\n"
    )
    (case,) = read_both(tmp_path, text).cases
    assert case.lower.tolist() == [-5.4e-10, -25.0, -3.0]
    assert case.upper.tolist() == [1e-05, -1.0, float("0.49999999998567607")]
    assert case.upper[2] != 0.5
    assert clause_pairs(case) == [([[1.0, 0.0], [0.0, -1.0]], [-7.0, -0.5])]


def test_comments_blank_lines_and_multiline_asserts(tmp_path: Path) -> None:
    text = (
        "; a property\n\n"
        "(declare-const X_0 Real) ; the only input\n"
        "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n\n"
        "(assert (<= X_0 1)) ; upper\n"
        "(assert\n  (>= X_0\n      -1))\n"
        "(assert (or ; a comment inside\n"
        "\t(and (<= Y_0\n\t\tY_1)\n  ; between atoms\n   (<= Y_0 2))\n"
        "   ( and ( >= Y_1 3 ) )\n))\n"
    )
    (case,) = read_both(tmp_path, text).cases
    assert (case.lower.tolist(), case.upper.tolist()) == ([-1.0], [1.0])
    assert clause_pairs(case) == [
        ([[1.0, -1.0], [1.0, 0.0]], [0.0, 2.0]),
        ([[0.0, -1.0]], [-3.0]),
    ]


def test_gzip_file_reads_like_plain(tmp_path: Path) -> None:
    text = declare(2, 1) + (
        "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
        "(assert (<= X_1 2))\n(assert (>= X_1 1))\n(assert (>= Y_0 0.125))\n"
    )
    plain = read_both(tmp_path, text)
    packed = tmp_path / "p.vnnlib.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    zipped = read_vnnlib(packed)
    assert_same(plain, zipped)
    assert zipped.path == str(packed)
    assert zipped.cases[0].upper.tolist() == [1.0, 2.0]


def test_output_only_disjunct_warns_and_has_empty_clause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = declare(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
    (case,) = read_both(tmp_path, text).cases
    (clause,) = case.clauses
    assert clause.matrix.shape == (0, 1) and clause.rhs.shape == (0,)
    assert "no output constraint" in caplog.text


def test_long_runs_are_split_without_changing_the_result(tmp_path: Path) -> None:
    """More declarations and bound asserts than one bulk token takes (4096)."""
    n = 5000
    values = np.linspace(-1.0, 1.0, n)
    bounds = "".join(
        f"(assert (<= X_{i} {v + 0.5!r}))\n(assert (>= X_{i} {v!r}))\n"
        for i, v in enumerate(values.tolist())
    )
    body = " ".join(f"(<= X_{i} {v + 0.25!r})" for i, v in enumerate(values.tolist()))
    text = declare(n, 2) + bounds + f"(assert (or (and {body} (<= Y_0 Y_1))))\n"
    (case,) = read_both(tmp_path, text).cases
    np.testing.assert_array_equal(case.lower, values)
    np.testing.assert_array_equal(case.upper, values + 0.25)
    assert clause_pairs(case) == [([[1.0, -1.0]], [0.0])]

    # an empty range deep inside a long run is still reported at its own line
    last = f"(assert (>= X_{n - 1} {values[-1].item()!r}))"
    assert last in text
    text = text.replace(last, f"(assert (>= X_{n - 1} 7.0))")
    raises_same(tmp_path, text, f":{3 * n + 2}:9:.*X_{n - 1} has an empty range")


# -- random formulas against direct evaluation -------------------------------------


def _random_formula(rng: random.Random, depth: int, n: int, m: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.3:
            i = rng.randrange(n)
            if rng.random() < 0.5:
                return f"(<= X_{i} {rng.randint(0, 3)})"
            return f"(>= X_{i} {rng.randint(-3, 0)})"
        op = rng.choice(["<=", ">=", "<", ">"])
        lhs = f"Y_{rng.randrange(m)}"
        rhs = rng.choice([f"Y_{rng.randrange(m)}", str(rng.randint(-2, 2))])
        return f"({op} {lhs} {rhs})" if rng.random() < 0.7 else f"({op} {rhs} {lhs})"
    head = rng.choice(["and", "or"])
    parts = [_random_formula(rng, depth - 1, n, m) for _ in range(rng.randint(1, 3))]
    return f"({head} {' '.join(parts)})"


def _holds(formula: str, x: list[int], y: list[int]) -> bool:
    """Evaluates a formula (non-strict reading of < and >) at integer points."""
    tokens = formula.replace("(", " ( ").replace(")", " ) ").split()

    def value(word: str) -> int:
        if word[0] in "XY":
            return (x if word[0] == "X" else y)[int(word[2:])]
        return int(word)

    def expr(k: int) -> tuple[bool, int]:
        head, k = tokens[k + 1], k + 2
        if head in ("and", "or"):
            results = []
            while tokens[k] != ")":
                res, k = expr(k)
                results.append(res)
            return (all(results) if head == "and" else any(results)), k + 1
        a, b = value(tokens[k]), value(tokens[k + 1])
        return (a <= b if head in ("<=", "<") else a >= b), k + 3

    return expr(0)[0]


def _violates(prop: Property, x: list[int], y: list[int]) -> bool:
    xs, ys = np.array(x, float), np.array(y, float)
    return any(
        bool(np.all(case.lower <= xs) and np.all(xs <= case.upper))
        and any(bool(np.all(c.matrix @ ys <= c.rhs)) for c in case.clauses)
        for case in prop.cases
    )


@pytest.mark.parametrize("seed", range(12))
def test_random_formulas_match_direct_evaluation(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    n, m = 2, 3
    asserts = [f"(assert (<= X_{i} 4))\n(assert (>= X_{i} -4))\n" for i in range(n)]
    asserts += [
        f"(assert {_random_formula(rng, 3, n, m)})\n" for _ in range(rng.randint(1, 3))
    ]
    prop = read_both(tmp_path, declare(n, m) + "".join(asserts))
    formulas = [a.strip()[len("(assert ") : -1] for a in "".join(asserts).splitlines()]
    for _ in range(400):
        x = [rng.randint(-5, 5) for _ in range(n)]
        y = [rng.randint(-3, 3) for _ in range(m)]
        expected = all(_holds(f, x, y) for f in formulas)
        assert _violates(prop, x, y) == expected, (formulas, x, y)


# -- errors ---------------------------------------------------------------------------


def raises_same(tmp_path: Path, text: str, pattern: str) -> None:
    """Checks read_vnnlib raises a parse error matching ``pattern``, and that the
    precise reader raises exactly the same one."""
    path = tmp_path / "bad.vnnlib"
    path.write_text(text)
    with pytest.raises(VNNLibParseError, match=pattern) as raised:
        read_vnnlib(path)
    with pytest.raises(VNNLibParseError) as precise:
        vnnlib_module._parse_text(text, str(path), None, None, False)
    assert str(precise.value) == str(raised.value)
    assert (raised.value.line, raised.value.column) == (
        precise.value.line,
        precise.value.column,
    )


HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
BOX = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("(assert (<= Y_0 1.0)\n", ":3:1:", "never closed"),
        ("(assert (<= Y_0 1.0)))\n", ":3:22:", "extra '\\)'"),
        ("(assert (or (<= Y_0 1.0)\n", ":4:2:", "a '\\)' is missing before"),
        ("(assert (>= Y_0 ))\n", ":3:17:", "missing operand for '>='"),
        ("(assert (<= Y_0 1 2))\n", ":3:19:", "too many operands"),
        ("(assert ((<= Y_0 30291)))\n", ":3:10:", "expected an operator"),
        ("(assert (= Y_0 1))\n", ":3:10:", "unknown operator '='"),
        ("(assert (=> Y_0 1))\n", ":3:10:", "unknown operator '=>'"),
        ("(assert (<= Y_3 1))\n", ":3:13:", "undeclared variable 'Y_3'"),
        ("(assert (<= Y_0 1.2.3))\n", ":3:17:", "expected a variable or number"),
        ("(assert (<= Y_0 inf))\n", ":3:17:", "expected a variable or number"),
        ("(assert (<= Y_0 1e999))\n", ":3:17:", "out of float64 range"),
        ("(assert (<= Y_0 (- Y_0)))\n", ":3:20:", "applies to a number only"),
        ("(assert (<= Y_0 X_0))\n", ":3:9:", "mentions an input X"),
        ("(assert (<= 1 2))\n", ":3:9:", "two constants"),
        ("(assert (or))\n", ":3:9:", "'or' needs at least one operand"),
        ("(assert (and))\n", ":3:9:", "'and' needs at least one operand"),
        ("(assert)\n", ":3:8:", "'assert' needs a formula"),
        ("(assert (<= Y_0 1) (<= Y_0 2))\n", ":3:20:", "extra operand"),
        ("(declare-const X_0 Real)\n", ":3:16:", "declared twice"),
        ("(declare-const Z_0 Real)\n", ":3:16:", "expected a variable name"),
        ("(declare-const Y_1 Int)\n", ":3:20:", "expected sort 'Real'"),
        ("(vnnlib-version <2.0>)\n", ":3:2:", "VNN-LIB 2.0"),
        ("(check-model)\n", ":3:2:", "unknown command"),
        ("(<= Y_0 1)\n", ":3:1:", "expected a command"),
    ],
)
def test_syntax_errors_name_line_and_column(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    raises_same(tmp_path, HEAD + body + BOX, re.escape(where) + ".*" + message)


X1_BOX = "(assert (>= X_1 0))\n(assert (<= X_1 1))\n"


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        # a range that becomes empty is reported at the atom that emptied it
        (X1_BOX + "(assert (>= X_0 2))\n(assert (<= X_0 1))\n", ":7:9:", "empty range"),
        (X1_BOX + "(assert (and (>= X_0 2)\n  (<= X_0 1)))\n", ":7:3:", "empty"),
        (X1_BOX + "(assert (or (and (>= X_0 2) (<= X_0 1))))\n", ":6:29:", "empty"),
        (X1_BOX + "(assert (<= X_0 X_1))\n", ":6:9:", "non-box input constraint"),
        (X1_BOX + "(assert (<= X_0 1))\n", ":1:16:", "X_0 has no lower bound"),
        ("(assert (>= X_1 1))\n" + BOX, ":2:16:", "X_1 has no upper bound"),
    ],
)
def test_box_errors_name_line_and_column(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    text = declare(2, 1) + body + "(assert (<= Y_0 0))\n"
    raises_same(tmp_path, text, re.escape(where) + ".*" + message)


def test_counts_must_match_the_model(tmp_path: Path) -> None:
    path = tmp_path / "p.vnnlib"
    path.write_text(declare(2, 3) + BOX.replace("X_0", "X_1") + BOX)
    assert read_vnnlib(path, 2, 3).num_outputs == 3
    with pytest.raises(SpecError, match=r"p\.vnnlib.*declares 2 inputs.*model has 5"):
        read_vnnlib(path, num_inputs=5)
    with pytest.raises(SpecError, match=r"declares 3 outputs.*model has 1"):
        read_vnnlib(path, num_outputs=1)


def test_out_of_range_and_gapped_variables(tmp_path: Path) -> None:
    path = tmp_path / "p.vnnlib"
    path.write_text(HEAD + BOX + "(assert (<= X_4 1))\n")
    with pytest.raises(VNNLibParseError, match=r":5:13:.*X_4.*model has 1 inputs"):
        read_vnnlib(path, num_inputs=1)
    path.write_text(HEAD + "(declare-const Y_2 Real)\n" + BOX)
    with pytest.raises(SpecError, match="Y_1 is not declared but Y_2 is"):
        read_vnnlib(path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.vnnlib"
    with pytest.raises(SpecError, match="not found: .*nope\\.vnnlib"):
        read_vnnlib(missing)
    corrupt = tmp_path / "c.vnnlib.gz"
    corrupt.write_bytes(gzip.compress(b"(assert")[:12])
    with pytest.raises(SpecError, match="corrupt gzip"):
        read_vnnlib(corrupt)


def test_value_types_reject_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="rhs"):
        Clause(np.zeros((2, 3)), np.zeros(3))
    clause = Clause(np.ones((1, 3)), np.zeros(1))
    with pytest.raises(ValueError, match="at least one clause"):
        Case(np.zeros(2), np.ones(2), ())
    case = Case(np.zeros(2), np.ones(2), (clause,))
    with pytest.raises(ValueError, match="outputs"):
        Property((case,), num_inputs=2, num_outputs=4, path="x")


# -- the shared benchmark files -----------------------------------------------------

needs_benchmarks = pytest.mark.skipif(
    not BENCHMARKS.is_dir(), reason=f"shared benchmarks not found at {BENCHMARKS}"
)


def _benchmark_files() -> list[Path]:
    return sorted(BENCHMARKS.glob("*/vnnlib/*.vnnlib.gz"))


@needs_benchmarks
def test_every_shared_property_file_parses() -> None:
    files = _benchmark_files()
    assert files
    start = time.perf_counter()
    for path in files:
        prop = read_vnnlib(path)
        assert prop.cases, path
        for case in prop.cases:
            assert case.lower.shape == case.upper.shape == (prop.num_inputs,)
            assert np.all(case.lower <= case.upper), path
            assert np.all(np.isfinite(case.lower)) and np.all(np.isfinite(case.upper))
            assert case.clauses, path
            for clause in case.clauses:
                assert clause.matrix.shape == (clause.rhs.shape[0], prop.num_outputs)
                assert clause.matrix.shape[0] >= 1, path
                assert np.all(np.isfinite(clause.rhs)), path
    assert time.perf_counter() - start < 60


@needs_benchmarks
def test_bulk_and_precise_readers_agree_on_one_file_per_family() -> None:
    families: dict[str, Path] = {}
    for path in _benchmark_files():
        family = path.parents[1].name
        if (
            family not in families
            or path.stat().st_size < families[family].stat().st_size
        ):
            families[family] = path
    for path in families.values():
        text = vnnlib_module._read_text(str(path))
        precise = vnnlib_module._parse_text(text, str(path), None, None, False)
        assert_same(read_vnnlib(path), precise)


@needs_benchmarks
def test_acasxu_prop_1_and_prop_6() -> None:
    folder = BENCHMARKS / "acasxu_2023" / "vnnlib"
    prop1 = read_vnnlib(folder / "prop_1.vnnlib.gz", 5, 5)
    (case,) = prop1.cases
    assert case.lower.tolist() == [0.6, -0.5, -0.5, 0.45, -0.5]
    assert case.upper.tolist() == [0.679857769, 0.5, 0.5, 0.5, -0.45]
    assert clause_pairs(case) == [([[-1.0, 0, 0, 0, 0]], [-3.991125645861615])]

    prop6 = read_vnnlib(folder / "prop_6.vnnlib.gz", 5, 5)
    assert len(prop6.cases) == 2
    first, second = prop6.cases
    assert first.upper[1] == 0.499999896 and first.lower[1] == 0.11140846
    assert second.upper[1] == -0.11140846 and second.lower[1] == -0.499999896
    np.testing.assert_array_equal(first.lower[[0, 2, 3, 4]], second.lower[[0, 2, 3, 4]])
    for case in prop6.cases:
        rows = [c.matrix.tolist() for c in case.clauses]
        assert rows == [
            [[-1.0] + [float(k == j) for k in range(1, 5)]] for j in range(1, 5)
        ]


@needs_benchmarks
def test_eran_mnist_property() -> None:
    folder = BENCHMARKS / "eran_mnist_vnncomp2021" / "vnnlib"
    path = folder / "mnist_spec_idx_1013_eps_0.01500.vnnlib.gz"
    prop = read_vnnlib(path, 784, 10)
    assert prop.num_inputs == 784
    (case,) = prop.cases
    assert len(case.clauses) == 9
    assert np.all(case.upper - case.lower <= 2 * 0.015 + 1e-7)  # 8-digit decimals
    assert np.all(case.lower >= 0.0) and np.all(case.upper <= 1.0)
    # every clause is "Y_k >= Y_label" for one k: row -1 at k, +1 at the label
    label = {int(np.argmax(c.matrix[0])) for c in case.clauses}
    assert len(label) == 1
    others = sorted(int(np.argmin(c.matrix[0])) for c in case.clauses)
    assert others == sorted(set(range(10)) - label)
    assert all(
        c.matrix.shape == (1, 10) and c.rhs.tolist() == [0.0] for c in case.clauses
    )


@needs_benchmarks
def test_largest_shared_file_parses_fast() -> None:
    path = max(_benchmark_files(), key=lambda p: p.stat().st_size)
    start = time.process_time()
    prop = read_vnnlib(path)
    elapsed = time.process_time() - start
    assert prop.cases
    assert elapsed < 2.0, f"{path.name} took {elapsed:.2f} s of CPU"
