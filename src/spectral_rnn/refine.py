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

Both take one settings object, :class:`TrainConfig` (each setting also by keyword), and
run the same loop (:func:`fit_module`): Adam on minibatches of sequences with gradient-norm
clipping, or (``optimizer="lbfgs"``, and what :func:`refine`'s ``"auto"`` picks on up to
:data:`LBFGS_MAX_STEPS` training steps) full-batch L-BFGS, and four small policies, each usable
and tested on its own:
:class:`EarlyStopping` (a validation split; the best validation weights are kept and
returned), :class:`LrPlateau` (the learning rate halved when the validation loss stalls),
:class:`DivergenceRecovery` (a bounded recovery from divergent minibatches) and
:class:`TrainingClock` (wall time with the monitor's time excluded, for the optional time
budget and the per-epoch :class:`History`). Losses are relative
mean squared errors: the squared error per valid step divided by the total
variance of the training outputs, so 1 is "predicts the mean" and the numbers
compare with :func:`spectral_rnn.metrics.prediction_error`.

A divergent minibatch (a non-finite loss or gradient, which polynomial recursions
produce when weights grow) sends training back to the best weights at half the
learning rate; after ``max_restarts`` recoveries the run stops cleanly: the best
weights so far are kept and ``history.diverged`` is set. Under L-BFGS a divergent
line-search trial point reads as a high loss, and the line search backs off.

Why L-BFGS for refinement on small data (measured, docs/comparison.md): from the spectral
start, the planted problems are close to a least-squares minimum that full-batch L-BFGS
reaches in a few seconds at 1e5 steps, while Adam on minibatches keeps a gradient-noise floor
and its early stopping on a small validation split ends early: at 1e5 steps Adam
(lr 3e-4, 1024-sequence batches) ended 2.2x to 11x above the best tuned BPTT run, L-BFGS +
refit ends below it. Above :data:`LBFGS_MAX_STEPS` a full pass per iteration gets slow and
minibatch Adam is used.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    InputError,
    SpectralRNNWarning,
    check_dtype,
    check_nonnegative_int,
    check_positive_int,
    check_random_state,
    check_real,
    check_xy,
    resolve_device,
)
from .activations import ActivationLike
from .chain import step_mask
from .kinds import from_torch, kind_of, resolve_kind
from .stability import StabilityReport, stabilize
from .torch_export import PolynomialRNN, TorchRNN

__all__ = ["RunLog", "History", "TrainConfig", "BPTT_DEFAULTS", "EarlyStopping", "LrPlateau", "DivergenceRecovery",
           "TrainingClock", "refine", "train_bptt", "fit_module", "relative_mse", "REFINE_DEFAULTS",
           "LBFGS_MAX_STEPS"]

#: ``optimizer="auto"`` trains by full-batch L-BFGS up to this many valid training time steps
#: (validation split excluded), by minibatch Adam above (see :func:`refine`)
LBFGS_MAX_STEPS = 500_000
#: L-BFGS iterations per epoch (one validation evaluation, monitor call and early-stopping check each)
LBFGS_ITERS_PER_EPOCH = 10
_LBFGS_HISTORY = 20
_LBFGS_CHUNK_STEPS = 1 << 18  # time steps per chunk of the full-batch loss (bounds the memory)
_CONVERGED = 1e-9  # an L-BFGS epoch that lowers the training loss (relative MSE) by less has converged
_DIVERGED_LOSS = 1e3  # what a non-finite full-batch loss reads as in the line search (1 = the mean predictor)


@dataclass
class RunLog:
    """What every training history records: per evaluation row, ``time`` (seconds of training),
    ``epoch``, ``train_loss`` and ``lr``; and at the end ``stop_reason`` and ``divergences`` (how
    many minibatches gave a non-finite loss or gradient). :class:`History` (regression) and
    :class:`~spectral_rnn.tagger.TrainHistory` (tagging) add their own columns."""

    time: list[float] = field(default_factory=list)
    epoch: list = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    stop_reason: str = ""
    divergences: int = 0


