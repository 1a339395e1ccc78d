"""Head-to-head: the spectral estimate, spectral + refinement, and tuned BPTT from random init.

:func:`run_comparison` runs all three in one process, on the same data, and
evaluates them on the same held-out sequences:

* ``spectral``: :class:`SpectralIORNN` (or :class:`SpectralBRNN`) on the training split;
* ``spectral+refine``: that estimate refined by BPTT (:func:`spectral_rnn.refine.refine`)
  for the rest of the budget (the spectral fit time counts);
* ``bptt``: the same architecture from PyTorch's standard random initialisation
  (:func:`spectral_rnn.refine.train_bptt`), each run with the full budget, over a grid of
  learning rates x initial scales x seeds; the best run is reported (chosen on the
  held-out error, which favours the baseline).

Held-out error is the relative MSE of the predictions against the held-out outputs,
or against the true model's conditional mean when ``truth`` is given. Every method
records a curve of held-out error against its own wall time (evaluation time
excluded). The common target is the best held-out error the tuned baseline reaches
within its budget; the comparison reports the time each method takes to reach it,
the final errors and their ratios, and can plot the curves.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import (InputError, SpectralRNNError, check_nonnegative_int, check_positive_int, check_random_state,
                      check_real, check_xy, resolve_device, valid_mask)
from .activations import ActivationLike, as_activation
from . import estimators
from .io import _atomic_write, check_output_path
from .kinds import ModelKind, resolve_kind
from .metrics import prediction_error
from .refine import TrainConfig, _config, refine, train_bptt

__all__ = ["MethodResult", "Comparison", "run_comparison", "plot_comparison", "check_plot_path", "DEFAULT_LRS",
           "DEFAULT_INIT_SCALES", "COMPARE_DEFAULTS"]

DEFAULT_LRS = (1e-3, 3e-3, 1e-2)
DEFAULT_INIT_SCALES = (1.0, 0.3)


@dataclass
class MethodResult:
    """One method's run: its error-vs-time curve and summary."""

    name: str
    times: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    final_error: float = math.nan
    wall_time: float = math.nan
    settings: dict = field(default_factory=dict)
    diverged: bool = False
    note: str = ""
    model: object = None

    def time_to(self, target: float) -> float:
        """First time the curve is at or below ``target`` (``inf`` if never)."""
        for t, e in zip(self.times, self.errors):
            if e <= target:
                return t
        return math.inf

    def best_within(self, seconds: float) -> float:
        """Lowest error on the curve at times ``<= seconds`` (``inf`` if none)."""
        vals = [e for t, e in zip(self.times, self.errors) if t <= seconds and math.isfinite(e)]
        return min(vals) if vals else math.inf

    @property
    def best_error(self) -> float:
        vals = [e for e in self.errors if math.isfinite(e)]
        return min(vals) if vals else math.inf


