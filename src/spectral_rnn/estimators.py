"""Spectral estimators: fit an IO-RNN from labelled sequences without backpropagation.

Pipeline of :meth:`SpectralIORNN.fit` (docs/method.md, 'Scores' to 'Scales and U'), each step a single
streamed pass over the data:

1. fit the input process from the inputs alone (:class:`AR1Process`: least squares, then
   the law of its innovations, chosen automatically: Gaussian closed form, density-free
   score, or a score-matching fit for the BRNN);
2. find the span of the A1 rows from random contractions of the moment tensor
   (skipped when ``d_x`` is small: the identity then spans it);
3. project the moment tensor onto that span, ``T(I, Q, Q)``, and decompose it
   (:mod:`spectral_rnn.decomposition`): unit directions of A1 and ``w_j = mu_j s_j^2 a2_j``;
4. solve the instrument equations for the scales, signs and ``U``
   (:mod:`spectral_rnn.recurrence`: one pass for the instrument moments, then
   :func:`~spectral_rnn.recurrence.solve_scales_and_recurrence`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch

from ._checks import (
    IllConditionedError,
    NotFittedError,
    check_decomposer,
    check_dtype,
    check_outlier_factor,
    check_positive_int,
    check_process,
    check_real,
    InputError,
    check_random_state,
    check_xy,
    inputs_checked_once,
    resolve_device,
)
from ._params import Params, atomic_fit
from .activations import Polynomial, as_polynomial
from .decomposition import MIN_GAP, CPDecomposer, Decomposition
from .metrics import prediction_error
from .models import BRNN, IORNN
from .moments import CHUNK_STEPS, StepStream
from .odd_route import fit_brnn_odd, fit_iornn_odd, uses_odd_route
from .control import control_for
from .processes import AR1Process, MarkovProcess
from .recurrence import instrument_moments, solve_scales_and_recurrence
from .scores import MarginalLaw
from ._dask import is_dask
from ._heap import trimming
from .sources import is_chunk_source, open_chunks
from .stability import stabilize
from .threads import limit_threads, resolve_threads
from ._fitting import HeavyTailError, _score_hint, check_peak_share, drop_extreme_sequences, output_pinv, read_by_slices

__all__ = ["SpectralIORNN", "SpectralBRNN", "solve_scales_and_recurrence", "check_activation", "output_pinv"]

#: default of ``max_peak_share``: a fit is refused when one time step carries more than this
#: share of the moment tensor's mass (and more than 200x an average step): the estimate
#: would be that step's, not the data's
MAX_PEAK_SHARE = 2e-3


#: after a sketched decomposition, re-estimate each unit's input direction in the full input space
#: (:func:`refine_directions`, one more pass)
REFINE_DIRECTIONS = True


def refine_directions(stream: StepStream, dec: Decomposition, Q: np.ndarray) -> Decomposition:
    """One step of the tensor power method per unit, in the full input space: ``a_j`` is replaced by
    ``T(w_j, I, a_j)`` normalised (``w_j`` the column of ``pinv(W)`` dual to unit ``j``), one pass.
    The decomposition inside the span ``Q`` (d_x, k) saw each unit through its projection on ``Q``, so
    its ``w_j`` carries the factor ``||Q^T a1_j||^2 / ||a1_j||^2``: ``w_j`` is divided by it.

    The sketch finds the span of the A1 rows from contractions with random vectors, whose overlap
    with each ``a1_j`` is only about ``1 / sqrt(d_x)`` of their norm: the span's error grows like
    ``d_x / sqrt(N)``, and so does that of directions read inside it. A contraction with the unit's
    own direction and output dual has overlap about 1, so its error is of order ``sqrt(d_x / N)``
    (docs/method.md, section 6, "The input span at large d_x")."""
    C = stream.contract_pairs(output_pinv(dec.W), dec.A.T)  # (d_x, r)
    A = C.T / np.maximum(np.linalg.norm(C, axis=0), 1e-300)[:, None]
    A *= np.where(np.sum(A * dec.A, axis=1) < 0, -1.0, 1.0)[:, None]
    inside = np.sum((A @ Q) ** 2, axis=1)  # ||Q^T a_j||^2 of the unit-norm refined directions
    return Decomposition(A=A, W=dec.W / inside[:, None], gap=dec.gap, als_sweeps=dec.als_sweeps, als_change=dec.als_change)


def check_activation(f: Polynomial) -> None:
    """Raise unless the scales and U of activation ``f`` are identified by this method."""
    if f.degree < 2:
        raise InputError(
            f"activation {f.to_string()!r} has degree {f.degree}: the spectral method needs degree 2 or 3 "
            "(a linear RNN has no second-order moment signal)"
        )
    if f.degree > 3:
        raise InputError(f"activation {f.to_string()!r} has degree {f.degree}: degrees 2 and 3 are supported")
    if f.degree == 2 and f.coef(1) == 0.0:
        raise InputError(
            f"activation {f.to_string()!r}: c1 must be non-zero; without it a per-unit rescaling of A1, U and A2 "
            "leaves the outputs unchanged, so no data can fix the scales"
        )
    if f.degree == 3 and f.coef(2) == 0.0:
        raise InputError(
            f"activation {f.to_string()!r}: a cubic needs c2 != 0 here; the scale equations use the second-order "
            "score and are homogeneous without it (an odd cubic, c0 = c2 = 0, goes through the third-order route)"
        )


class _Progress:
    """A tqdm bar over the steps of all passes, shown only if a fit lasts > 1 s."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", unit_scale=True, delay=1.0, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _SpectralBase(Params):
    """Hyper-parameters, validation, input process, streaming and the projected
    decomposition shared by the estimators."""

    def __init__(
        self,
        hidden_size: int,
        activation: Polynomial | Sequence[float] | str = (0.0, 1.0, 0.5),
        process: MarkovProcess | None = None,
        decomposer: CPDecomposer | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float64,
        chunk_steps: int = CHUNK_STEPS,
        random_state: int | np.random.Generator | None = None,
        progress: bool = False,
        outlier_factor: float | None = None,
        scores: str | MarginalLaw = "auto",
        first_step: str = "auto",
        min_gap: float = MIN_GAP,
        max_peak_share: float = MAX_PEAK_SHARE,
        tail_check: bool = True,
        robust: str = "auto",
        robust_blocks: int = 16,
        n_threads: int | None = None,
        control_variate: bool | str = "auto",
    ) -> None:
        self.hidden_size = hidden_size
        self.activation = activation
        self.process = process
        self.decomposer = decomposer
        self.device = device
        self.dtype = dtype
        self.chunk_steps = chunk_steps
        self.random_state = random_state
        self.progress = progress
        self.outlier_factor = outlier_factor
        self.scores = scores
        self.first_step = first_step
        self.min_gap = min_gap
        self.max_peak_share = max_peak_share
        self.tail_check = tail_check
        self.robust = robust
        self.robust_blocks = robust_blocks
        self.n_threads = n_threads
        self.control_variate = control_variate

    # the recipe both estimators follow; subclasses fill in _fit_components: (model, fitted attributes,
    # each chain's largest drive |(A1 x_t)_j| from the instrument pass, None where it is not known)
    _two_sided = False
    _chains = 1
    _project_lags: tuple[int, ...] = ()

    @atomic_fit
    def fit(self, X: object, Y: object = None, lengths: object = None):
        """Fit from inputs ``X`` (n_sequences, T, d_x) and outputs ``Y`` (n_sequences, T, d_y).

        ``lengths`` (n_sequences,) marks ragged sequences; steps past it are ignored.
        ``X`` and ``Y`` may be numpy arrays (memory maps included: a float32 source is converted
        one chunk at a time), Zarr arrays, or Dask arrays (each pass then runs as one Dask task per
        block of sequences on the active scheduler); or ``fit(chunks)`` with a re-iterable source of
        ``(X_c, Y_c, lengths_c)`` chunks of whole sequences (:mod:`spectral_rnn.sources`). Only a
        chunk of the data and the sums are held in memory. Returns ``self``.
        """
        if Y is None:
            if not is_chunk_source(X):
                raise InputError("fit needs outputs Y, unless X is a source of (X, Y, lengths) chunks")
            if lengths is not None:
                raise InputError("with a source of chunks, the lengths come with each chunk")
            X, Y, lengths = open_chunks(X)
        with limit_threads(resolve_threads(self.n_threads)), trimming(read_by_slices(X)), inputs_checked_once():
            if uses_odd_route(self.activation):  # tanh, odd polynomials: the third-order route
                return self._fit_odd(X, Y, lengths)
            return self._fit_polynomial(X, Y, lengths)

    def _fit_polynomial(self, X: object, Y: object, lengths: object):
        """The polynomial route of :meth:`fit` (degrees 2 and 3)."""
        t_start = time.perf_counter()
        f = as_polynomial(self.activation)
        check_activation(f)
        hidden_size, chunk_steps, dtype, outlier_factor, min_gap = self._common_params()
        check_decomposer(self.decomposer)
        max_peak_share = check_real(self.max_peak_share, "max_peak_share", low=0.0, high=1.0, low_open=True)
        if self.robust not in ("auto", "on", "off"):
            raise InputError(f"robust must be 'auto', 'on' or 'off', got {self.robust!r}")
        robust = self.robust
        robust_blocks = check_positive_int(self.robust_blocks, "robust_blocks")
        if robust_blocks < 3:
            raise InputError(f"robust_blocks must be at least 3, got {robust_blocks}")
        X, Y, lengths = check_xy(X, Y, lengths, keep_device=True)  # a GPU tensor is read where it lies
        X_all, lengths_all = X, lengths
        X, Y, lengths, n_dropped = drop_extreme_sequences(X, Y, lengths, outlier_factor)
        n_steps = int(X.shape[0] * X.shape[1] if lengths is None else lengths.sum())
        n_components = self._chains * hidden_size
        self._check_sizes(X.shape[2], Y.shape[2], n_steps, n_components)
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        proc = self._fit_process(X, lengths, f.degree)
        timings["process"] = time.perf_counter() - t0

        decomposer = self.decomposer if self.decomposer is not None else CPDecomposer()
        sketched = n_components + decomposer.oversample < X.shape[2]
        n_passes = self._n_passes + sketched * (1 + REFINE_DIRECTIONS)  # the sketch, and refine_directions
        bar = _Progress(self.progress, n_passes * n_steps, "spectral fit")
        # the linear part of y, subtracted in the tensor passes (spectral_rnn.control)
        control = control_for(self.control_variate, proc, X, Y, lengths, dtype, device, timings)

        def make_stream(blocks: int | None, dual: bool = False) -> StepStream:
            st = StepStream(X, Y, lengths, proc, two_sided=self._two_sided, device=device, dtype=dtype,
                            chunk_steps=chunk_steps, progress=bar, blocks=blocks, dual=dual)
            st.control = control
            return st

        robust_used = robust == "on"
        # robust="auto" without a sketch: the project pass keeps the median of means beside the plain
        # means, so a fall-back to median of means needs no second pass (the sketch draws random
        # directions, so a sketched fit redraws them and repeats both passes instead)
        dual = robust == "auto" and not sketched and not is_dask(X)
        try:
            stream = make_stream(robust_blocks if (robust_used or dual) else None, dual=dual)
            t0 = time.perf_counter()
            try:
                try:
                    dec = self._decompose(stream, decomposer, n_components, sketched, rng, min_gap,
                                          None if robust_used else max_peak_share, self._project_lags)
                except HeavyTailError:
                    if robust != "auto":
                        raise
                    # a few extreme steps dominate the means: median of means over blocks instead
                    robust_used = True
                    if dual:
                        stream.use_blocks()
                        dec = decomposer.decompose_projected(stream.projected_, np.eye(X.shape[2]), n_components,
                                                             random_state=rng, min_gap=min_gap)
                    else:
                        stream = make_stream(robust_blocks)
                        dec = self._decompose(stream, decomposer, n_components, sketched, rng, min_gap, None,
                                              self._project_lags)
            except IllConditionedError as exc:
                raise IllConditionedError(str(exc) + _score_hint(proc)) from None
            timings["decomposition"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            model, fitted, drive = self._fit_components(stream, dec, f)
            timings["recurrence"] = time.perf_counter() - t0
        finally:
            bar.close()
        t0 = time.perf_counter()
        # a polynomial recursion must not diverge on the inputs it was fitted on (all of them,
        # including sequences outlier_factor left out): shrink U (V) if it does, and say so; the
        # instrument pass's largest drives stand for a read of X when it saw all of them
        model, stability = stabilize(model, X_all, lengths_all, device=device,
                                     drive_max=drive if n_dropped == 0 and None not in drive else None)
        timings["stability"] = time.perf_counter() - t0
        # fitted state is assigned only here, once the whole fit has succeeded
        self._set_fitted(model, stability, proc, X.shape[2], n_steps, n_dropped,
                         {**fitted, "gap_": dec.gap, "als_sweeps_": dec.als_sweeps, "als_change_": dec.als_change,
                          "robust_": robust_used})
        timings["total"] = time.perf_counter() - t_start
        self.timings_ = timings
        return self

    def _common_params(self) -> tuple[int, int, torch.dtype, float | None, float]:
        """The hyper-parameters both routes use, validated: ``(hidden_size, chunk_steps, dtype,
        outlier_factor, min_gap)``; also checks ``process``."""
        check_process(self.process)
        return (check_positive_int(self.hidden_size, "hidden_size"), check_positive_int(self.chunk_steps, "chunk_steps"),
                check_dtype(self.dtype), check_outlier_factor(self.outlier_factor),
                check_real(self.min_gap, "min_gap", low=1.0))

    def _set_fitted(self, model, stability, proc, n_features: int, n_steps: int, n_dropped: int,
                    extra: dict) -> None:
        """Assign the fitted attributes of a successful fit (both routes)."""
        for key, value in extra.items():
            setattr(self, key, value)
        self.model_ = model
        self.stability_ = stability
        self.process_ = proc
        self.scores_ = getattr(proc, "law_name_", type(proc).__name__)
        self.scores_reason_ = getattr(proc, "law_reason_", "the process given by the user")
        for name in model._names:
            setattr(self, name + "_", getattr(model, name))
        self.n_steps_ = n_steps
        self.n_dropped_ = n_dropped
        self.n_features_in_ = n_features

    def _check_sizes(self, d_x: int, d_y: int, n_steps: int, n_components: int) -> None:
        k = self.hidden_size
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"hidden_size must be a positive integer, got {k!r}")
        if n_components > d_x or n_components > d_y:
            raise InputError(
                f"hidden size {k} is too large for these data: the moment tensor identifies at most "
                f"min(d_x, d_y) = {min(d_x, d_y)} components, and this model needs {n_components}"
            )
        need = 20 * (d_x + d_y + n_components)
        if n_steps < need:
            raise InputError(f"too few time steps: {n_steps} valid steps, the spectral estimate needs at least {need} here")

    def _fit_process(self, X: np.ndarray, lengths: np.ndarray | None, degree: int,
                     third_order: bool = False) -> MarkovProcess:
        """The input process: the user's (fitted on a copy unless already fitted), or an
        :class:`AR1Process` with this estimator's ``scores``, ``first_step`` and ``tail_check``,
        whose scores serve a polynomial of ``degree`` (and third-order moments if ``third_order``)."""
        proc = self.process
        if proc is None:
            proc = AR1Process(innovations=self.scores, first_step=self.first_step, two_sided=self._two_sided,
                              degree=degree, tail_check=self.tail_check, third_order=third_order)
        elif not isinstance(proc, MarkovProcess):
            raise InputError(f"process must be an input process such as AR1Process, got {type(proc).__name__}")
        if not proc.is_fitted:
            proc = copy.deepcopy(proc).fit(X, lengths)
        if proc.dim != X.shape[2]:
            raise InputError(f"the input process has dimension {proc.dim}, the inputs {X.shape[2]}")
        return proc

    @staticmethod
    def _decompose(stream: StepStream, decomposer: CPDecomposer, n_components: int, sketched: bool,
                   rng: np.random.Generator, min_gap: float, max_peak_share: float,
                   lags: tuple[int, ...] = ()):
        """Input span (a sketch pass, or the identity when d_x is small), projected tensor pass (which
        also accumulates the lag cross-moments ``lags`` the BRNN needs), decomposition."""
        d_x, d_y = stream.X.shape[2], stream.Y.shape[2]
        if sketched:
            k = n_components + decomposer.oversample
            M = stream.sketch(rng.standard_normal((d_y, min(d_y, k))), rng.standard_normal((d_x, k)))
            Q = np.linalg.svd(M, full_matrices=False)[0][:, :k]
        else:
            Q = np.eye(d_x)
        Tp = stream.project(Q, lags=lags)
        check_peak_share(stream, max_peak_share)
        dec = decomposer.decompose_projected(Tp, Q, n_components, random_state=rng, min_gap=min_gap)
        return refine_directions(stream, dec, Q) if sketched and REFINE_DIRECTIONS else dec

    def predict(self, X: object, lengths: object = None) -> np.ndarray:
        """Conditional mean of the outputs, ``(n_sequences, T, d_y)``."""
        self._check_fitted()
        return self.model_.predict(X, lengths, device=self.device)

    def score(self, X: object, Y: object, lengths: object = None) -> float:
        """``1 -`` (mean squared prediction error / output variance) on valid steps."""
        self._check_fitted()
        return 1.0 - prediction_error(Y, self.predict(X, lengths), lengths)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, Y) first")