@dataclass
class History(RunLog):
    """What happened during training, one row per epoch (epoch 0 is the starting point).

    ``epoch``, ``train_loss`` (mean over the epoch's minibatches; NaN at epoch 0),
    ``val_loss`` (relative MSE on the validation split, or the training loss when
    there is none), ``time`` (seconds of training since the start, evaluation included),
    ``lr``. ``best_epoch`` / ``best_val_loss``: the weights returned. ``diverged``: the
    run met a non-finite loss or gradient. ``stop_reason``: "max_epochs",
    "early_stopping", "converged" (L-BFGS: an epoch lowered the training loss by less than
    1e-9), "time_budget" or "diverged". ``divergences``: how many minibatches gave a
    non-finite loss or gradient (each sends training back to the best weights with half
    the learning rate; one more than ``max_restarts`` stops the run). ``stabilization``
    (:func:`refine` only): the :class:`~spectral_rnn.stability.StabilityReport` of the
    start model on the training inputs; ``stabilized``: its ``U`` (``V``) had to be shrunk
    because the start diverged there, and training started from the shrunk model;
    ``stabilization_seconds``: the time that check took (before ``time[0]``; it counts
    against ``time_budget``). ``optimizer``: ``"adam"`` or ``"lbfgs"``, the one that ran
    (``TrainConfig.optimizer="auto"`` picks by data size). With L-BFGS an epoch is
    :data:`LBFGS_ITERS_PER_EPOCH` full-batch iterations, ``train_loss`` the full-batch loss at
    its last evaluation, and ``divergences`` counts line-search trial points where the loss or
    gradient was not finite (the line search backs off from them; they never stop the run).
    ``refit_epochs``: L-BFGS epochs of the refit on training + validation sequences
    (:class:`TrainConfig`'s ``refit``; 0: none ran or none improved), ``refit_loss``: that
    loss (relative MSE) before and after it; the returned weights are then the refit's, and
    ``best_epoch`` / ``best_val_loss`` describe the weights it started from. ``seconds``: the
    whole training time, refit included (monitor time excluded).
    """

    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    diverged: bool = False
    stabilization: StabilityReport | None = None
    stabilization_seconds: float = 0.0
    optimizer: str = ""
    refit_epochs: int = 0
    refit_loss: tuple[float, float] | None = None
    refit_divergences: int = 0
    seconds: float = 0.0

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
            m = step_mask(self.L, T).unsqueeze(-1)
            self.X = torch.where(m, self.X, torch.zeros((), dtype=dtype, device=device))
            self.Y = torch.where(m, self.Y, torch.zeros((), dtype=dtype, device=device))

    @classmethod
    def joined(cls, a: "_Data", b: "_Data") -> "_Data":
        """The sequences of ``a`` then those of ``b`` (same length ``T``, device and dtype)."""
        out = cls.__new__(cls)
        out.X, out.Y, out.L = torch.cat([a.X, b.X]), torch.cat([a.Y, b.Y]), torch.cat([a.L, b.L])
        out.L_np = np.concatenate([a.L_np, b.L_np])
        out.ragged, out.n = a.ragged or b.ragged, a.n + b.n
        return out

    def batch(self, rows: np.ndarray | slice):
        L = self.L_np[rows]
        Tb = int(L.max())
        rows_t = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.X.device)
        x, y, lt = self.X[rows_t, :Tb], self.Y[rows_t, :Tb], self.L[rows_t]
        return x, y, (lt if bool((L < Tb).any()) else None), int(L.sum())

    def variance(self) -> float:
        """Total variance of the outputs over valid steps (sum over output dimensions)."""
        if self.ragged:
            Yv = self.Y[step_mask(self.L, self.Y.shape[1])]
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


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a BPTT run, shared by :func:`refine`, :func:`train_bptt` and
    :func:`~spectral_rnn.compare.run_comparison`.

    ``max_epochs``, ``lr`` (Adam step), ``batch_size`` (sequences), ``clip`` (max gradient norm);
    ``val_fraction``: share of the sequences held out for validation and early stopping (0:
    select on the training loss); ``patience``: epochs without validation improvement before
    stopping; ``lr_patience``: such epochs before the learning rate is halved (default
    ``patience // 3``); ``max_restarts``: recoveries from a divergent minibatch (back to the best
    weights, half the learning rate) before the run stops as diverged; ``time_budget``: stop after
    this many seconds of training; ``device``, ``dtype``: where and in what precision to train;
    ``progress``: a progress bar over epochs; ``monitor(module, elapsed)`` is called at the start,
    after every epoch and every ``monitor_every`` seconds (Adam; L-BFGS: after every epoch), its
    own time not counted.

    ``optimizer``: ``"adam"`` (minibatches of ``batch_size`` sequences, step ``lr``, gradient
    clipping at ``clip``, the learning rate halved on validation plateaus), ``"lbfgs"``
    (full-batch L-BFGS with a strong-Wolfe line search; an epoch is
    :data:`LBFGS_ITERS_PER_EPOCH` iterations over all training sequences, computed in chunks, so
    ``lr``, ``batch_size``, ``clip`` and ``lr_patience`` do not apply; the run also stops as
    ``"converged"`` when an epoch lowers the training loss by less than 1e-9), or ``"auto"``:
    ``"lbfgs"`` when the training split holds at most ``lbfgs_max_steps`` valid time steps, else
    ``"adam"`` (:meth:`resolved_optimizer`). ``refit`` (L-BFGS only): once the run has converged
    or stopped early, go on from the best validation weights with L-BFGS on training *and*
    validation sequences until that loss stops falling by 1e-9 per epoch (at most ``patience``
    epochs, within ``time_budget``; an unfinished epoch is dropped), and return that model: the
    validation split chose the stopping point, all the data fit the final weights.

    ``TrainConfig()`` holds the Adam fine-tuning settings (small steps, large batches);
    :data:`REFINE_DEFAULTS` (what :func:`refine` uses) adds ``optimizer="auto"`` and
    ``refit=True``; :data:`BPTT_DEFAULTS` are those of training from random initialisation
    (Adam, always). ``config.replace(lr=1e-3)`` gives a modified copy.
    """

    max_epochs: int = 100
    lr: float = 3e-4
    batch_size: int = 1024
    val_fraction: float = 0.1
    patience: int = 10
    lr_patience: int | None = None
    clip: float = 1.0
    max_restarts: int = 3
    time_budget: float | None = None
    device: str = "cpu"
    dtype: torch.dtype | str = torch.float32
    progress: bool = False
    monitor: Callable[[torch.nn.Module, float], None] | None = None
    monitor_every: float | None = None
    optimizer: str = "adam"
    lbfgs_max_steps: int = LBFGS_MAX_STEPS
    refit: bool = False

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some settings changed (unknown names: :class:`InputError`)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise InputError(f"unknown training setting(s) {', '.join(unknown)} "
                             f"(settings: {', '.join(f.name for f in fields(self))})")
        return dataclasses.replace(self, **changes)

    def checked(self) -> "TrainConfig":
        """A copy with every setting validated (:class:`InputError` on a bad one)."""
        return dataclasses.replace(
            self,
            max_epochs=check_positive_int(self.max_epochs, "max_epochs"),
            lr=check_real(self.lr, "lr", low=0.0, low_open=True),
            batch_size=check_positive_int(self.batch_size, "batch_size"),
            val_fraction=check_real(self.val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True),
            patience=check_positive_int(self.patience, "patience"),
            lr_patience=None if self.lr_patience is None else check_positive_int(self.lr_patience, "lr_patience"),
            clip=check_real(self.clip, "clip", low=0.0, low_open=True, finite=False),
            max_restarts=check_nonnegative_int(self.max_restarts, "max_restarts"),
            time_budget=None if self.time_budget is None else check_real(
                self.time_budget, "time_budget", low=0.0, low_open=True, finite=False),
            dtype=check_dtype(self.dtype),
            monitor_every=None if self.monitor_every is None else check_real(self.monitor_every, "monitor_every",
                                                                             low=0.0),
            optimizer=_check_optimizer(self.optimizer),
            lbfgs_max_steps=check_nonnegative_int(self.lbfgs_max_steps, "lbfgs_max_steps"),
            refit=_check_bool(self.refit, "refit"),
        )

    def resolved_optimizer(self, n_train_steps: int) -> str:
        """``"adam"`` or ``"lbfgs"``: the optimiser a run on ``n_train_steps`` valid training
        time steps (validation split excluded) uses. ``"auto"`` is ``"lbfgs"`` (full batch) when
        ``n_train_steps <= lbfgs_max_steps``, else ``"adam"`` (minibatches)."""
        if self.optimizer != "auto":
            return self.optimizer
        return "lbfgs" if n_train_steps <= self.lbfgs_max_steps else "adam"


#: the settings :func:`train_bptt` starts from (training from random initialisation)
BPTT_DEFAULTS = TrainConfig(lr=3e-3, batch_size=128)

#: the settings :func:`refine` starts from: ``optimizer="auto"`` (full-batch L-BFGS up to
#: :data:`LBFGS_MAX_STEPS` training steps, else Adam lr 3e-4 on 1024-sequence minibatches)
REFINE_DEFAULTS = TrainConfig(optimizer="auto", refit=True)

_OPTIMIZERS = ("adam", "lbfgs", "auto")


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r:.40}")
    return bool(value)


def _check_optimizer(name: object) -> str:
    if not isinstance(name, str) or name.lower() not in _OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {name!r:.40}")
    return name.lower()


def _config(config: TrainConfig | None, default: TrainConfig, overrides: dict) -> TrainConfig:
    """``config`` (or ``default``) with the keyword settings given to a public function applied."""
    base = default if config is None else config
    if not isinstance(base, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(base).__name__}")
    return base.replace(**overrides).checked()


# ----------------------------------------------------------------------------- policies


class EarlyStopping:
    """Keeps the best validation loss, its epoch and its weights; asks to stop after
    ``patience`` evaluations without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = math.inf
        self.best_epoch = 0
        self.stale = 0
        self.state: dict | None = None

    def start(self, loss: float, module: torch.nn.Module) -> None:
        """The starting point (epoch 0): the weights to return if nothing beats them."""
        self.best = loss if math.isfinite(loss) else math.inf
        self.state = copy.deepcopy(module.state_dict())

    def update(self, epoch: int, loss: float, module: torch.nn.Module) -> bool:
        """Record an epoch's validation loss; returns whether it improved on the best."""
        if loss < self.best:
            self.best, self.best_epoch, self.stale = loss, epoch, 0
            self.state = copy.deepcopy(module.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def restore(self, module: torch.nn.Module) -> None:
        """Load the best weights into ``module``."""
        module.load_state_dict(self.state)


class LrPlateau:
    """Multiplies the learning rate by ``factor`` after ``patience`` evaluations without improvement."""

    def __init__(self, patience: int, factor: float = 0.5) -> None:
        self.patience, self.factor, self.stale = patience, factor, 0

    def update(self, improved: bool, optimizer: torch.optim.Optimizer) -> bool:
        """Returns whether the rate was lowered."""
        if improved:
            self.stale = 0
            return False
        self.stale += 1
        if self.stale < self.patience:
            return False
        for g in optimizer.param_groups:
            g["lr"] *= self.factor
        self.stale = 0
        return True


class DivergenceRecovery:
    """A minibatch with a non-finite loss or gradient: back to the best weights with a fresh
    optimiser (same class and settings, weight decay included) at ``factor`` times the
    learning rate; the ``max_restarts + 1``-th time, give up."""

    def __init__(self, max_restarts: int, factor: float = 0.5) -> None:
        self.max_restarts, self.factor, self.count = max_restarts, factor, 0

    def recover(self, module: torch.nn.Module, best: EarlyStopping,
                optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
        """The optimiser to go on with, or ``None``: stop, the run diverged."""
        self.count += 1
        if self.count > self.max_restarts:
            return None
        best.restore(module)
        return type(optimizer)(module.parameters(),
                               **{**optimizer.defaults, "lr": optimizer.param_groups[0]["lr"] * self.factor})


class TrainingClock:
    """Seconds of training since the start, the time spent in ``monitor`` calls excluded.

    ``monitor(module, elapsed)`` runs through :meth:`monitor` (always) and :meth:`tick`
    (when ``every`` seconds have passed since the last call); ``timer``: the clock read.
    """

    def __init__(self, monitor: Callable[[torch.nn.Module, float], None] | None = None,
                 every: float | None = None, timer: Callable[[], float] = time.perf_counter) -> None:
        self._monitor, self.every, self.timer = monitor, every, timer
        self.excluded = 0.0
        self.t0 = timer()
        self.last = 0.0

    def elapsed(self) -> float:
        return self.timer() - self.t0 - self.excluded

    def monitor(self, module: torch.nn.Module) -> None:
        if self._monitor is not None:
            t = self.timer()
            self._monitor(module, self.elapsed())
            self.excluded += self.timer() - t
        self.last = self.elapsed()

    def tick(self, module: torch.nn.Module) -> None:
        if self._monitor is not None and self.every is not None and self.elapsed() - self.last >= self.every:
            self.monitor(module)

    def over(self, budget: float | None) -> bool:
        return budget is not None and self.elapsed() >= budget


# ----------------------------------------------------------------------------- the loop


def _train_epoch(module, train: _Data, variance: float, opt, cfg: TrainConfig, rng, stopper: EarlyStopping,
                 recovery: DivergenceRecovery, clock: TrainingClock):
    """One pass over shuffled minibatches. Returns ``(mean training loss, optimiser, stop reason or "")``."""
    module.train()
    perm = rng.permutation(train.n)
    tot, nb = 0.0, 0
    for i in range(0, train.n, cfg.batch_size):
        x, y, lt, nv = train.batch(np.sort(perm[i : i + cfg.batch_size]))
        opt.zero_grad(set_to_none=True)
        err = module(x, lt) - y
        loss = (err * err).sum() / (nv * variance)
        lv = float(loss.detach())
        ok = math.isfinite(lv)
        if ok:
            loss.backward()
            ok = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.clip)))
        if not ok:
            opt = recovery.recover(module, stopper, opt)
            if opt is None:
                return tot / max(nb, 1), None, "diverged"
            continue
        opt.step()
        tot += lv
        nb += 1
        if clock.over(cfg.time_budget):
            return tot / max(nb, 1), opt, "time_budget"
        clock.tick(module)
    return tot / max(nb, 1), opt, ""


