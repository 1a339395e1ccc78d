"""Stability of polynomial recursions on given inputs: check, and shrink U until bounded.

A polynomial RNN ``h_t = f(A1 x_t + U h_{t-1})`` is not globally stable: a fitted ``U``
that is slightly too large, or a rare input, makes the hidden state blow up, and then
``predict`` raises :class:`~spectral_rnn.DivergenceError`. :func:`stabilize` makes sure a
model does not diverge on the inputs it is given (typically its own training inputs):

1. bounded activations (``tanh``) cannot diverge: nothing to do;
2. a cheap sound bound, one pass over ``A1 x_t`` and no recursion: with
   ``a = max_t ||A1 x_t||_inf``, ``k = ||U||_inf`` (largest absolute row sum) and
   ``p(r) = sum_k |c_k| r^k``, any ``r`` with ``p(a + k r) <= r`` bounds every
   ``|h_t|`` by induction (``h_0 = 0``). Such an ``r`` below the divergence limit
   certifies the chain without running it;
3. otherwise the recursion is run on the inputs (float64). When it diverges (a
   hidden state beyond ``limit`` in magnitude, 1e6 as in ``predict``), ``U`` is scaled
   by a factor ``c`` in ``(0, 1)`` found by bisection: the largest ``c`` (to relative
   precision ``rtol``) for which the recursion stays bounded on these inputs, times a
   safety ``margin`` (0.9), and the scaled model is checked again on every sequence.
   The chains of a BRNN are independent: ``U`` and ``V`` get their own factors.
   If even ``U = 0`` diverges (``f(A1 x_t)`` itself exceeds the limit: ``A1`` is too large
   for these inputs) :class:`~spectral_rnn.DivergenceError` is raised.

The bisection assumes that a chain bounded at factor ``c`` is bounded at smaller
factors, which holds for typical models but is not a theorem for every polynomial;
the final check on all sequences is what the guarantee rests on (a factor that fails
it is shrunk further by ``margin`` until it passes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    InputError,
    as_sequences,
    check_finite,
    check_lengths,
    check_xy,
    read_slice,
    resolve_device,
)
from ._dask import compute_blocks, is_dask
from ._heap import trim_heap
from .activations import Activation, Polynomial
from .chain import DIVERGENCE_LIMIT
from .metrics import prediction_error
from .models import RNNModel

__all__ = ["StabilityReport", "stabilize", "bound_certifies"]


@dataclass
class StabilityReport:
    """What :func:`stabilize` found and did.

    ``changed``: the returned model differs from the given one (``U`` and/or ``V``
    scaled). ``factor``: the factor applied to ``U`` (1.0 when unchanged);
    ``factor_backward``: to ``V`` (BRNN only, else ``None``). ``method``: how stability
    was established: ``"bounded activation"``, ``"bound"`` (the sound a-priori bound,
    no recursion run), ``"simulation"`` (the recursion ran and stayed bounded) or
    ``"shrunk"``. ``peak_before`` / ``peak_after``: the largest ``|hidden state|`` of the
    given / returned model on the inputs (``inf``: diverged; for ``"bound"``, the bound;
    ``nan`` for a bounded activation). ``diverged_sequences``: sequences on which the given
    model diverged, of ``n_sequences``. ``train_error_before`` / ``train_error_after``:
    relative MSE against ``Y`` (squared error per valid step over the total output
    variance) when ``Y`` was given, ``inf`` for a model that diverges, else ``None``.
    """

    changed: bool
    factor: float
    factor_backward: float | None
    method: str
    peak_before: float
    peak_after: float
    diverged_sequences: int
    n_sequences: int
    train_error_before: float | None = None
    train_error_after: float | None = None

    def __str__(self) -> str:
        if not self.changed:
            return f"stable on these inputs ({self.method}; peak |h| {self.peak_after:.3g}): unchanged"
        fac = f"U scaled by {self.factor:.4g}"
        if self.factor_backward is not None:
            fac += f", V by {self.factor_backward:.4g}"
        s = (f"the recursion diverged on {self.diverged_sequences} of {self.n_sequences} sequences: {fac} "
             f"(peak |h| now {self.peak_after:.3g})")
        if self.train_error_after is not None:
            s += f"; training relative MSE {self.train_error_before:.3g} -> {self.train_error_after:.3g}"
        return s


# ----------------------------------------------------------------------------- one chain


def _peaks(drive: torch.Tensor, W: torch.Tensor, f: Activation, valid: torch.Tensor | None, reverse: bool,
           limit: float, stop_early: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest ``|h_t|`` (a 0-d tensor) of ``h_t = f(drive_t + W h_prev)`` over the sequences
    and steps of ``drive`` (n, T, d_h), and a per-sequence divergence flag (n,).

    A sequence whose state exceeds ``limit`` (or is not finite) is flagged and its state
    reset to zero, so the others go on without overflow. ``stop_early``: return at the
    first divergence (the flags are then partial, but ``any()`` is right). One reduction per
    step while nothing diverges (a per-sequence one only at a step where something does).
    """
    n, T, dh = drive.shape
    peak = drive.new_zeros(())
    bad = torch.zeros(n, dtype=torch.bool, device=drive.device)
    if n == 0:
        return peak, bad
    h = drive.new_zeros((n, dh))
    D = drive.transpose(0, 1).contiguous()  # (T, n, d_h): each step's drive contiguous
    Wt = W.T.contiguous()
    zero = torch.zeros((), dtype=drive.dtype, device=drive.device)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new = f(torch.addmm(D[t], h, Wt))
        if valid is not None:
            new = torch.where(valid[:, t : t + 1], new, zero)
        top = new.abs().amax()
        if not bool(top <= limit):  # NaN counts as over
            a = new.abs().amax(1)
            over = ~(a <= limit)
            bad |= over
            if stop_early:
                return peak, bad
            new = torch.where(over[:, None], zero, new)
            top = torch.where(over, zero, a).amax()
        if valid is not None and not reverse:
            h = torch.where(valid[:, t : t + 1], new, h)  # padding leaves a forward state as it is
        else:
            h = new
        peak = torch.maximum(peak, top)
    return peak, bad


