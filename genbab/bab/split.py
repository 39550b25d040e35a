"""One round's split decisions and the children they make.

:func:`choose` scores every candidate neuron of every domain with the configured
heuristic (see :mod:`genbab.bab.branching`) and returns the best ``depth``
distinct neurons per domain with their branching points; :func:`make_children`
turns ``N`` domains and their decisions into up to ``N * 2**depth`` children.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bab import bounding, branching
from genbab.bab.bounding import record_coefficients
from genbab.bab.domains import Domains
from genbab.bab.problem import Problem, Shortcuts, flat

# Largest number of elements of one chunk of the exact BBPS scores.
CHUNK_ELEMENTS = 1 << 24


@dataclass
class Choice:
    """Split decisions, ``D`` per domain.

    Attributes:
        index: ``[N, D]`` neuron index in the concatenation of all split values.
        point: ``[N, D]`` branching points.
        valid: ``[N, D]`` False where a domain had fewer candidates than ``D``.
    """

    index: Tensor
    point: Tensor
    valid: Tensor


def choose(problem: Problem, doms: Domains, depth: int) -> Choice:
    """The ``depth`` best neurons to split in every domain, and where."""
    cfg = problem.config
    bounds = problem.full_bounds(doms.item, doms.bounds)
    points, mask, width = [], [], []
    for v in problem.values:
        lo, hi = doms.bounds[v.name]
        points.append(flat(branching.split_points(v, lo, hi, problem.table, bounds)))
        mask.append(flat(branching.candidate_mask(v, lo, hi, cfg.min_gap)))
        width.append(flat(hi - lo))
    pts, ok, wid = torch.cat(points, 1), torch.cat(mask, 1), torch.cat(width, 1)
    if cfg.heuristic == "widest":
        score = wid.to(branching.SCORE_DTYPE)
    else:
        score = _scores(problem, doms, pts, ok, depth)
    # A tiny bonus for width keeps ties (e.g. all-zero scores) meaningful.
    score = score + 1e-9 * wid.to(score.dtype)
    score = torch.where(ok, score, -torch.inf)
    k = min(depth, score.shape[1])
    top, index = torch.topk(score, k, dim=1)
    return Choice(index, torch.gather(pts, 1, index), torch.isfinite(top))


def _scores(
    problem: Problem, doms: Domains, pts: Tensor, ok: Tensor, depth: int
) -> Tensor:
    """BaBSR-like or BBPS scores ``[N, T]``.

    BBPS: the exact score for the best candidates by the estimate, a very low
    one for all others.
    """
    cfg = problem.config
    record, form, lower = record_coefficients(problem, doms)
    margin = (lower - problem.objective.rhs[doms.item]).to(branching.SCORE_DTYPE)
    c0s, c1s, dbs = [], [], []
    N, R = margin.shape
    for v, start, end in _spans(problem):
        shape = doms.bounds[v.name][0].shape
        terms = branching.child_terms(
            v, record, doms.bounds, pts[:, start:end].reshape(shape), doms.alpha
        )
        if terms is None:
            zero = margin.new_zeros(N, R, end - start)
            terms = (zero, torch.stack([zero, zero]), torch.stack([zero, zero]))
        c0s.append(terms[0].to(branching.SCORE_DTYPE))
        c1s.append(terms[1].to(branching.SCORE_DTYPE))
        dbs.append(terms[2].to(branching.SCORE_DTYPE))
    c0, c1 = torch.cat(c0s, -1), torch.cat(c1s, -1)  # [N, R, T], [2, N, R, T]
    db = torch.cat(dbs, -1)  # [2, N, R, T]
    if cfg.heuristic == "babsr":
        return branching.clause_score(margin, db, cfg.score_reduce)
    cuts = problem.shortcuts
    if cuts is None:
        gain = _interval_gain(problem, doms, pts, c1 - c0, db)
        return branching.clause_score(margin, gain, cfg.score_reduce)
    # Each coefficient takes the shortcut of its own sign (lower linear bound
    # where positive): the change is that of the one-step-and-shortcut bound.
    dp = c1.clamp(min=0) - c0.clamp(min=0)
    dn = c1.clamp(max=0) - c0.clamp(max=0)
    box = problem.box(doms.item)
    a0, mid, rad = branching.form_parts(form, box.lower, box.upper)
    case = problem.item_case[doms.item]
    xstar = mid - torch.sign(a0) * rad  # the corner minimizing a0 . x
    lx = branching.per_case_matvec(cuts.lower_coeffs, case, xstar)
    ux = branching.per_case_matvec(cuts.upper_coeffs, case, xstar)
    lv = lx + cuts.lower_bias[case].unsqueeze(1)
    uv = ux + cuts.upper_bias[case].unsqueeze(1)
    est = dp * lv + dn * uv + db
    score = branching.clause_score(margin, est, cfg.score_reduce)
    k = min(max(cfg.candidates, depth), score.shape[1])
    if k <= 0:
        return score
    top = torch.topk(torch.where(ok, score, -torch.inf), k, dim=1).indices  # [N, K]
    exact = _exact(cuts, case, top, dp, dn, db, a0, mid, rad, margin, cfg.score_reduce)
    return torch.full_like(score, -1e30).scatter(1, top, exact)


def _spans(problem: Problem):
    return zip(problem.values, problem.offsets[:-1], problem.offsets[1:], strict=True)


def _interval_gain(problem, doms, pts, dc, db) -> Tensor:
    """Without shortcuts: ``dc * h`` concretized over each child's interval."""
    lo = torch.cat([flat(doms.bounds[v.name][0]) for v in problem.values], 1)
    hi = torch.cat([flat(doms.bounds[v.name][1]) for v in problem.values], 1)
    kl = torch.stack([lo, pts]).to(dc.dtype).unsqueeze(2)  # [2, N, 1, T]
    kh = torch.stack([pts, hi]).to(dc.dtype).unsqueeze(2)
    return torch.minimum(dc * kl, dc * kh) + db