class _OutOfTime(Exception):
    """Raised inside the L-BFGS closure when the time budget is spent."""


class _FullBatch:
    """The full-batch training loss and its gradient, in chunks of sequences (L-BFGS's closure).

    A non-finite loss or gradient (a trial point of the line search where the recursion blows
    up) reads as the loss :data:`_DIVERGED_LOSS` with a zero gradient, so the line search backs
    off; ``diverged`` counts such evaluations, ``last`` is the last finite loss, ``calls`` the
    evaluations. Raises :class:`_OutOfTime` once ``clock`` is over ``budget``.
    """

    def __init__(self, module: torch.nn.Module, train: _Data, variance: float, clock: TrainingClock,
                 budget: float | None) -> None:
        self.module, self.train, self.variance, self.clock, self.budget = module, train, variance, clock, budget
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.per = max(1, _LBFGS_CHUNK_STEPS // train.X.shape[1])
        self.n_valid = int(train.L_np.sum())
        self.diverged, self.calls, self.last = 0, 0, math.nan

    def __call__(self) -> float:
        if self.clock.over(self.budget):
            raise _OutOfTime
        self.calls += 1
        for p in self.params:
            p.grad = None
        total = 0.0
        for i in range(0, self.train.n, self.per):
            x, y, lt, _ = self.train.batch(slice(i, min(self.train.n, i + self.per)))
            err = self.module(x, lt) - y
            loss = (err * err).sum() / (self.n_valid * self.variance)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                total = math.inf
                break
            loss.backward()
            total += lv
        if not (math.isfinite(total) and all(p.grad is None or bool(torch.isfinite(p.grad).all())
                                             for p in self.params)):
            self.diverged += 1
            for p in self.params:
                p.grad = torch.zeros_like(p)
            return _DIVERGED_LOSS
        self.last = total
        return total


def _lbfgs(module: torch.nn.Module) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(module.parameters(), lr=1.0, max_iter=LBFGS_ITERS_PER_EPOCH,
                             history_size=_LBFGS_HISTORY, line_search_fn="strong_wolfe")


def fit_module(
    module: torch.nn.Module,
    train: _Data,
    val: _Data | None,
    variance: float,
    config: TrainConfig | None = None,
    rng: np.random.Generator | None = None,
    desc: str = "bptt",
    **settings,
) -> History:
    """Train ``module`` in place (ends holding the best validation weights); return the history.

    ``config`` (:class:`TrainConfig`, default :data:`BPTT_DEFAULTS`; keyword ``settings``
    override it). The loop is Adam on minibatches with the policies :class:`EarlyStopping`,
    :class:`LrPlateau`, :class:`DivergenceRecovery` and :class:`TrainingClock` (monitor time
    is not counted in the history's times nor against ``time_budget``), or full-batch L-BFGS
    with :class:`EarlyStopping`, :class:`TrainingClock` and the optional refit (see
    :class:`TrainConfig`'s ``optimizer`` and ``refit``).
    """
    cfg = _config(config, BPTT_DEFAULTS, settings)
    rng = check_random_state(rng)
    use_lbfgs = cfg.resolved_optimizer(int(train.L_np.sum())) == "lbfgs"
    opt = _lbfgs(module) if use_lbfgs else torch.optim.Adam(module.parameters(), lr=cfg.lr)
    stopper = EarlyStopping(cfg.patience)
    plateau = LrPlateau(max(1, cfg.patience // 3) if cfg.lr_patience is None else cfg.lr_patience)
    recovery = DivergenceRecovery(cfg.max_restarts)
    clock = TrainingClock(cfg.monitor, cfg.monitor_every)
    full = _FullBatch(module, train, variance, clock, cfg.time_budget) if use_lbfgs else None
    hist = History()
    hist.optimizer = "lbfgs" if use_lbfgs else "adam"

    def evaluate() -> float:
        return relative_mse(module, val if val is not None and val.n > 0 else train, variance)

    def record(epoch: int, train_loss: float, v: float) -> None:
        hist.epoch.append(epoch), hist.train_loss.append(train_loss), hist.val_loss.append(v)
        hist.time.append(clock.elapsed()), hist.lr.append(opt.param_groups[0]["lr"])

    clock.monitor(module)
    v0 = evaluate()
    stopper.start(v0, module)
    record(0, math.nan, v0)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_epochs, desc=desc, unit="epoch", leave=False)
    stop = "" if math.isfinite(v0) else "diverged"
    try:
        for epoch in range(1, cfg.max_epochs + 1):
            if stop:
                break
            converged = False
            if full is not None:
                module.train()
                before = full.last
                try:
                    opt.step(full)
                except _OutOfTime:  # mid-step: the weights may be a line-search trial point,
                    stop = "time_budget"  # evaluated below like any other (the best is returned)
                train_loss, new_opt = full.last, opt
                converged = before - train_loss < _CONVERGED  # also when it went up (float32 noise)
            else:
                train_loss, new_opt, stop = _train_epoch(module, train, variance, opt, cfg, rng, stopper, recovery,
                                                         clock)
            module.eval()
            if stop == "diverged":
                break
            opt = new_opt
            v = evaluate()
            record(epoch, train_loss, v)
            if not math.isfinite(v):
                stop = "diverged"
                break
            improved = stopper.update(epoch, v, module)
            if full is None:
                plateau.update(improved, opt)
            clock.monitor(module)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{train_loss:.3g}", val=f"{v:.3g}")
            if stop:
                break
            if converged:
                stop = "converged"
            elif stopper.should_stop:
                stop = "early_stopping"
            elif clock.over(cfg.time_budget):
                stop = "time_budget"
        stop = stop or "max_epochs"
    finally:
        if bar is not None:
            bar.close()
    hist.stop_reason = stop
    hist.diverged = stop == "diverged"
    hist.divergences = recovery.count + (full.diverged if full is not None else 0)
    if full is not None and cfg.refit and val is not None and val.n > 0 and stop in ("converged", "early_stopping",
                                                                                      "max_epochs") \
            and stopper.best_epoch > 0:
        _refit(module, _Data.joined(train, val), variance, cfg, stopper, clock, hist)
        hist.divergences += hist.refit_divergences
    hist.best_epoch, hist.best_val_loss = stopper.best_epoch, stopper.best
    stopper.restore(module)
    module.eval()
    hist.seconds = clock.elapsed()
    return hist


def _refit(module: torch.nn.Module, both: _Data, variance: float, cfg: TrainConfig, stopper: EarlyStopping,
           clock: TrainingClock, hist: History) -> None:
    """From the best validation weights, full-batch L-BFGS on training + validation sequences
    until an epoch lowers that loss by less than ``1e-9`` (at most ``cfg.patience`` epochs, within
    the time budget). Leaves the result in ``stopper.state`` (what :func:`fit_module` returns)
    unless the loss went up or stopped being finite."""
    stopper.restore(module)
    full = _FullBatch(module, both, variance, clock, cfg.time_budget)
    opt = _lbfgs(module)
    kept, start, loss = None, math.nan, math.nan
    module.train()
    try:
        start = loss = full()
        for _ in range(cfg.patience):
            opt.step(full)
            if not (math.isfinite(full.last) and full.last <= loss):
                break
            kept, prev, loss = copy.deepcopy(module.state_dict()), loss, full.last
            hist.refit_epochs += 1
            clock.monitor(module)
            if prev - loss < _CONVERGED:
                break
    except _OutOfTime:  # an unfinished epoch is dropped: its weights may be a line-search trial point
        pass
    module.eval()
    hist.refit_divergences = full.diverged
    if kept is not None:
        stopper.state = kept
        hist.refit_loss = (start, loss)


# ----------------------------------------------------------------------------- public API


def _prepare(X, Y, lengths, cfg: TrainConfig, rng: np.random.Generator, d_x=None, d_y=None):
    X, Y, lengths = check_xy(X, Y, lengths, d_x, d_y)
    dev = resolve_device(cfg.device)
    tr, va = _split(X.shape[0], cfg.val_fraction, rng)
    train = _Data(X, Y, lengths, tr, dev, cfg.dtype)
    val = _Data(X, Y, lengths, va, dev, cfg.dtype) if len(va) else None
    var = train.variance()
    if not var > 0:
        raise InputError("the training outputs have zero variance")
    return train, val, var, dev


def refine(
    model,
    X: object,
    Y: object,
    lengths: object = None,
    config: TrainConfig | None = None,
    *,
    random_state: int | np.random.Generator | None = None,
    stabilize_start: bool = True,
    **settings,
):
    """Refine a fitted model by backpropagation through time.

    Parameters
    ----------
    model: a model of a registered kind (e.g. ``SpectralIORNN(...).fit(X, Y).model_``).
    X, Y, lengths: training data, ``(n_sequences, T, d_x)``, ``(n_sequences, T, d_y)``, ``(n_sequences,)``.
    config: the training settings (:class:`TrainConfig`; default :data:`REFINE_DEFAULTS`).
        The default rule is by data size: when the training split (validation excluded) holds
        at most :data:`LBFGS_MAX_STEPS` = 5e5 valid time steps, full-batch L-BFGS
        (:data:`LBFGS_ITERS_PER_EPOCH` iterations an epoch, early stopping on the validation
        split after ``patience`` epochs without improvement, or "converged" when an epoch
        lowers the training loss by less than 1e-9), then a refit on training + validation
        sequences from the best validation weights; above that, Adam lr 3e-4 on 1024-sequence
        minibatches (small steps and large batches: on the planted model of docs/method.md at
        1e6 steps they beat lr=1e-3 with 256-sequence batches). Any setting may also be given
        by keyword (``optimizer="adam"``, ``lr=1e-3``, ``max_epochs=50``, ``time_budget=10``,
        ``monitor=...``), overriding ``config``; ``lr`` and ``batch_size`` only matter to Adam.
    random_state: seed of the split and the minibatch order.
    stabilize_start: first run :func:`spectral_rnn.stability.stabilize` on the start model
        and all of ``X`` (training and validation sequences): a polynomial start whose
        recursion diverges there gets ``U`` (``V``) shrunk, and training starts from that;
        ``history.stabilization`` holds the report (``history.stabilized``: it was shrunk).
        Its time counts against ``time_budget``.

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
    cfg = _config(config, REFINE_DEFAULTS, settings)
    rng = check_random_state(random_state)
    train, val, var, dev = _prepare(X, Y, lengths, cfg, rng, model.d_x, model.d_y)
    report, t_stab = None, 0.0
    if stabilize_start:
        t0 = time.perf_counter()
        model, report = stabilize(model, X, lengths, device=dev)
        t_stab = time.perf_counter() - t0
        if cfg.time_budget is not None:
            cfg = cfg.replace(time_budget=max(cfg.time_budget - t_stab, 1e-3))
    module = model.to_torch(dtype=cfg.dtype, device=dev)
    hist = fit_module(module, train, val, var, cfg, rng, desc="refine")
    hist.stabilization, hist.stabilization_seconds = report, t_stab
    if hist.best_epoch == 0:
        if not math.isfinite(hist.val_loss[0]):
            how = "in " + str(cfg.dtype).replace("torch.", "") if stabilize_start else "with stabilize_start=False"
            raise DivergenceError(
                f"refinement cannot start: the start model diverges on these data ({how}); "
                "use stabilize_start=True, or dtype=torch.float64"
            )
        if hist.diverged:
            warnings.warn(
                f"refinement diverged before improving on the start model (validation relative MSE "
                f"{hist.val_loss[0]:.3g}); the start model is returned unchanged: try a smaller lr",
                SpectralRNNWarning, stacklevel=2,
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
    config: TrainConfig | None = None,
    *,
    random_state: int | np.random.Generator | None = None,
    kind: str | None = None,
    **settings,
):
    """The baseline: the same architecture trained by BPTT from random initialisation.

    Weights start as :class:`torch.nn.RNN` / :class:`torch.nn.Linear` start them,
    ``U(-1/sqrt(fan), 1/sqrt(fan))``, multiplied by ``init_scale``; ``hidden_size`` is
    per chain (per direction when ``bidirectional``); ``kind``: a registered model kind
    (default ``"iornn"``, ``"brnn"`` with ``bidirectional``). ``config`` and the keyword
    settings are those of :func:`refine`, starting from :data:`BPTT_DEFAULTS` (lr 3e-3,
    128-sequence batches). With ``activation="tanh"`` the module is PyTorch's own
    ``torch.nn.RNN(nonlinearity="tanh", bias=False)`` plus a bias-free ``nn.Linear`` read-out
    (:class:`TorchRNN`), and ``init_scale=1`` is exactly its default initialisation.
    Returns ``(model, history)``.
    """
    hidden_size = check_positive_int(hidden_size, "hidden_size")
    cfg = _config(config, BPTT_DEFAULTS, settings)
    rng = check_random_state(random_state)
    train, val, var, dev = _prepare(X, Y, lengths, cfg, rng)
    module = random_module(train.X.shape[2], hidden_size, train.Y.shape[2], activation, bidirectional,
                           init_scale, rng, dev, cfg.dtype, kind)
    hist = fit_module(module, train, val, var, cfg, rng, desc="bptt")
    return from_torch(module), hist