@dataclass
class Comparison:
    """The result of :func:`run_comparison`.

    ``spectral``, ``refined``, ``bptt`` (the best baseline run) and ``bptt_runs``
    (every run of the grid); ``target`` (the baseline's best held-out error within its
    budget); ``time_to_target`` and ``ratios`` (dicts); ``summary()`` and ``table()``.
    """

    spectral: MethodResult
    refined: MethodResult
    bptt: MethodResult
    bptt_runs: list[MethodResult]
    target: float
    budget: float
    reference: str
    n_train_steps: int
    n_test_steps: int

    @property
    def methods(self) -> list[MethodResult]:
        return [self.spectral, self.refined, self.bptt]

    @property
    def time_to_target(self) -> dict[str, float]:
        return {m.name: m.time_to(self.target) for m in self.methods}

    @property
    def ratios(self) -> dict[str, float]:
        """``speedup``: baseline time to target / spectral+refine time to target;
        ``final_error_ratio``: spectral+refine final error / baseline final error
        (<= 1: not worse); ``spectral_speedup``: baseline time to the spectral
        estimate's error / spectral fit time; ``baseline_best_in_10x_spectral``:
        the baseline's best error within 10x the spectral fit time, over the spectral
        error (> 1: the baseline does not reach it)."""
        tt = self.time_to_target
        t_ref = tt[self.refined.name]
        t_base = tt[self.bptt.name]
        e_s = self.spectral.final_error
        t_s = self.spectral.wall_time
        base_to_spec = min((r.time_to(e_s) for r in self.bptt_runs), default=math.inf)
        best10 = min((r.best_within(10 * t_s) for r in self.bptt_runs), default=math.inf)
        return {
            "speedup": _div(t_base, t_ref),
            "final_error_ratio": _div(self.refined.final_error, self.bptt.final_error),
            "baseline_time_to_spectral_error": base_to_spec,
            "spectral_speedup": _div(base_to_spec, t_s),
            "baseline_best_in_10x_spectral": _div(best10, e_s),
        }

    def summary(self) -> dict:
        """A flat dict of the headline figures (for tables and JSON)."""
        tt = self.time_to_target
        r = self.ratios
        return {
            "target": self.target,
            "spectral_error": self.spectral.final_error,
            "spectral_time": self.spectral.wall_time,
            "refined_error": self.refined.final_error,
            "refined_time": self.refined.wall_time,
            "bptt_error": self.bptt.final_error,
            "bptt_time": self.bptt.wall_time,
            "t_target_spectral": tt[self.spectral.name],
            "t_target_refined": tt[self.refined.name],
            "t_target_bptt": tt[self.bptt.name],
            **r,
            "bptt_settings": dict(self.bptt.settings),
        }

    def table(self) -> str:
        """A plain-text table of the comparison."""
        tt = self.time_to_target
        rows = [("method", "final err", "best err", "wall s", "t->target s", "settings")]
        for m in self.methods:
            rows.append((m.name, _fmt_e(m.final_error), _fmt_e(m.best_error), f"{m.wall_time:.1f}",
                         _fmt_t(tt[m.name]), _settings(m)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        r = self.ratios
        lines.append("")
        lines.append(f"held-out error: relative MSE against {self.reference}; {self.n_train_steps} training steps, "
                     f"{self.n_test_steps} held-out steps; budget {self.budget:g} s per run")
        lines.append(f"target (best baseline error within budget): {_fmt_e(self.target)}")
        lines.append(f"speedup to target (bptt / spectral+refine): {_fmt_r(r['speedup'])}")
        lines.append(f"final error ratio (spectral+refine / bptt): {_fmt_r(r['final_error_ratio'])}")
        lines.append(f"baseline time to the spectral error {_fmt_e(self.spectral.final_error)}: "
                     f"{_fmt_t(r['baseline_time_to_spectral_error'])} s "
                     f"({_fmt_r(r['spectral_speedup'])} the spectral fit time)")
        lines.append(f"baseline best error within 10x the spectral fit time / spectral error: "
                     f"{_fmt_r(r['baseline_best_in_10x_spectral'])}")
        lines.append("")
        lines.append("baseline grid (median over seeds of the final held-out error; diverged runs):")
        groups: dict[tuple, list[MethodResult]] = {}
        for run in self.bptt_runs:
            groups.setdefault((run.settings["lr"], run.settings["init_scale"]), []).append(run)
        for (lr, sc), runs in sorted(groups.items()):
            med = float(np.median([x.final_error for x in runs]))
            nd = sum(x.diverged for x in runs)
            lines.append(f"  lr={lr:g} init_scale={sc:g}: {_fmt_e(med)} ({len(runs)} seeds, {nd} diverged)")
        return "\n".join(lines)


def _div(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b):
        return math.nan
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def _fmt_e(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.2e}")


def _fmt_t(x: float) -> str:
    return "never" if math.isinf(x) else ("nan" if math.isnan(x) else f"{x:.2f}")


def _fmt_r(x: float) -> str:
    return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.3g}x")


def _settings(m: MethodResult) -> str:
    s = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.settings.items())
    if m.diverged:
        s += (", " if s else "") + "diverged"
    if m.note:
        s += (", " if s else "") + m.note
    return s


