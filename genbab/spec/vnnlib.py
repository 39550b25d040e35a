"""Reader for VNN-LIB 1.0 property files (plain or gzip-compressed).

The accepted language is the one the VNN-COMP scorer's ``read_vnnlib_simple`` reads,
plus a few common deviations:

- ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``, declared before use;
  indices are flattened ONNX input/output indices and must be numbered from 0.
- ``(assert F)`` where ``F`` is an atom ``(op a b)`` with ``op`` one of ``<= >= < >``
  (strict ones are read as non-strict), or ``(and F ...)``, or ``(or F ...)``,
  nested freely; top-level asserts are conjoined.
- Input atoms bound one ``X_i`` by a constant (either side); output atoms compare a
  ``Y_j`` with a constant or with another ``Y_k``.
- Constants are decimals, integers, scientific notation, or SMT-LIB ``(- c)``.

The formula is brought into disjunctive normal form (each ``or`` multiplies the
disjuncts), and disjuncts with identical input boxes are merged into one
:class:`~genbab.spec.property.Case`, in order of first appearance.

Speed: one regular-expression tokenizer scans the text once. On the regular shapes
real benchmarks use (runs of declarations, runs of ``X`` bound asserts, long ``and``
bodies of ``X`` bounds) it takes whole runs as one token and converts them in bulk.
Whenever a bulk run looks irregular, the file is re-read with the precise tokenizer,
which handles every atom on its own and reports errors with line and column.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import time
import zlib

import numpy as np

from genbab.errors import SpecError, VNNLibParseError
from genbab.spec._dnf import MAX_DISJUNCTS, Conj, Expander, NeedPrecise, too_many
from genbab.spec.property import Property

logger = logging.getLogger(__name__)

_IS_LE = {"<=": True, "<": True, ">=": False, ">": False}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_COMMANDS = ("assert", "declare-const")
_VARNAME = re.compile(r"([XY])_(\d+)", re.ASCII)

# Precise tokens: a simple atom with plain operands, '(', ')', a comment (no group,
# skipped) and any other symbol.
_PRECISE = (
    r"\(\s*(?P<op><=|>=|<|>)\s+(?P<lhs>[^\s();]+)\s+(?P<rhs>[^\s();]+)\s*\)"
    r"|(?P<open>\()|(?P<close>\))|;[^\n]*|(?P<sym>[^\s();]+)"
)
# Bulk tokens: runs of declarations, of top-level X bound asserts, of X bound atoms.
# Runs are possessive (no backtracking state is kept) and at most _RUN items long,
# so a run of 300k asserts costs neither regex stack nor one huge word list.
_RUN = 4096
_X_ATOM = r"\(\s*(?:<=|>=|<|>)\s+X_\d+\s+[-+.0-9eE]+\s*\)"
_BULK = (
    rf"(?P<drun>(?:\(\s*declare-const\s+[XY]_\d+\s+Real\s*\)\s*){{1,{_RUN}}}+)"
    rf"|(?P<arun>(?:\(\s*assert\s+{_X_ATOM}\s*\)\s*){{1,{_RUN}}}+)"
    rf"|(?P<xrun>(?:\([<>]=? X_\d+ [-+.0-9eE]+\)\s*){{1,{_RUN}}}+"
    rf"|(?:{_X_ATOM}\s*){{1,{_RUN}}}+)|"
)
_TOKEN_PRECISE = re.compile(_PRECISE, re.ASCII)
_TOKEN_BULK = re.compile(_BULK + _PRECISE, re.ASCII)


def read_vnnlib(
    path: str | os.PathLike,
    num_inputs: int | None = None,
    num_outputs: int | None = None,
) -> Property:
    """Reads a VNN-LIB 1.0 property file.

    Args:
        path: the ``.vnnlib`` file; gzip-compressed files (``.vnnlib.gz``) are
            recognised by their content and read transparently.
        num_inputs: if given, the number of flattened model inputs; the file must
            declare exactly ``X_0 .. X_{num_inputs-1}``.
        num_outputs: if given, the number of flattened model outputs; the file must
            declare exactly ``Y_0 .. Y_{num_outputs-1}``.

    Returns:
        The property: each case has an input box ``lower/upper [num_inputs]`` and
        clauses ``matrix [k, num_outputs] @ y <= rhs [k]``.

    Raises:
        SpecError: the file is missing or unreadable, or its declared counts do not
            match ``num_inputs`` / ``num_outputs``.
        VNNLibParseError: the file is malformed (with line and column).
    """
    start = time.perf_counter()
    name = os.fspath(path)
    text = _read_text(name)
    try:
        prop = _parse_text(text, name, num_inputs, num_outputs, bulk=True)
    except NeedPrecise:
        logger.debug("%s: irregular bulk run, re-reading precisely", name)
        prop = _parse_text(text, name, num_inputs, num_outputs, bulk=False)
    logger.debug(
        "read %s: %d inputs, %d outputs, %d cases in %.3f s",
        name,
        prop.num_inputs,
        prop.num_outputs,
        len(prop.cases),
        time.perf_counter() - start,
    )
    return prop


def _read_text(path: str) -> str:
    """Returns the decoded text of ``path``, gunzipping it if needed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise SpecError(f"VNN-LIB file not found: {path}") from None
    except OSError as exc:
        raise SpecError(f"cannot read VNN-LIB file {path}: {exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SpecError(f"corrupt gzip data in {path}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise VNNLibParseError(path, line, column, "invalid UTF-8 byte") from None


def _parse_text(
    text: str,
    path: str,
    num_inputs: int | None,
    num_outputs: int | None,
    bulk: bool,
) -> Property:
    """Parses VNN-LIB ``text``; with ``bulk`` it may raise :class:`NeedPrecise`."""
    parser = _Parser(text, path, bulk, num_inputs)
    parser.parse()
    n = _declared_count(parser.x_decl, "input", "X", path, num_inputs)
    m = _declared_count(parser.y_decl, "output", "Y", path, num_outputs)
    expander = Expander(path, n, m, parser.x_decl, parser.error, precise=not bulk)
    cases = expander.cases(parser.factors)
    return Property(cases=cases, num_inputs=n, num_outputs=m, path=path)


def _declared_count(
    declared: dict[int, int], kind: str, prefix: str, path: str, expected: int | None
) -> int:
    """Checks that ``declared`` indices are 0..n-1 (and n == expected); returns n."""
    count = len(declared)
    if count == 0:
        raise SpecError(f"{path}: declares no {kind} variables ({prefix}_i)")
    if max(declared) != count - 1:
        missing = min(set(range(max(declared) + 1)) - declared.keys())
        raise SpecError(
            f"{path}: {kind} variables are not numbered from 0: {prefix}_{missing} "
            f"is not declared but {prefix}_{max(declared)} is"
        )
    if expected is not None and count != expected:
        raise SpecError(
            f"{path}: declares {count} {kind}s ({prefix}_0..{prefix}_{count - 1}) "
            f"but the model has {expected}"
        )
    return count


def _split_run(run: str) -> list[str]:
    """Splits a bulk run into its words, dropping the parentheses."""
    return run.replace("(", " ").replace(")", " ").split()


def _show(match: re.Match) -> str:
    """A short quote of a token for error messages."""
    word = match.group()
    return repr(word if len(word) <= 40 else word[:37] + "...")


class _Parser:
    """Recursive-descent parser from tokens to a list of DNF factors.

    ``factors[k]`` is the list of alternative conjunctions of the k-th top-level
    assert (consecutive single-alternative asserts share one factor); the property
    is the conjunction of the factors.
    """

    def __init__(
        self, text: str, path: str, bulk: bool, num_inputs: int | None
    ) -> None:
        self._text = text
        self.path = path
        self.bulk = bulk
        self._num_inputs = num_inputs
        tokens = _TOKEN_BULK if bulk else _TOKEN_PRECISE
        self._tokens = tokens.finditer(text)
        self._names: dict[str, tuple[str, int]] = {}
        self._x_names: dict[str, int] = {}
        self.x_decl: dict[int, int] = {}
        self.y_decl: dict[int, int] = {}
        self.factors: list[list[Conj]] = []
        self._floats: dict[str, float] = {}
        self._layouts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- helpers ------------------------------------------------------------------

    def error(self, offset: int, message: str) -> VNNLibParseError:
        """Builds the positioned parse error for character ``offset``."""
        line = self._text.count("\n", 0, offset) + 1
        column = offset - self._text.rfind("\n", 0, offset)
        return VNNLibParseError(self.path, line, column, message)

    def _fail(self, match: re.Match, message: str) -> Exception:
        """The error for an unexpected token; a bulk run defers to the precise
        reader, so that both readers report the same position and message."""
        if self.bulk and match.lastgroup in ("drun", "arun", "xrun"):
            return NeedPrecise()
        return self.error(match.start(), message)

    def _rescan(self) -> NeedPrecise:
        assert self.bulk, "the precise tokenizer never asks for a rescan"
        return NeedPrecise()

    def _next(self) -> re.Match | None:
        """The next non-comment token, or None at the end of the text."""
        for match in self._tokens:
            if match.lastgroup is not None:
                return match
        return None

    def _next_in(self, opener: re.Match) -> re.Match:
        """The next token inside the expression opened by ``opener``."""
        match = self._next()
        if match is None:
            raise self.error(opener.start(), "unbalanced parentheses: '(' never closed")
        return match

    def _close(self, opener: re.Match, what: str) -> None:
        """Expects the ')' that ends the expression opened by ``opener``."""
        match = self._next_in(opener)
        if match.lastgroup == "close":
            return
        if self._starts_command(match):
            raise self.error(
                opener.start(),
                "unbalanced parentheses: '(' never closed before the next command",
            )
        raise self._fail(match, f"{what} has extra operand {_show(match)}")

    def _starts_command(self, match: re.Match) -> bool:
        """Whether ``match`` begins a new top-level command (consumes a token)."""
        if match.lastgroup in ("drun", "arun"):
            return True
        if match.lastgroup != "open":
            return False
        head = self._next()
        return head is not None and head.group() in _COMMANDS

    # -- commands -----------------------------------------------------------------

    def parse(self) -> None:
        """Reads every command of the text."""
        while (match := self._next()) is not None:
            kind = match.lastgroup
            if kind == "drun":
                self._bulk_declare(match)
            elif kind == "arun":
                words = _split_run(match.group())
                conj = Conj()
                self._bulk_bounds(conj, words[1::4], words[2::4], words[3::4])
                self._conjoin([conj])
            elif kind == "open":
                self._command(match)
            elif kind == "close":
                raise self._fail(match, "unbalanced parentheses: extra ')'")
            else:
                raise self._fail(
                    match,
                    f"expected a command like '(assert ...)', got {_show(match)}",
                )

    def _command(self, opener: re.Match) -> None:
        head = self._next_in(opener)
        word = head.group()
        if head.lastgroup != "sym":
            raise self._fail(head, f"expected a command name, got {_show(head)}")
        if word == "declare-const":
            self._declare(opener)
        elif word == "assert":
            self._assert(opener)
        elif word in ("check-sat", "get-model", "exit"):
            self._close(opener, f"'{word}'")
        elif word in ("vnnlib-version", "declare-network"):
            raise self._fail(
                head,
                f"'{word}' is VNN-LIB 2.0; this reader handles VNN-LIB 1.0",
            )
        else:
            raise self._fail(head, f"unknown command '{word}'")

    def _declare(self, opener: re.Match) -> None:
        name = self._next_in(opener)
        found = _VARNAME.fullmatch(name.group()) if name.lastgroup == "sym" else None
        if found is None:
            raise self._fail(
                name,
                f"expected a variable name X_<i> or Y_<j>, got {_show(name)}",
            )
        sort = self._next_in(opener)
        if sort.group() != "Real":
            raise self._fail(sort, f"expected sort 'Real', got {_show(sort)}")
        self._close(opener, "'declare-const'")
        self._add_name(name.group(), found.group(1), int(found.group(2)), name.start())

    def _add_name(self, name: str, prefix: str, index: int, offset: int) -> None:
        declared = self.x_decl if prefix == "X" else self.y_decl
        if index in declared:
            if self.bulk:
                raise self._rescan()
            raise self.error(offset, f"variable {prefix}_{index} is declared twice")
        declared[index] = offset
        self._names[name] = ("x" if prefix == "X" else "y", index)
        if prefix == "X":
            self._x_names[name] = index

    def _bulk_declare(self, run: re.Match) -> None:
        for name in _split_run(run.group())[1::3]:
            self._add_name(name, name[0], int(name[2:]), -1)

    def _assert(self, opener: re.Match) -> None:
        match = self._next_in(opener)
        kind = match.lastgroup
        if kind == "xrun":
            words = _split_run(match.group())
            if len(words) != 3:
                raise self._rescan()
            conj = Conj()
            self._bulk_bounds(conj, words[0::3], words[1::3], words[2::3])
            dnf = [conj]
        elif kind == "rhs":
            conj = Conj()
            self._atom(conj, match)
            dnf = [conj]
        elif kind == "open":
            dnf = self._compound(match)
        elif kind == "close":
            raise self._fail(match, "'assert' needs a formula")
        else:
            raise self._fail(match, f"expected a formula, got {_show(match)}")
        self._close(opener, "'assert'")
        self._conjoin(dnf)

    def _conjoin(self, dnf: list[Conj]) -> None:
        """Conjoins one top-level assert (in DNF) to the property."""
        if len(dnf) == 1 and self.factors and len(self.factors[-1]) == 1:
            self.factors[-1][0].extend(dnf[0])
        else:
            self.factors.append(dnf)

    # -- formulas -----------------------------------------------------------------

    def _compound(self, opener: re.Match) -> list[Conj]:
        """Parses the formula opened by ``opener`` into DNF."""
        head = self._next_in(opener)
        if head.lastgroup != "sym":
            raise self._fail(head, f"expected an operator after '(', got {_show(head)}")
        word = head.group()
        if word == "and":
            return self._and(opener)
        if word == "or":
            return self._or(opener)
        if word in _IS_LE:
            conj = Conj()
            self._general_atom(conj, opener, word)
            return [conj]
        if word in _COMMANDS:
            raise self._fail(
                head,
                f"'{word}' inside a formula: a ')' is missing before this command",
            )
        raise self._fail(head, f"unknown operator '{word}'")

    def _and(self, opener: re.Match) -> list[Conj]:
        alternatives = [Conj()]
        count = 0
        while (match := self._next_in(opener)).lastgroup != "close":
            count += 1
            kind = match.lastgroup
            if kind == "rhs":
                for conj in alternatives:
                    self._atom(conj, match)
            elif kind == "xrun":
                words = _split_run(match.group())
                part = Conj()
                self._bulk_bounds(part, words[0::3], words[1::3], words[2::3])
                alternatives = self._product(alternatives, [part], match)
            elif kind == "open":
                alternatives = self._product(alternatives, self._compound(match), match)
            else:
                raise self._fail(
                    match, f"expected a formula in 'and', got {_show(match)}"
                )
        if count == 0:
            raise self.error(opener.start(), "'and' needs at least one operand")
        return alternatives

    def _or(self, opener: re.Match) -> list[Conj]:
        alternatives: list[Conj] = []
        while (match := self._next_in(opener)).lastgroup != "close":
            kind = match.lastgroup
            if kind == "rhs":
                conj = Conj()
                self._atom(conj, match)
                alternatives.append(conj)
            elif kind == "xrun":
                words = _split_run(match.group())
                for k in range(0, len(words), 3):
                    conj = Conj()
                    op, name, value = words[k : k + 3]
                    self._bulk_bounds(conj, [op], [name], [value])
                    alternatives.append(conj)
            elif kind == "open":
                alternatives += self._compound(match)
            else:
                raise self._fail(
                    match, f"expected a formula in 'or', got {_show(match)}"
                )
            if len(alternatives) > MAX_DISJUNCTS:
                raise self._fail(match, too_many(len(alternatives)))
        if not alternatives:
            raise self.error(opener.start(), "'or' needs at least one operand")
        return alternatives

    def _product(
        self, left: list[Conj], right: list[Conj], where: re.Match
    ) -> list[Conj]:
        """Conjunction of two DNFs (their cross product)."""
        if len(left) == 1 and len(right) == 1:
            left[0].extend(right[0])
            return left
        if len(left) * len(right) > MAX_DISJUNCTS:
            raise self.error(where.start(), too_many(len(left) * len(right)))
        return [a.merged(b) for a in left for b in right]

    # -- atoms --------------------------------------------------------------------

    def _bulk_bounds(
        self, conj: Conj, ops: list[str], names: list[str], values: list[str]
    ) -> None:
        """Adds X bounds ``(op X_i value)`` from a bulk run, or asks for a rescan."""
        # Long files repeat the same variables and operators in every disjunct, so
        # their arrays are kept by content; numbers are converted once per spelling.
        key = " ".join(ops) + " " + " ".join(names)
        layout = self._layouts.get(key)
        if layout is None:
            index = list(map(self._x_names.get, names))
            if None in index:
                raise self._rescan()
            is_upper = list(map(_IS_LE.__getitem__, ops))
            layout = (np.array(index, dtype=np.int64), np.array(is_upper, dtype=bool))
            self._layouts[key] = layout
        table = self._floats
        if len(table) > 1 << 16:
            table.clear()  # keep memory bounded on files with few repeated numbers
        try:
            for word in set(values).difference(table):
                table[word] = float(word)
        except ValueError:
            raise self._rescan() from None
        value = np.array(list(map(table.__getitem__, values)), dtype=np.float64)
        if not np.isfinite(value).all():
            raise self._rescan()
        conj.chunks.append((layout[0], value, layout[1]))

    def _atom(self, conj: Conj, match: re.Match) -> None:
        """Adds a simple atom token ``(op a b)`` with plain operands."""
        lhs = self._operand(match.group("lhs"), match.start("lhs"))
        rhs = self._operand(match.group("rhs"), match.start("rhs"))
        self._add_atom(conj, match.group("op"), lhs, rhs, match.start())

    def _general_atom(self, conj: Conj, opener: re.Match, op: str) -> None:
        """Adds an atom read token by token (operands may be ``(- c)``)."""
        operands: list[tuple[str, float, int]] = []
        while (match := self._next_in(opener)).lastgroup != "close":
            if len(operands) == 2:
                raise self._fail(match, f"too many operands for '{op}' (expected 2)")
            if match.lastgroup == "sym":
                operands.append(self._operand(match.group(), match.start()))
            elif match.lastgroup == "open":
                operands.append(self._negation(match))
            else:
                raise self._fail(
                    match, f"expected a variable or number, got {_show(match)}"
                )
        if len(operands) < 2:
            raise self._fail(
                match,
                f"missing operand for '{op}': expected 2, got {len(operands)}",
            )
        self._add_atom(conj, op, operands[0], operands[1], opener.start())

    def _negation(self, opener: re.Match) -> tuple[str, float, int]:
        """Reads ``(- c)`` after its '('."""
        minus = self._next_in(opener)
        if minus.group() != "-":
            raise self._fail(
                minus,
                f"expected '-' (only (- <number>) is allowed here), got {_show(minus)}",
            )
        number = self._next_in(opener)
        kind, value, _ = (
            self._operand(number.group(), number.start())
            if number.lastgroup == "sym"
            else ("", 0.0, 0)
        )
        if kind != "c":
            raise self._fail(
                number, f"'-' applies to a number only, got {_show(number)}"
            )
        self._close(opener, "'-'")
        return ("c", -value, opener.start())

    def _operand(self, word: str, offset: int) -> tuple[str, float, int]:
        """Resolves a variable name or number to ``(kind, index or value, offset)``."""
        named = self._names.get(word)
        if named is not None:
            return (named[0], named[1], offset)
        if _NUMBER.fullmatch(word):
            value = float(word)
            if not math.isfinite(value):
                raise self.error(offset, f"number {word} is out of float64 range")
            return ("c", value, offset)
        found = _VARNAME.fullmatch(word)
        if found is None:
            raise self.error(offset, f"expected a variable or number, got '{word}'")
        hint = ""
        index = int(found.group(2))
        if found.group(1) == "X" and self._num_inputs is not None:
            if index >= self._num_inputs:
                hint = f" (out of range: the model has {self._num_inputs} inputs)"
        raise self.error(offset, f"undeclared variable '{word}'{hint}")

    def _add_atom(
        self,
        conj: Conj,
        op: str,
        lhs: tuple[str, float, int],
        rhs: tuple[str, float, int],
        offset: int,
    ) -> None:
        """Adds ``lhs op rhs`` to ``conj`` as a bound or an output row."""
        small, big = (lhs, rhs) if _IS_LE[op] else (rhs, lhs)
        kinds = small[0] + big[0]
        if kinds == "xc" or kinds == "cx":
            var, value = (small, big) if kinds == "xc" else (big, small)
            conj.xi.append(int(var[1]))
            conj.xv.append(value[1])
            conj.xu.append(kinds == "xc")
            conj.xo.append(offset)
        elif kinds == "yy":
            conj.rows.append((int(small[1]), int(big[1]), 0.0))
        elif kinds == "yc":
            conj.rows.append((int(small[1]), -1, big[1]))
        elif kinds == "cy":
            conj.rows.append((-1, int(big[1]), -small[1]))
        elif kinds == "xx":
            raise self.error(
                offset,
                "non-box input constraint: only bounds of one X by a constant are "
                "supported",
            )
        elif "x" in kinds:
            raise self.error(offset, "output constraint mentions an input X variable")
        else:
            raise self.error(offset, "atom compares two constants")
