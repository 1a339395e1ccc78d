"""Training by backpropagation through time: refinement of a spectral estimate, and the baseline.

* :func:`refine` continues training a fitted :class:`IORNN` / :class:`BRNN` (typically
  the spectral estimate) by BPTT.
* :func:`train_bptt` trains the same architecture from PyTorch's standard random
  initialisation (the baseline the spectral method is compared with).

Both train the module of :func:`~spectral_rnn.torch_export.to_torch`: PyTorch's own
``torch.nn.RNN`` (+ ``nn.Linear`` read-out, :class:`~spectral_rnn.torch_export.TorchRNN`)
for tanh models, :class:`~spectral_rnn.torch_export.PolynomialRNN` for polynomial ones.

:func:`refine` first makes sure its start does not diverge on the training inputs
(:func:`spectral_rnn.stability.stabilize`: a polynomial model whose recursion blows up
there gets ``U`` shrunk; ``history.stabilization`` says what was done), and warns
(:class:`RuntimeWarning`) when training diverges before improving on the start.

Both run the same loop (:func:`fit_module`): Adam on minibatches of sequences,
gradient-norm clipping, a bounded recovery from divergent minibatches, the learning
rate halved when the validation loss stalls,
a validation split with early stopping that keeps the best validation weights, an
optional wall-time budget, and a per-epoch :class:`History`. Losses are relative
mean squared errors: the squared error per valid step divided by the total
variance of the training outputs, so 1 is "predicts the mean" and the numbers
compare with :func:`spectral_rnn.metrics.prediction_error`.

A divergent minibatch (a non-finite loss or gradient, which polynomial recursions
produce when weights grow) sends training back to the best weights at half the
learning rate; after ``max_restarts`` recoveries the run stops cleanly: the best
weights so far are kept and ``history.diverged`` is set.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    InputError,
    check_dtype,
    check_nonnegative_int,
    check_positive_int,
    check_random_state,
    check_real,
    check_xy,
    resolve_device,
)
from .activations import ActivationLike
from .kinds import from_torch, kind_of, resolve_kind
from .stability import StabilityReport, stabilize
from .torch_export import PolynomialRNN, TorchRNN

__all__ = ["History", "refine", "train_bptt", "fit_module", "relative_mse"]


@dataclass
class History:
    """What happened during training, one row per epoch (epoch 0 is the starting point).

    ``epoch``, ``train_loss`` (mean over the epoch's minibatches; NaN at epoch 0),
    ``val_loss`` (relative MSE on the validation split, or the training loss when
    there is none), ``time`` (seconds of training since the start, evaluation included),
    ``lr``. ``best_epoch`` / ``best_val_loss``: the weights returned. ``diverged``: the
    run met a non-finite loss or gradient. ``stop_reason``: "max_epochs",
    "early_stopping", "time_budget" or "diverged". ``divergences``: how many minibatches gave a
    non-finite loss or gradient (each sends training back to the best weights with half
    the learning rate; one more than ``max_restarts`` stops the run). ``stabilization``
    (:func:`refine` only): the :class:`~spectral_rnn.stability.StabilityReport` of the
    start model on the training inputs; ``stabilized``: its ``U`` (``V``) had to be shrunk
    because the start diverged there, and training started from the shrunk model;
    ``stabilization_seconds``: the time that check took (before ``time[0]``; it counts
    against ``time_budget``).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    diverged: bool = False
    divergences: int = 0
    stop_reason: str = ""
    stabilization: StabilityReport | None = None
    stabilization_seconds: float = 0.0

    @property
    def stabilized(self) -> bool:
        return self.stabilization is not None and self.stabilization.changed

    def __len__(self) -> int:
        return len(self.epoch)

    def records(self) -> list[dict]:
        """The history as a list of dicts (one per epoch)."""
        return [
            {"epoch": e, "train_loss": a, "val_loss": b, "time": t, "lr": r}
            for e, a, b, t, r in zip(self.epoch, self.train_loss, self.val_loss, self.time, self.lr)
        ]


# ----------------------------------------------------------------------------- data


class _Data:
    """Sequences on the device, with zeroed padding and full lengths."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, lengths: np.ndarray | None, idx: np.ndarray,
                 device: torch.device, dtype: torch.dtype) -> None:
        n, T = X.shape[:2]
        L = np.full(n, T, dtype=np.int64) if lengths is None else lengths
        L = L[idx]
        self.X = torch.as_tensor(X[idx], dtype=dtype, device=device)
        self.Y = torch.as_tensor(Y[idx], dtype=dtype, device=device)
        self.L = torch.as_tensor(L, device=device)
        self.L_np = L
        self.ragged = bool((L < T).any())
        self.n = len(idx)
        if self.ragged:
            m = (torch.arange(T, device=device)[None, :] < self.L[:, None]).unsqueeze(-1)
            self.X = torch.where(m, self.X, torch.zeros((), dtype=dtype, device=device))
            self.Y = torch.where(m, self.Y, torch.zeros((), dtype=dtype, device=device))

    def batch(self, rows: np.ndarray | slice):
        L = self.L_np[rows]
        Tb = int(L.max())
        rows_t = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.X.device)
        x, y, lt = self.X[rows_t, :Tb], self.Y[rows_t, :Tb], self.L[rows_t]
        return x, y, (lt if bool((L < Tb).any()) else None), int(L.sum())

    def variance(self) -> float:
        """Total variance of the outputs over valid steps (sum over output dimensions)."""
        if self.ragged:
            m = torch.arange(self.Y.shape[1], device=self.Y.device)[None, :] < self.L[:, None]
            Yv = self.Y[m]
        else:
            Yv = self.Y.reshape(-1, self.Y.shape[2])
        return float(Yv.to(torch.float64).var(dim=0, unbiased=False).sum())


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    val_fraction = check_real(val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0:
        n_val = max(1, n_val)
        if n - n_val < 1:
            raise InputError(f"too few sequences ({n}) for a validation split: need at least 2")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def relative_mse(module: torch.nn.Module, data: _Data, variance: float, chunk_steps: int = 1 << 16) -> float:
    """Squared error per valid step over ``variance``, without gradients."""
    T = data.X.shape[1]
    per = max(1, chunk_steps // T)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, data.n, per):
            x, y, lt, nv = data.batch(slice(i, min(data.n, i + per)))
            err = module(x, lt) - y  # zero on padding on both sides
            total += float((err.to(torch.float64) ** 2).sum())
            count += nv
    return total / max(count, 1) / variance


# ----------------------------------------------------------------------------- the loop


def fit_module(
    module: PolynomialRNN,
    train: _Data,
    val: _Data | None,
    variance: float,
    max_epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 128,
    patience: int = 10,
    clip: float = 1.0,
    lr_patience: int | None = None,
    max_restarts: int = 3,
    rng: np.random.Generator | None = None,
    time_budget: float | None = None,
    progress: bool = False,
    monitor: Callable[[PolynomialRNN, float], None] | None = None,
    monitor_every: float | None = None,
    desc: str = "bptt",
) -> History:
    """Train ``module`` in place (ends holding the best validation weights); return the history.

    A minibatch with a non-finite loss or gradient sends the weights back to the best
    ones so far, with a fresh optimiser at half the learning rate; after
    ``max_restarts`` such recoveries the next one stops the run (``diverged``).

    ``monitor(module, elapsed)``, when given, is called at the start, after every
    epoch and every ``monitor_every`` seconds of training; the time it takes is not
    counted in ``elapsed`` nor in the history's times, nor against ``time_budget``.
    """
    max_epochs = check_positive_int(max_epochs, "max_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    patience = check_positive_int(patience, "patience")
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    clip = check_real(clip, "clip", low=0.0, low_open=True, finite=False)
    max_restarts = check_nonnegative_int(max_restarts, "max_restarts")
    if lr_patience is not None:
        lr_patience = check_positive_int(lr_patience, "lr_patience")
    if time_budget is not None:
        time_budget = check_real(time_budget, "time_budget", low=0.0, low_open=True, finite=False)
    if monitor_every is not None:
        monitor_every = check_real(monitor_every, "monitor_every", low=0.0)
    rng = check_random_state(rng)
    lr_patience = max(1, patience // 3) if lr_patience is None else lr_patience
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    hist = History()

    excluded = 0.0  # seconds spent in monitor calls
    t_start = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - t_start - excluded

    def call_monitor() -> None:
        nonlocal excluded
        if monitor is not None:
            t0 = time.perf_counter()
            monitor(module, elapsed())
            excluded += time.perf_counter() - t0

    def evaluate() -> float:
        return relative_mse(module, val if val is not None and val.n > 0 else train, variance)

    call_monitor()
    best_state = copy.deepcopy(module.state_dict())
    v0 = evaluate()
    best = v0 if math.isfinite(v0) else math.inf
    hist.epoch.append(0), hist.train_loss.append(math.nan), hist.val_loss.append(v0)
    hist.time.append(elapsed()), hist.lr.append(lr)
    hist.best_val_loss, hist.best_epoch = best, 0
    stale = stale_lr = 0
    last_monitor = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc=desc, unit="epoch", leave=False)
    stop = ""
    try:
        if not math.isfinite(v0):
            stop = "diverged"
        for epoch in range(1, max_epochs + 1):
            if stop:
                break
            module.train()
            perm = rng.permutation(train.n)
            tot, nb = 0.0, 0
            for i in range(0, train.n, batch_size):
                x, y, lt, nv = train.batch(np.sort(perm[i : i + batch_size]))
                opt.zero_grad(set_to_none=True)
                err = module(x, lt) - y
                loss = (err * err).sum() / (nv * variance)
                lv = float(loss.detach())
                ok = math.isfinite(lv)
                if ok:
                    loss.backward()
                    gn = torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
                    ok = bool(torch.isfinite(gn))
                if not ok:  # divergence: back to the best weights with half the step, or give up
                    hist.divergences += 1
                    if hist.divergences > max_restarts:
                        stop = "diverged"
                        break
                    module.load_state_dict(best_state)
                    lr_now = opt.param_groups[0]["lr"] * 0.5
                    opt = torch.optim.Adam(module.parameters(), lr=lr_now)
                    continue
                opt.step()
                tot += lv
                nb += 1
                now = elapsed()
                if time_budget is not None and now >= time_budget:
                    stop = "time_budget"
                    break
                if monitor is not None and monitor_every is not None and now - last_monitor >= monitor_every:
                    call_monitor()
                    last_monitor = elapsed()
            module.eval()
            if stop == "diverged":
                hist.diverged = True
                break
            v = evaluate()
            hist.epoch.append(epoch), hist.train_loss.append(tot / max(nb, 1)), hist.val_loss.append(v)
            hist.time.append(elapsed()), hist.lr.append(opt.param_groups[0]["lr"])
            if not math.isfinite(v):
                hist.diverged = True
                stop = "diverged"
                break
            if v < best:
                best, stale, stale_lr = v, 0, 0
                best_state = copy.deepcopy(module.state_dict())
                hist.best_epoch, hist.best_val_loss = epoch, v
            else:
                stale += 1
                stale_lr += 1
                if stale_lr >= lr_patience:
                    for g in opt.param_groups:
                        g["lr"] *= 0.5
                    stale_lr = 0
            call_monitor()
            last_monitor = elapsed()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{hist.train_loss[-1]:.3g}", val=f"{v:.3g}")
            if stop:
                break
            if stale >= patience:
                stop = "early_stopping"
                break
            if time_budget is not None and elapsed() >= time_budget:
                stop = "time_budget"
                break
        else:
            stop = "max_epochs"
    finally:
        if bar is not None:
            bar.close()
    hist.stop_reason = stop or "max_epochs"
    if stop == "diverged":
        hist.diverged = True
    module.load_state_dict(best_state)
    module.eval()
    return hist


# ----------------------------------------------------------------------------- public API


def _prepare(X, Y, lengths, val_fraction, random_state, device, dtype, d_x=None, d_y=None):
    dtype = check_dtype(dtype)
    X, Y, lengths = check_xy(X, Y, lengths, d_x, d_y)
    rng = check_random_state(random_state)
    dev = resolve_device(device)
    tr, va = _split(X.shape[0], val_fraction, rng)
    train = _Data(X, Y, lengths, tr, dev, dtype)
    val = _Data(X, Y, lengths, va, dev, dtype) if len(va) else None
    var = train.variance()
    if not var > 0:
        raise InputError("the training outputs have zero variance")
    return train, val, var, rng, dev


def refine(
    model,
    X: object,
    Y: object,
    lengths: object = None,
    max_epochs: int = 100,
    lr: float = 3e-4,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    patience: int = 10,
    clip: float = 1.0,
    max_restarts: int = 3,
    random_state: int | np.random.Generator | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    time_budget: float | None = None,
    monitor: Callable[[PolynomialRNN, float], None] | None = None,
    monitor_every: float | None = None,
    stabilize_start: bool = True,
):
    """Refine a fitted model by backpropagation through time.

    Parameters
    ----------
    model: an :class:`IORNN` or :class:`BRNN` (e.g. ``SpectralIORNN(...).fit(X, Y).model_``).
    X, Y, lengths: training data, ``(n_sequences, T, d_x)``, ``(n_sequences, T, d_y)``, ``(n_sequences,)``.
    max_epochs, lr, batch_size (sequences), clip (max gradient norm): Adam BPTT settings.
        The defaults suit fine-tuning from a good start (small steps, large batches:
        on the planted model of docs/method.md ('Planted models') they reach a lower error sooner than
        lr=1e-3 with 256-sequence batches).
    val_fraction: share of the sequences held out for validation and early stopping
        (0: select on the training loss).
    patience: epochs without validation improvement before stopping (the learning
        rate is halved after ``patience // 3`` such epochs).
    max_restarts: recoveries from a divergent minibatch (back to the best weights, half
        the learning rate) before the run stops as diverged.
    random_state: seed of the split and the minibatch order.
    device, dtype: where and in what precision to train.
    progress: show a progress bar over epochs.
    time_budget: stop after this many seconds of training.
    monitor, monitor_every: see :func:`fit_module`.
    stabilize_start: first run :func:`spectral_rnn.stability.stabilize` on the start model
        and all of ``X`` (training and validation sequences): a polynomial start whose
        recursion diverges there gets ``U`` (``V``) shrunk, and training starts from that;
        ``history.stabilization`` holds the report (``history.stabilized``: it was shrunk).

    Returns
    -------
    ``(refined_model, history)``: a model of the same kind holding the best
    validation weights (never worse on validation than the (stabilised) start model),
    and a :class:`History`. Tanh models are trained as ``torch.nn.RNN``.

    Raises
    ------
    DivergenceError: the start cannot be stabilised (its input weights alone blow up on
        ``X``), or, with ``stabilize_start=False``, the start diverges on the data.

    Warns
    -----
    RuntimeWarning: training diverged before any epoch improved on the start; the
        (stabilised) start is returned.
    """
    kind_of(model, "refine")
    train, val, var, rng, dev = _prepare(X, Y, lengths, val_fraction, random_state, device, dtype, model.d_x, model.d_y)
    report, t_stab = None, 0.0
    if stabilize_start:
        t0 = time.perf_counter()
        model, report = stabilize(model, X, lengths, device=dev)
        t_stab = time.perf_counter() - t0
        if time_budget is not None:
            time_budget = max(time_budget - t_stab, 1e-3)
    module = model.to_torch(dtype=check_dtype(dtype), device=dev)
    hist = fit_module(module, train, val, var, max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                      patience=patience, clip=clip, max_restarts=max_restarts, rng=rng,
                      time_budget=time_budget, progress=progress,
                      monitor=monitor, monitor_every=monitor_every, desc="refine")
    hist.stabilization, hist.stabilization_seconds = report, t_stab
    if hist.best_epoch == 0:
        if not math.isfinite(hist.val_loss[0]):
            how = "in " + str(dtype).replace("torch.", "") if stabilize_start else "with stabilize_start=False"
            raise DivergenceError(
                f"refinement cannot start: the start model diverges on these data ({how}); "
                "use stabilize_start=True, or dtype=torch.float64"
            )
        if hist.diverged:
            warnings.warn(
                f"refinement diverged before improving on the start model (validation relative MSE "
                f"{hist.val_loss[0]:.3g}); the start model is returned unchanged: try a smaller lr",
                RuntimeWarning, stacklevel=2,
            )
        return copy.deepcopy(model), hist  # nothing beat the start: return it exactly
    return from_torch(module), hist


def random_module(
    d_x: int,
    hidden_size: int,
    d_y: int,
    activation: ActivationLike,
    bidirectional: bool = False,
    init_scale: float = 1.0,
    random_state: int | np.random.Generator | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    kind: str | None = None,
) -> PolynomialRNN | TorchRNN:
    """A module of model kind ``kind`` (default ``"brnn"`` if ``bidirectional`` else ``"iornn"``)
    with PyTorch's standard RNN initialisation times ``init_scale``: a :class:`TorchRNN`
    (``torch.nn.RNN`` + ``nn.Linear``) for tanh, else a :class:`PolynomialRNN`."""
    init_scale = check_real(init_scale, "init_scale", low=0.0, low_open=True)
    spec = resolve_kind(kind, bidirectional)
    rng = check_random_state(random_state)
    gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
    mod = spec.new_module(d_x, hidden_size, d_y, activation, check_dtype(dtype))
    mod.reset_parameters(init_scale, generator=gen)
    return mod.to(resolve_device(device))


def train_bptt(
    X: object,
    Y: object,
    lengths: object = None,
    hidden_size: int = 4,
    activation: ActivationLike = (0.0, 1.0, 0.5),
    bidirectional: bool = False,
    init_scale: float = 1.0,
    max_epochs: int = 100,
    lr: float = 3e-3,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    patience: int = 10,
    clip: float = 1.0,
    max_restarts: int = 3,
    random_state: int | np.random.Generator | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    time_budget: float | None = None,
    monitor: Callable[[PolynomialRNN, float], None] | None = None,
    monitor_every: float | None = None,
    kind: str | None = None,
):
    """The baseline: the same architecture trained by BPTT from random initialisation.

    Weights start as :class:`torch.nn.RNN` / :class:`torch.nn.Linear` start them,
    ``U(-1/sqrt(fan), 1/sqrt(fan))``, multiplied by ``init_scale``; ``hidden_size`` is
    per direction when ``bidirectional``. The loop and the other parameters are those
    of :func:`refine`. With ``activation="tanh"`` the module is PyTorch's own
    ``torch.nn.RNN(nonlinearity="tanh", bias=False)`` plus a bias-free ``nn.Linear`` read-out
    (:class:`TorchRNN`), and ``init_scale=1`` is exactly its default initialisation.
    Returns ``(model, history)``.
    """
    hidden_size = check_positive_int(hidden_size, "hidden_size")
    rng = check_random_state(random_state)
    train, val, var, rng, dev = _prepare(X, Y, lengths, val_fraction, rng, device, dtype)
    module = random_module(train.X.shape[2], hidden_size, train.Y.shape[2], activation, bidirectional,
                           init_scale, rng, dev, dtype, kind)
    hist = fit_module(module, train, val, var, max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                      patience=patience, clip=clip, max_restarts=max_restarts, rng=rng,
                      time_budget=time_budget, progress=progress,
                      monitor=monitor, monitor_every=monitor_every, desc="bptt")
    return from_torch(module), hist