class _HeldOut:
    """Held-out inputs and reference outputs, with a fast relative-MSE evaluation."""

    def __init__(self, X, R, lengths, device, dtype=torch.float32):
        self.X_np, self.R_np, self.L_np = X, R, lengths
        self.mask = valid_mask(lengths, *X.shape[:2])
        Rv = R[self.mask]
        self.var = float(np.sum(np.var(Rv, axis=0)))
        if not self.var > 0:
            raise InputError("the held-out reference outputs have zero variance")
        self.n_steps = int(self.mask.sum())
        self.X = torch.as_tensor(np.where(self.mask[..., None], X, 0.0), dtype=dtype, device=device)
        self.R = torch.as_tensor(np.where(self.mask[..., None], R, 0.0), dtype=torch.float64, device=device)
        self.L = None if lengths is None else torch.as_tensor(lengths, device=device)

    def module_error(self, module) -> float:
        with torch.no_grad():
            P = module(self.X, self.L).to(torch.float64)
            if not bool(torch.isfinite(P).all()) or float(P.abs().max()) > 1e12:
                return math.inf
            return float(((P - self.R) ** 2).sum()) / self.n_steps / self.var

    def model_error(self, model) -> float:
        try:
            P = model.predict(self.X_np, self.L_np)
        except SpectralRNNError:  # a divergent recursion
            return math.inf
        return prediction_error(self.R_np, P, self.L_np)


def _spectral_estimator(kind: ModelKind, hidden_size, activation, random_state, device):
    if kind.estimator is None:
        raise InputError(f"no spectral estimator fits models of kind {kind.name!r} yet")
    return getattr(estimators, kind.estimator)(hidden_size, activation, random_state=random_state, device=device)


#: the training settings of a comparison's BPTT runs (the baseline's lr comes from the grid,
#: the refinement's from ``refine_lr``; ``time_budget`` and ``monitor`` are set per run)
COMPARE_DEFAULTS = TrainConfig(max_epochs=1000, batch_size=256)