def _exact(
    cuts: Shortcuts,
    case: Tensor,
    top: Tensor,
    dp: Tensor,
    dn: Tensor,
    db: Tensor,
    a0: Tensor,
    mid: Tensor,
    rad: Tensor,
    margin: Tensor,
    reduce: str,
) -> Tensor:
    """Exact shortcut scores of the candidates ``top`` (``[N, K]``).

    Args:
        dp: Change of the positive part of each neuron's coefficient,
            ``[2, N, R, T]`` (it multiplies the lower shortcut).
        dn: Change of the negative part (it multiplies the upper shortcut).
        db: Change of the bias.
        a0: The objective's coefficients on the input, ``[N, R, I]``.
        mid: Box centers ``[N, 1, I]``.
        rad: Box radii ``[N, 1, I]``.
        margin: Current row margins ``[N, R]``.
    """
    N, K = top.shape
    R, I = a0.shape[1], a0.shape[2]
    per_domain = 2 * R * K * I
    step = max(1, CHUNK_ELEMENTS // max(1, per_domain))
    out = []
    for s in range(0, N, step):
        sl = slice(s, s + step)
        t, c = top[sl], case[sl]
        lg = cuts.lower_coeffs[c.unsqueeze(1), t][None, :, None]  # [1, n, 1, K, I]
        ug = cuts.upper_coeffs[c.unsqueeze(1), t][None, :, None]
        lb = cuts.lower_bias[c.unsqueeze(1), t][None, :, None]  # [1, n, 1, K]
        ub = cuts.upper_bias[c.unsqueeze(1), t][None, :, None]
        idx = t[None, :, None, :].expand(2, -1, R, -1)
        p = torch.gather(dp[:, sl], 3, idx)  # [2, n, R, K]
        q = torch.gather(dn[:, sl], 3, idx)
        full = a0[sl][None, :, :, None] + p.unsqueeze(-1) * lg + q.unsqueeze(-1) * ug
        m, r = mid[sl][None, :, :, None], rad[sl][None, :, :, None]
        conc = (full * m).sum(-1) - (full.abs() * r).sum(-1)  # [2, n, R, K]
        base = branching.concretize_mid_rad(a0[sl], mid[sl], rad[sl])
        gain = conc - base[None, :, :, None] + p * lb + q * ub
        gain = gain + torch.gather(db[:, sl], 3, idx)
        out.append(branching.clause_score(margin[sl], gain, reduce))
    return torch.cat(out)


def make_children(
    problem: Problem, doms: Domains, choice: Choice, drop_missing: bool = True
) -> Domains:
    """The children of every domain for its decisions.

    Child ``c`` of domain ``n`` sits at ``c * N + n``; bit ``d`` of ``c`` says
    which side of decision ``d`` it takes (0: ``h <= p``, 1: ``h >= p``).
    Children that would repeat another (a missing decision) are left out
    unless ``drop_missing`` is False.
    """
    N, D = choice.index.shape
    reps = 2**D
    kids = doms.repeat(reps)
    pos = torch.arange(reps * N, device=doms.item.device)
    which = pos // N
    keep = torch.ones(reps * N, dtype=torch.bool, device=pos.device)
    for d in range(D):
        index = choice.index[:, d].repeat(reps)
        point = choice.point[:, d].repeat(reps)
        valid = choice.valid[:, d].repeat(reps)
        side = (which >> d) & 1
        keep &= valid | (side == 0)
        for v, start, end in _spans(problem):
            sel = valid & (index >= start) & (index < end)
            rows = torch.nonzero(sel).flatten()
            if not rows.numel():
                continue
            j = index[rows] - start
            lo, hi = (flat(t) for t in kids.bounds[v.name])
            left = side[rows] == 0
            hi[rows[left], j[left]] = point[rows[left]].to(hi.dtype)
            lo[rows[~left], j[~left]] = point[rows[~left]].to(lo.dtype)
    kids.depth = kids.depth + choice.valid.sum(1).repeat(reps)
    return kids.take(keep) if drop_missing else kids


def choose_filtered(problem: Problem, doms: Domains) -> Choice:
    """One decision per domain: among the heuristic's best
    ``filter_candidates`` neurons, the one whose children bound best after
    ``filter_iterations`` steps of alpha/beta optimization."""
    cfg = problem.config
    top = choose(problem, doms, cfg.filter_candidates)
    N, F = top.index.shape
    parts = []
    for f in range(F):
        one = Choice(
            top.index[:, f : f + 1], top.point[:, f : f + 1], top.valid[:, f : f + 1]
        )
        parts.append(make_children(problem, doms, one, drop_missing=False))
    kids = bounding.optimize(problem, Domains.concat(parts), cfg.filter_iterations)
    # Children of candidate f: kids[2 N f : 2 N (f + 1)], left then right.
    margin = kids.margin.reshape(F, 2, N)
    if cfg.score_reduce == "worst":
        score = margin.min(1).values
    else:
        score = margin.clamp(max=0).sum(1)
    score = torch.where(top.valid.T, score, -torch.inf)  # [F, N]
    best = score.argmax(0)  # [N]
    rows = torch.arange(N, device=best.device)
    return Choice(
        top.index[rows, best][:, None],
        top.point[rows, best][:, None],
        top.valid[rows, best][:, None],
    )