def _bound(f: Polynomial, a: float, k: float, limit: float, max_iter: int = 500) -> float:
    """Smallest ``r`` with ``p(a + k r) <= r`` (``p``: absolute coefficients of ``f``) found by
    the increasing iteration ``r <- p(a + k r)`` from 0, or ``inf`` if it passes ``limit`` or
    does not settle. Verified before it is returned, so it is a sound bound."""
    r = 0.0
    for _ in range(max_iter):
        r_new = f.abs_bound(a + k * r)
        if not math.isfinite(r_new) or r_new > limit:
            return math.inf
        if r_new - r <= 1e-12 * max(r_new, 1e-300):
            r = r_new * (1 + 1e-9) + 1e-300
            return r if f.abs_bound(a + k * r) <= r else math.inf
        r = r_new
    return math.inf


def bound_certifies(f: Activation, drive_max: float, W: np.ndarray, limit: float) -> float:
    """The a-priori bound on ``|h_t|`` of one chain (``inf`` when it certifies nothing).

    ``drive_max``: largest ``|(A1 x_t)_j|`` over the valid steps; ``W``: the recurrent matrix.
    """
    if not isinstance(f, Polynomial):
        return math.inf
    k = float(np.abs(W).sum(axis=1).max()) if W.size else 0.0
    return _bound(f, float(drive_max), k, limit)