def run_comparison(
    X: object,
    Y: object,
    lengths: object = None,
    *,
    truth=None,
    hidden_size: int = 4,
    activation: ActivationLike = (0.0, 1.0, 0.5),
    bidirectional: bool = False,
    budget: float = 60.0,
    test_fraction: float = 0.1,
    seeds: int | Sequence[int] = 3,
    lrs: Sequence[float] = DEFAULT_LRS,
    init_scales: Sequence[float] = DEFAULT_INIT_SCALES,
    config: TrainConfig | None = None,
    refine_lr: float = 3e-4,
    refine_batch_size: int | None = 1024,
    refine_optimizer: str = "auto",
    refine_refit: bool = True,
    eval_points: int = 60,
    random_state: int | np.random.Generator | None = 0,
    plot: str | None = None,
    log=None,
    kind: str | None = None,
    **settings,
) -> Comparison:
    """Run spectral, spectral + refinement and tuned BPTT on the same data; see the module docs.

    Parameters
    ----------
    X, Y, lengths: the data (``(n, T, d_x)``, ``(n, T, d_y)``, ``(n,)``); ``test_fraction``
        of the sequences are held out for evaluation, the rest train every method. Every
        other parameter is keyword-only.
    truth: the true model, if known: held-out error is then measured against its
        conditional mean instead of the noisy held-out outputs.
    hidden_size, activation, bidirectional: the architecture (hidden size per chain);
        ``kind``: a registered model kind (:mod:`spectral_rnn.kinds`; default ``"iornn"``, or
        ``"brnn"`` with ``bidirectional``).
    budget: wall-time budget in seconds of every BPTT run and of spectral + refinement
        together (runs may stop earlier by early stopping).
    seeds: number of baseline seeds (or the seeds); lrs, init_scales: the baseline grid
        (init scale 1 is PyTorch's default initialisation).
    config: the training settings of every BPTT run (:class:`~spectral_rnn.refine.TrainConfig`,
        default :data:`COMPARE_DEFAULTS`: 1000 epochs at most, 256-sequence batches, patience
        10, 10% validation); keyword ``settings`` (``batch_size=``, ``max_epochs=``,
        ``patience=``, ``val_fraction=``, ``device=``, ``progress=``, ...) override it.
    refine_optimizer, refine_refit: the refinement's optimiser and final refit (as in
        :data:`~spectral_rnn.refine.REFINE_DEFAULTS`: ``"auto"`` is full-batch L-BFGS up to
        :data:`~spectral_rnn.refine.LBFGS_MAX_STEPS` training steps, then a refit on training +
        validation sequences; Adam above); the baseline runs always use Adam.
    refine_lr, refine_batch_size: Adam step and minibatch size of the refinement when it uses
        Adam (a fine-tuning from a good start: small steps, large batches; ``None`` uses the config's).
    eval_points: about how many held-out evaluations per run (their time is not counted).
    random_state: seed of the held-out split, the spectral fit and the refinement.
    plot: a path: write a plot of held-out error against wall time there (PNG, PDF...).
    log: a callable receiving one-line progress messages.
    """
    if plot is not None:  # before the long run: an unwritable plot must not cost the whole budget
        check_plot_path(plot)
    X, Y, lengths = check_xy(X, Y, lengths)
    budget = check_real(budget, "budget", low=0.0, low_open=True)
    test_fraction = check_real(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    hidden_size = check_positive_int(hidden_size, "hidden_size")
    spec = resolve_kind(kind, bidirectional)
    if spec.n_chains * hidden_size > min(X.shape[2], Y.shape[2]):  # also keeps BPTT from allocating absurd weights
        raise InputError(
            f"hidden size {hidden_size} is too large for these data: the spectral method identifies at most "
            f"min(d_x, d_y) = {min(X.shape[2], Y.shape[2])} components, and this model needs "
            f"{spec.n_chains * hidden_size}"
        )
    f = as_activation(activation)
    cfg = _config(config, COMPARE_DEFAULTS, settings)
    refine_cfg = cfg.replace(lr=refine_lr, batch_size=cfg.batch_size if refine_batch_size is None
                             else refine_batch_size, optimizer=refine_optimizer, refit=refine_refit).checked()
    dev = resolve_device(cfg.device)
    rng = check_random_state(random_state)
    seed_list = _seed_list(seeds)
    lrs = _positive_list(lrs, "lrs")
    init_scales = _positive_list(init_scales, "init_scales")
    eval_points = check_positive_int(eval_points, "eval_points")
    if not seed_list or not lrs or not init_scales:
        raise InputError("the baseline grid is empty: give at least one seed, learning rate and init scale")
    say = log if log is not None else (lambda msg: None)

    n = X.shape[0]
    if n < 3:
        raise InputError(f"too few sequences ({n}) to hold some out: need at least 3")
    perm = rng.permutation(n)
    n_test = min(n - 2, max(1, int(round(test_fraction * n))))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    train = (X[tr], Y[tr], None if lengths is None else lengths[tr])
    Xte, Lte = X[te], None if lengths is None else lengths[te]
    if truth is not None:
        if type(truth) is not spec.cls:
            raise InputError(f"truth is a {type(truth).__name__}, the comparison fits a {spec.cls.__name__}")
        Rte, reference = truth.predict(Xte, Lte), "the true conditional mean"
    else:
        Rte, reference = Y[te], "the held-out outputs"
    held = _HeldOut(Xte, Rte, Lte, dev)
    Ltr = train[2]
    n_train_steps = int(train[0].shape[0] * train[0].shape[1] if Ltr is None else Ltr.sum())
    base_seed = int(rng.integers(2**31))
    every = budget / max(eval_points, 1)

    spectral = _run_spectral(spec, hidden_size, f, train, held, base_seed, dev, say)
    refined = _run_refined(spectral, train, held, refine_cfg.replace(monitor_every=every), budget, base_seed + 1, say)
    runs = []
    for lr in lrs:
        for scale in init_scales:
            for seed in seed_list:
                runs.append(_run_baseline(spec, hidden_size, f, train, held, cfg.replace(lr=lr, monitor_every=every),
                                          scale, seed, budget, base_seed + 1000 + seed, say))
    best = min(runs, key=lambda r: (r.best_error, r.final_error))
    comp = Comparison(spectral=spectral, refined=refined, bptt=best, bptt_runs=runs, target=best.best_error,
                      budget=float(budget), reference=reference, n_train_steps=n_train_steps,
                      n_test_steps=held.n_steps)
    if plot is not None:
        plot_comparison(comp, plot)
    return comp


def _monitor_into(res: MethodResult, held: "_HeldOut", offset: float):
    def mon(module, elapsed):
        res.times.append(offset + elapsed)
        res.errors.append(held.module_error(module))
    return mon


def _run_spectral(spec: ModelKind, hidden_size, f, train, held: "_HeldOut", seed: int, dev, say) -> MethodResult:
    """The spectral estimate on the training split, timed."""
    spectral = MethodResult("spectral")
    say("spectral fit")
    t0 = time.perf_counter()
    try:
        spectral.model = _spectral_estimator(spec, hidden_size, f, seed, str(dev)).fit(*train).model_
    except SpectralRNNError as exc:
        spectral.note = f"failed: {exc}"
    spectral.wall_time = time.perf_counter() - t0
    spectral.final_error = held.model_error(spectral.model) if spectral.model is not None else math.inf
    spectral.times, spectral.errors = [spectral.wall_time], [spectral.final_error]
    say(f"spectral: error {spectral.final_error:.3g} in {spectral.wall_time:.2f} s")
    return spectral


def _run_refined(spectral: MethodResult, train, held: "_HeldOut", cfg: TrainConfig, budget: float, seed: int,
                 say) -> MethodResult:
    """The spectral estimate refined by BPTT for the rest of the budget."""
    refined = MethodResult("spectral+refine", settings={"optimizer": cfg.optimizer})
    refined.times, refined.errors = [spectral.wall_time], [spectral.final_error]
    refined.model, refined.wall_time, refined.final_error = spectral.model, spectral.wall_time, spectral.final_error
    if spectral.model is None or budget <= spectral.wall_time:
        refined.note = "no refinement (spectral fit failed or used the budget)"
        return refined
    say("refinement")
    try:
        model, hist = refine(spectral.model, *train, cfg.replace(time_budget=budget - spectral.wall_time,
                                                                  monitor=_monitor_into(refined, held,
                                                                                        spectral.wall_time)),
                             random_state=seed)
    except SpectralRNNError as exc:  # a start that cannot be stabilised on the training inputs
        refined.note = f"refinement failed: {exc}"
        say(f"spectral+refine: {refined.note}")
        return refined
    # the stability check of the start ran before the refinement's clock: count it
    refined.times[1:] = [t + hist.stabilization_seconds for t in refined.times[1:]]
    refined.model = model
    refined.diverged = hist.diverged
    refined.wall_time = max(spectral.wall_time + hist.stabilization_seconds + max(hist.time[-1], hist.seconds),
                            refined.times[-1])
    if hist.optimizer == "adam":
        refined.settings.update(optimizer="adam", lr=cfg.lr, batch=cfg.batch_size)
    else:
        refined.settings["optimizer"] = hist.optimizer
    refined.settings["epochs"] = hist.epoch[-1]
    refined.settings["stop"] = hist.stop_reason
    if hist.refit_epochs:
        refined.settings["refit_epochs"] = hist.refit_epochs
    if hist.stabilized:
        refined.note = f"start stabilised: U x {hist.stabilization.factor:.3g}"
    refined.final_error = held.model_error(model)
    refined.times.append(refined.wall_time)
    refined.errors.append(refined.final_error)
    say(f"spectral+refine: error {refined.final_error:.3g} after {refined.wall_time:.1f} s ({hist.stop_reason})")
    return refined


def _run_baseline(spec: ModelKind, hidden_size, f, train, held: "_HeldOut", cfg: TrainConfig, scale: float,
                  seed: int, budget: float, random_state: int, say) -> MethodResult:
    """One BPTT run of the baseline grid from random initialisation."""
    run = MethodResult("bptt", settings={"lr": float(cfg.lr), "init_scale": float(scale), "seed": seed,
                                         "batch": cfg.batch_size})
    model, hist = train_bptt(*train, hidden_size=hidden_size, activation=f, init_scale=scale,
                             config=cfg.replace(time_budget=budget, monitor=_monitor_into(run, held, 0.0)),
                             random_state=random_state, kind=spec.name)
    run.model = model
    run.diverged = hist.diverged
    run.wall_time = max(hist.time[-1], run.times[-1] if run.times else 0.0)
    run.settings["stop"] = hist.stop_reason
    run.final_error = held.model_error(model)
    run.times.append(run.wall_time)
    run.errors.append(run.final_error)
    say(f"bptt lr={cfg.lr:g} scale={scale:g} seed={seed}: error {run.final_error:.3g} "
        f"(best {run.best_error:.3g}) after {run.wall_time:.1f} s ({hist.stop_reason})")
    return run


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return list(range(check_positive_int(seeds, "seeds")))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)):
        raise InputError(f"seeds must be a positive integer or a sequence of non-negative integer seeds, got {seeds!r:.60}")
    return [check_nonnegative_int(s, "each seed") for s in seeds]