class SpectralIORNN(_SpectralBase):
    """Learn an IO-RNN ``h_t = f(A1 x_t + U h_{t-1})``, ``y_t = A2^T h_t + noise`` by the method of moments.

    Parameters
    ----------
    hidden_size: number of hidden units ``d_h`` (at most ``min(d_x, d_y)``).
    activation: the known polynomial ``f`` (``Polynomial``, coefficients or ``"c0,c1,c2"``),
        degree 2 with ``c1 != 0``, or degree 3 with ``c2 != 0`` (see :func:`check_activation`);
        or an odd activation, ``"tanh"`` or an odd polynomial with ``c1, c3 != 0``, fitted by the
        third-order route (:mod:`spectral_rnn.odd_route`: first- and third-order score moments,
        then the scales and ``U`` by L-BFGS; it also sets ``scale_start_``, ``nls_iterations_``,
        ``nls_loss_`` and ``linear_units_`` (units found in ``f``'s linear range, rescaled to
        :data:`~spectral_rnn.odd_route.SCALE_FLOOR`), and ``mu_`` is then the estimate of
        ``E[f^(3)(z_j)]``).
    process: input process; ``None`` fits an :class:`AR1Process` to the inputs with the
        ``scores``, ``first_step`` and ``tail_check`` below. An unfitted process is fitted
        (on a copy); a fitted one is used as given (a known input law).
    scores: the law of the input innovations, hence the score function: ``"auto"`` (default:
        test the fitted innovations; Gaussian closed form when they look Gaussian, else the
        density-free score for the IO-RNN and a smooth score fitted by score matching for the BRNN;
        see :func:`~spectral_rnn.processes.choose_law`), ``"gaussian"``, ``"moment"``
        (density-free, one-sided only), ``"student-t"``, ``"score-matching"``, or a
        :class:`~spectral_rnn.scores.MarginalLaw`. ``scores_`` and ``scores_reason_`` say
        what was used and why.
    first_step: law of each sequence's first input, ``"auto"``, ``"own"`` or ``"stationary"``
        (see :class:`~spectral_rnn.processes.AR1Process`).
    min_gap: refusal threshold: the smallest singular-value gap ``sigma_r / sigma_{r+1}`` of the
        moment tensor accepted as ``r`` separated components (default 1.5).
    max_peak_share: refusal threshold: the largest share of the moment tensor one time step
        may carry (default 0.002, and never below 200 / N).
    tail_check: refuse inputs whose innovations have infinite fourth moments (tail index
        below 3.5, :func:`~spectral_rnn.processes.tail_index`).
    robust: how the moment passes average over time steps. ``"auto"`` (default): plain means,
        and, when one time step carries more than ``max_peak_share`` of the moment tensor (a
        sequence close to diverging, say), median of means instead of a refusal; ``"on"``:
        always median of means; ``"off"``: plain means, refusing such data. Median of means:
        the elementwise median of the means over ``robust_blocks`` (default 16) blocks of
        consecutive steps (by sequence). ``robust_`` says whether it was used.
    decomposer: tensor decomposer (default :class:`CPDecomposer`).
    device: "cpu" or "cuda". dtype: torch dtype of the moment passes.
    chunk_steps: time steps per chunk of a pass (bounds memory).
    random_state: seed of every random choice (sketches, Jennrich draws).
    progress: show a progress bar on fits that take more than a second.
    outlier_factor: ``None`` (default) uses every sequence; a number (e.g. 100) leaves out
        the sequences whose largest |output| exceeds that many times the median over
        sequences (see :func:`drop_extreme_sequences`); ``n_dropped_`` counts them.
    n_threads: threads of torch's intra-op pool during ``fit``, where the large products run (the
        BLAS pool of numpy and scipy gets one: :func:`~spectral_rnn.threads.limit_threads`; both
        are restored afterwards); ``None`` (default): the CPUs not kept busy by other jobs (see
        :func:`~spectral_rnn.threads.resolve_threads`), so a fit on a shared machine does not stall.
    control_variate: subtract from the outputs, in the tensor passes only (``S_2``; ``S_3`` on the
        route for odd activations), their least-squares fit on ``[1, x_{t-1}, x_t, x_{t+1}]`` (from
        about 2e5 steps; :mod:`spectral_rnn.control`): a part whose moment against the scores is
        zero, so the tensor is unchanged in expectation and less noisy. ``"auto"``
        (default): on when the input law is not Gaussian (where the scores are large: a
        bimodal-mixture law has Fisher information about 5 per coordinate), off for the Gaussian
        closed form, whose fits stay as they were; ``True``, ``False``.

    Fitted attributes: ``model_`` (:class:`IORNN`), ``A1_``, ``U_``, ``A2_``,
    ``n_dropped_``, ``process_``, ``scores_``, ``scores_reason_``, ``mu_`` (E[f''(z_j)] per unit),
    ``gap_`` (singular-value gap of the moment tensor at rank d_h), ``als_sweeps_`` and
    ``als_change_`` (how the decomposition's sweeps ended: a change above ``CPDecomposer.als_tol``
    means the cap ``n_als`` stopped them; on the route for odd activations, the power sweeps of
    :func:`~spectral_rnn.odd_route.decompose_symmetric4`), ``n_steps_``, ``timings_``
    (seconds per stage), ``stability_`` (:class:`~spectral_rnn.stability.StabilityReport`: whether
    ``U`` had to be shrunk so the recursion stays bounded on the training inputs), ``n_features_in_``.
    """

    _n_passes = 2

    def _fit_odd(self, X, Y, lengths):
        return fit_iornn_odd(self, X, Y, lengths)

    def _fit_components(self, stream: StepStream, dec, f: Polynomial) -> tuple[IORNN, dict, list]:
        Wpinv = output_pinv(dec.W)
        (mom,) = instrument_moments(stream, [(dec.A, Wpinv, f.degree - 1, "past")])
        est = solve_scales_and_recurrence(mom, dec.A, dec.W, f)
        return IORNN(est.A1, est.U, est.A2, f), {"mu_": est.mu}, [est.drive_max]