class _Chain:
    """One chain of a model on given inputs: drives in chunks of sequences, masks.

    The inputs stay where the caller keeps them (a NumPy array, float32 or float64, possibly
    memory-mapped); each chunk of ``chunk_rows`` sequences is copied to ``device`` in float64
    when it is needed, so the check holds one chunk, not a float64 copy of all the data.
    """

    def __init__(self, X: np.ndarray, lengths: np.ndarray | None, A: torch.Tensor, W: torch.Tensor,
                 f: Activation, reverse: bool, limit: float, chunk_rows: int) -> None:
        self.X, self.lengths, self.W, self.f, self.reverse, self.limit = X, lengths, W, f, reverse, limit
        self.A = A
        self.chunk_rows = chunk_rows
        n = X.shape[0]
        self.chunks = [slice(i, min(n, i + chunk_rows)) for i in range(0, n, chunk_rows)]

    def drive(self, rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(A x_t for the sequences rows, their valid-step mask or None)`` on the device."""
        idx = rows if isinstance(rows, slice) else rows.cpu().numpy()
        dev = self.A.device
        trim_heap()
        Xc = self.X.oindex[idx] if (not isinstance(idx, slice) and hasattr(self.X, "oindex")) else read_slice(self.X, idx)
        with warnings.catch_warnings():  # a read-only memory map: only read
            warnings.simplefilter("ignore", UserWarning)
            Xc = (Xc if isinstance(Xc, torch.Tensor) else torch.as_tensor(np.asarray(Xc))).to(dev, torch.float64)
        valid = None
        if self.lengths is not None:
            L = torch.as_tensor(self.lengths[idx], device=dev)
            valid = torch.arange(Xc.shape[1], device=dev)[None, :] < L[:, None]
            Xc = Xc.masked_fill(~valid.unsqueeze(-1), 0.0)
        return Xc @ self.A.T, valid

    def drive_max(self) -> float:
        if is_dask(self.X):  # one task per Dask block, on the workers that hold it
            return max(compute_blocks(_block_drive_max, self.X, None, self.lengths, self._spec()), default=0.0)
        m = 0.0
        for rows in self.chunks:
            m = max(m, float(self.drive(rows)[0].abs().amax())) if self.X.shape[1] else m
        return m

    def _spec(self) -> tuple:
        """What a Dask task needs to rebuild this chain on its block (on the CPU)."""
        return (self.A.cpu(), self.W.cpu(), self.f, self.reverse, self.limit, self.chunk_rows)

    def run(self, factor: float, rows=None, stop_early: bool = False) -> tuple[float, torch.Tensor]:
        """``(largest |h_t|, indices of the sequences that diverged)`` at ``factor * W``, over all
        sequences or over ``rows`` (an index tensor). Only a running maximum and the (few)
        diverging indices are kept, so the memory does not grow with the number of sequences."""
        if rows is None and is_dask(self.X):  # one task per Dask block; the blocks' results joined here
            parts = compute_blocks(_block_run, self.X, None, self.lengths, self._spec(), factor, stop_early)
            starts = np.concatenate([[0], np.cumsum(self.X.chunks[0])])
            return (max((p for p, _ in parts), default=0.0),
                    torch.cat([torch.zeros(0, dtype=torch.long)] + [b + int(r0) for (_, b), r0 in zip(parts, starts)]))
        W = self.W * factor
        if rows is not None:
            chunks = [rows[i : i + self.chunk_rows] for i in range(0, len(rows), self.chunk_rows)]
        else:
            chunks = self.chunks
        peak, bads = 0.0, [torch.zeros(0, dtype=torch.long)]
        for r in chunks:
            drive, v = self.drive(r)
            p, b = _peaks(drive, W, self.f, v, self.reverse, self.limit, stop_early)
            peak = max(peak, float(p))
            if bool(b.any()):
                local = torch.nonzero(b).flatten().cpu()
                bads.append(local + r.start if isinstance(r, slice) else r.cpu()[local])
                if stop_early:
                    break
        return peak, torch.cat(bads)


def _block_chain(Xb: np.ndarray, Lb: np.ndarray | None, spec: tuple) -> _Chain:
    A, W, f, reverse, limit, chunk_rows = spec
    return _Chain(Xb, Lb, A, W, f, reverse, limit, chunk_rows)


def _block_drive_max(Xb: np.ndarray, _Y: None, Lb: np.ndarray | None, spec: tuple) -> float:
    """A Dask task: :meth:`_Chain.drive_max` over one block of sequences."""
    return _block_chain(Xb, Lb, spec).drive_max()


def _block_run(Xb: np.ndarray, _Y: None, Lb: np.ndarray | None, spec: tuple, factor: float,
               stop_early: bool) -> tuple[float, torch.Tensor]:
    """A Dask task: :meth:`_Chain.run` over one block of sequences (indices local to the block)."""
    return _block_chain(Xb, Lb, spec).run(factor, stop_early=stop_early)


def _stabilize_chain(ch: _Chain, margin: float, rtol: float, name: str, wname: str, iname: str,
                     drive_max: float | None = None):
    """(factor, method, peak_before, peak_after, diverged) for one chain (``diverged``: the
    indices of the sequences that diverged at the original scale, or ``None`` when none did);
    ``drive_max``: the chain's largest drive when known (else read from the inputs)."""
    if ch.f.bounded:
        return 1.0, "bounded activation", math.nan, math.nan, None
    r = bound_certifies(ch.f, ch.drive_max() if drive_max is None else drive_max, ch.W.cpu().numpy(), ch.limit)
    if math.isfinite(r):
        return 1.0, "bound", r, r, None
    peak, bad = ch.run(1.0)
    if not len(bad):
        return 1.0, "simulation", peak, peak, None
    _, bad0 = ch.run(0.0)
    if len(bad0):
        i = int(bad0.min())
        raise DivergenceError(
            f"the {name} diverges on sequence {i} even with {wname} = 0: f({iname} x_t) "
            f"exceeds {ch.limit:.0e}, so the input weights are too large for these inputs; no scaling of "
            f"{wname} can make this model stable"
        )
    # bisection on the sequences that diverged (checked on all of them afterwards)
    suspects = bad
    hi_bound = 1.0
    for _ in range(20):
        lo, hi = 0.0, hi_bound
        for _ in range(64):
            if hi - lo <= rtol * hi:
                break
            mid = 0.5 * (lo + hi)
            _, b = ch.run(mid, suspects, stop_early=True)
            if len(b):
                hi = mid
            else:
                lo = mid
        factor = margin * lo
        for _ in range(50):
            peak_f, new = ch.run(factor)
            if not len(new):
                return factor, "shrunk", math.inf, peak_f, bad
            if len(torch.unique(torch.cat([suspects, new]))) > len(suspects):
                break  # other sequences diverge here: bisect again with them
            factor *= margin
        else:  # pragma: no cover - a pathological non-monotone chain
            break
        suspects = torch.unique(torch.cat([suspects, new]))
        hi_bound = factor
    raise DivergenceError(f"could not find a factor of {wname} that keeps the {name} bounded on these inputs")


# ----------------------------------------------------------------------------- public


def _count_union(diverged: list) -> int:
    """How many distinct sequences diverged in any chain (``diverged``: index tensors or None)."""
    idx = [d for d in diverged if d is not None]
    return int(torch.unique(torch.cat(idx)).numel()) if idx else 0


def _relative_mse(model, X, Y, lengths) -> float:
    try:
        P = model.predict(X, lengths)
    except DivergenceError:
        return math.inf
    return prediction_error(Y, P, lengths)


def stabilize(
    model,
    X: object,
    lengths: object = None,
    Y: object = None,
    margin: float = 0.9,
    rtol: float = 0.01,
    limit: float | None = None,
    device: str | None = None,
    chunk_steps: int = 1 << 18,
    drive_max: Sequence[float] | None = None,
):
    """Make sure ``model``'s recursion stays bounded on inputs ``X``; shrink ``U`` (``V``) if not.

    Parameters
    ----------
    model: an :class:`IORNN` or :class:`BRNN` (any activation; bounded ones pass at once).
    X, lengths: inputs ``(n_sequences, T, d_x)`` and optional lengths, typically the
        training inputs.
    Y: optional outputs ``(n_sequences, T, d_y)``: the report then gives the training
        relative MSE before and after (the cost of the shrinking).
    margin: safety factor applied to the largest non-diverging scale found (in (0, 1]).
    rtol: relative precision of the bisection.
    limit: ``|hidden state|`` above which a recursion counts as divergent (default: the
        limit of ``predict``, 1e6).
    device, chunk_steps: where to run, and about how many time steps per block.
    drive_max: per chain (``model.chains`` order), the largest ``|(A1 x_t)_j|`` over the valid
        steps of ``X``, when the caller knows it (the spectral fit's instrument pass does):
        the a-priori bound then needs no read of ``X``. Default: computed from ``X``.

    Returns
    -------
    ``(model, report)``: the given model itself when it is stable on ``X``
    (``report.changed`` is False), else a copy with ``U`` scaled by ``report.factor``
    (and ``V`` by ``report.factor_backward``), which ``predict`` evaluates on ``X``
    without :class:`DivergenceError`. See :class:`StabilityReport`.

    Raises
    ------
    DivergenceError: even ``U = 0`` diverges on ``X`` (the input weights are too large).
    InputError: bad inputs.
    """
    if not isinstance(model, RNNModel):
        raise InputError(f"stabilize expects an IORNN or a BRNN, got {type(model).__name__}")
    if not (0 < margin <= 1):
        raise InputError(f"margin must lie in (0, 1], got {margin!r}")
    if not (0 < rtol < 1):
        raise InputError(f"rtol must lie in (0, 1), got {rtol!r}")
    limit = DIVERGENCE_LIMIT if limit is None else float(limit)
    if not limit > 0:
        raise InputError(f"limit must be positive, got {limit!r}")
    X = as_sequences(X, "inputs", dim=model.d_x)  # no copy of float32 / float64 data
    lengths = check_lengths(lengths, X.shape[0], X.shape[1])
    check_finite(X, lengths, "inputs")
    dev = resolve_device(device)
    W = {k: torch.as_tensor(v, dtype=torch.float64, device=dev) for k, v in model.parameters().items()}
    n, T = X.shape[:2]
    rows = max(1, min(int(chunk_steps), max(256, (1 << 21) // X.shape[2])) // max(T, 1))  # <= 2M numbers read
    if drive_max is not None and len(drive_max) != len(model.chains):
        raise InputError(f"drive_max needs one value per chain ({len(model.chains)}), got {len(drive_max)}")
    results = [
        _stabilize_chain(_Chain(X, lengths, W[c.input], W[c.recurrent], getattr(model, c.activation), c.reverse, limit,
                                rows), margin, rtol, "backward chain" if c.reverse else "forward chain", c.recurrent,
                         c.input, None if drive_max is None else float(drive_max[k]))
        for k, c in enumerate(model.chains)
    ]
    factors = [r[0] for r in results]
    changed = any(f != 1.0 for f in factors)
    methods = [r[1] for r in results]
    method = "shrunk" if "shrunk" in methods else ("simulation" if "simulation" in methods else methods[0])
    if changed:
        out = model.replace(**{c.recurrent: getattr(model, c.recurrent) * f for c, f in zip(model.chains, factors)})
    else:
        out = model
    report = StabilityReport(
        changed=changed,
        factor=factors[0],
        factor_backward=factors[1] if len(factors) > 1 else None,
        method=method,
        peak_before=max(r[2] for r in results) if not all(math.isnan(r[2]) for r in results) else math.nan,
        peak_after=max(r[3] for r in results) if not all(math.isnan(r[3]) for r in results) else math.nan,
        diverged_sequences=_count_union([r[4] for r in results]),
        n_sequences=n,
    )
    if Y is not None:
        Xn, Yn, Ln = check_xy(X, Y, lengths, model.d_x, model.d_y)
        report.train_error_after = _relative_mse(out, Xn, Yn, Ln)
        report.train_error_before = report.train_error_after if not changed else _relative_mse(model, Xn, Yn, Ln)
    return out, report