def _positive_list(values, name: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InputError(f"{name} must be a sequence of positive numbers, got {values!r:.60}")
    return [check_real(v, f"each of {name}", low=0.0, low_open=True) for v in values]


def _plot_format(path) -> str:
    """The image format of ``path`` from its extension; :class:`InputError` when matplotlib is
    missing or cannot write that format."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'spectral-rnn[plot]'") from None
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if ext not in supported:
        raise InputError(f"cannot plot to {path}: the extension {'.' + ext if ext else '(none)'} is not an image format "
                         f"matplotlib writes (use one of {', '.join('.' + e for e in sorted(supported))})")
    return ext


def check_plot_path(path, read_paths=()) -> None:
    """Raise :class:`InputError` unless a plot can be written at ``path`` (matplotlib present, a
    supported extension, a writable regular-file path that is not one of ``read_paths``).
    Call it before long work."""
    _plot_format(path)
    check_output_path(path, read_paths)


def plot_comparison(comp: Comparison, path: str, title: str | None = None) -> str:
    """Held-out error against wall time (log scales) for every method; returns ``path``.

    The file is written atomically (a temporary file, then a rename): a failed write leaves
    an existing file at ``path`` as it was.
    """
    fmt = _plot_format(path)
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot is never touched

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    tmin = 1e-2

    def xy(res):
        pts = [(max(t, tmin), e) for t, e in zip(res.times, res.errors) if math.isfinite(e) and e > 0]
        return [p[0] for p in pts], [p[1] for p in pts]

    for run in comp.bptt_runs:
        if run is comp.bptt:
            continue
        x, y = xy(run)
        if x:
            ax.plot(x, y, color="0.75", lw=0.8)
    x, y = xy(comp.bptt)
    s = comp.bptt.settings
    label = f"BPTT from random init (best: lr={s.get('lr'):g}, scale={s.get('init_scale'):g}); grey: other runs"
    ax.plot(x, y, color="C3", lw=1.8, label=label)
    x, y = xy(comp.refined)
    ax.plot(x, y, color="C0", lw=1.8, label="spectral + refinement")
    x, y = xy(comp.spectral)
    ax.plot(x, y, "o", color="C2", ms=7, label="spectral estimate")
    if math.isfinite(comp.target) and comp.target > 0:
        ax.axhline(comp.target, color="k", ls=":", lw=1, label="target (baseline's best)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi > 10:  # divergent excursions of some runs would squash the interesting range
        ax.set_ylim(lo, 10)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel(f"held-out relative MSE\n(vs {comp.reference})")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    try:
        _atomic_write(path, lambda fh: fig.savefig(fh, format=fmt))
    except OSError:
        raise
    except (ValueError, RuntimeError) as exc:  # a format the backend could not render after all
        raise InputError(f"could not write the plot to {path}: {' '.join(str(exc).split())[:200]}") from None
    return path