class SpectralBRNN(_SpectralBase):
    """Learn a bidirectional RNN (docs/method.md, section 'Models and conventions') by the method of moments.

    ``h_t = f(A1 x_t + U h_{t-1})``, ``z_t = f(B1 x_t + V z_{t+1})``,
    ``y_t = A2^T h_t + B2^T z_t + noise``. Same parameters as :class:`SpectralIORNN`;
    ``hidden_size`` is the number of units per direction (``2 hidden_size <= d_x, d_y``).

    The moment tensor with the two-sided score of each input (the score of ``x_t``
    given all other inputs) has ``2 hidden_size`` components. Forward units are told
    from backward ones by the mean derivative of their output in ``x_{t-1}`` versus
    ``x_{t+1}`` (:meth:`StepStream.lag_score_moments`); U then comes from past-only
    instruments and V from future-only ones.

    Fitted attributes: ``model_`` (:class:`BRNN`), ``A1_, U_, A2_, B1_, V_, B2_``,
    ``process_``, ``mu_`` (forward then backward units), ``gap_``, ``als_sweeps_``, ``als_change_``, ``separation_``
    (per component, the share of its lag derivative that looks to the past: near 1
    for forward units, near 0 for backward ones), ``n_steps_``, ``timings_``.
    """

    _two_sided = True
    _chains = 2
    _n_passes = 2
    _project_lags = (1, -1)

    def _fit_odd(self, X, Y, lengths):
        return fit_brnn_odd(self, X, Y, lengths)

    def _fit_components(self, stream: StepStream, dec, f: Polynomial) -> tuple[BRNN, dict, list]:
        d_h = self.hidden_size
        Wpinv = output_pinv(dec.W)
        lag = stream.lag_score_moments(Wpinv, lags=(1, -1))
        past = np.sum(lag[1] ** 2, axis=1)
        future = np.sum(lag[-1] ** 2, axis=1)
        share = past / (past + future + 1e-300)
        order = np.argsort(-share)
        fwd, bwd = np.sort(order[:d_h]), np.sort(order[d_h:])
        if share[fwd].min() <= 0.5 or share[bwd].max() >= 0.5:
            raise IllConditionedError(
                f"could not split the {2 * d_h} components into {d_h} forward and {d_h} backward units "
                f"(past shares {np.array2string(np.sort(share)[::-1], precision=2)}): the data may come from a "
                "unidirectional RNN, or the recurrences are too weak to tell the directions apart"
            )
        mom_f, mom_b = instrument_moments(stream, [
            (dec.A[fwd], Wpinv[:, fwd], f.degree - 1, "past"), (dec.A[bwd], Wpinv[:, bwd], f.degree - 1, "future")])
        fw = solve_scales_and_recurrence(mom_f, dec.A[fwd], dec.W[fwd], f)
        bw = solve_scales_and_recurrence(mom_b, dec.A[bwd], dec.W[bwd], f)
        return (BRNN(fw.A1, fw.U, fw.A2, bw.A1, bw.U, bw.A2, f),
                {"mu_": np.concatenate([fw.mu, bw.mu]), "separation_": share}, [fw.drive_max, bw.drive_max])
