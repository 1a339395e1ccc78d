"""Sequence labelling with PyTorch recurrent modules: model, trainer, tagger file.

* :class:`SequenceClassifier`: any ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (``batch_first=True``,
  uni- or bidirectional) followed by a ``Linear`` read-out with bias, run on packed
  ragged batches, giving per-step logits.
* :func:`make_classifier`: such a module at PyTorch's default initialisation.
* :func:`train_classifier`: Adam + cross-entropy with a wall-clock budget (evaluation
  time excluded), early stopping on a development set (best development accuracy
  kept), gradient clipping, and recovery from divergence: a non-finite loss or
  gradient restores the best weights and halves the learning rate. It trains the
  module it is given *as it is* (``random_init=False``: how an already-initialised
  ``nn.RNN`` + ``Linear``, e.g. the spectral start, comes in) or after re-drawing its
  weights with PyTorch's default initialisation (``random_init=True``).
* :func:`fit_readout`: the convex step, the read-out (weights and biases) by
  L2-regularised multinomial logistic regression on fixed hidden states (L-BFGS).
* :func:`predict_proba`, :func:`predict_labels`, :func:`accuracy`: ragged inputs as a
  list of ``(T_i, d_x)`` arrays or a padded ``(n, T, d_x)`` array with ``lengths``.
* :class:`Tagger` (featurizer + tag set + classifier), :func:`train_tagger`,
  :func:`save_tagger` / :func:`load_tagger` (one safetensors file, no pickle).

Predictions are never NaN: the trainer only ever returns weights whose development
evaluation was finite, and the prediction functions map any non-finite logit to a
finite one before the softmax.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ._checks import InputError, check_dtype
from .features import WordFeaturizer, pad_sequences
from .refine import DivergenceRecovery, EarlyStopping, RunLog

__all__ = [
    "SequenceClassifier",
    "make_classifier",
    "TrainHistory",
    "train_classifier",
    "fit_readout",
    "predict_proba",
    "predict_labels",
    "accuracy",
    "encode_tags",
    "Tagger",
    "train_tagger",
    "save_tagger",
    "load_tagger",
    "IGNORE_INDEX",
]

IGNORE_INDEX = -100
FORMAT = "spectral-rnn-tagger"
FORMAT_VERSION = "1"
_KINDS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# ------------------------------------------------------------------ the module
class SequenceClassifier(nn.Module):
    """``rnn`` (batch-first ``nn.RNN``/``LSTM``/``GRU``) then ``readout`` (``nn.Linear``), per step.

    ``forward(X, lengths)`` takes ``X`` ``(n, T, d_x)`` and ``lengths`` ``(n,)`` (CPU
    int64 or None = all ``T``) and returns logits ``(n, T, n_classes)``; padded steps
    give zeros before the read-out's bias and must be ignored (masked by ``lengths``).
    The sequences are packed, so a backward direction starts at each sequence's own end.
    """

    def __init__(self, rnn: nn.RNNBase, readout: nn.Linear):
        super().__init__()
        if not isinstance(rnn, nn.RNNBase):
            raise InputError(f"rnn must be a torch.nn.RNN, LSTM or GRU, got {type(rnn).__name__}")
        if not rnn.batch_first:
            raise InputError("rnn must be built with batch_first=True")
        if not isinstance(readout, nn.Linear):
            raise InputError(f"readout must be a torch.nn.Linear, got {type(readout).__name__}")
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        if getattr(rnn, "proj_size", 0):
            width = rnn.proj_size * (2 if rnn.bidirectional else 1)
        if readout.in_features != width:
            raise InputError(f"readout takes {readout.in_features} inputs, the rnn gives {width} per step")
        self.rnn = rnn
        self.readout = readout

    @property
    def input_size(self) -> int:
        return self.rnn.input_size

    @property
    def n_classes(self) -> int:
        return self.readout.out_features

    def hidden_states(self, X: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The RNN's per-step outputs ``(n, T, width)`` (zeros at padded steps)."""
        n, T = X.shape[:2]
        if lengths is None:
            H, _ = self.rnn(X)
            return H
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        packed = pack_padded_sequence(X, lengths, batch_first=True, enforce_sorted=False)
        H, _ = self.rnn(packed)
        H, _ = pad_packed_sequence(H, batch_first=True, total_length=T)
        return H

    def forward(self, X: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.readout(self.hidden_states(X, lengths))

    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-draw all weights with PyTorch's default initialisation (seeded if ``seed`` is given)."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.rnn.reset_parameters()
            self.readout.reset_parameters()


def make_classifier(kind: str, input_size: int, hidden_size: int, n_classes: int, bidirectional: bool = True,
                    num_layers: int = 1, nonlinearity: str = "tanh", seed: int | None = 0,
                    bias: bool = True) -> SequenceClassifier:
    """A :class:`SequenceClassifier` at PyTorch's default initialisation (seeded).

    ``kind`` "rnn" (``nn.RNN(nonlinearity=...)``), "lstm" or "gru". ``bias=False`` leaves
    the recurrent layer without biases (as :class:`spectral_rnn.torch_export` exports a
    tanh model); the read-out always has a bias.
    """
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        kw = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        rnn = _KINDS[kind](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                           bidirectional=bidirectional, bias=bias, **kw)
        readout = nn.Linear(hidden_size * (2 if bidirectional else 1), n_classes)
    return SequenceClassifier(rnn, readout)


def _module_config(module: SequenceClassifier) -> dict:
    rnn = module.rnn
    kind = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}[type(rnn)]
    cfg = {"kind": kind, "input_size": rnn.input_size, "hidden_size": rnn.hidden_size,
           "num_layers": rnn.num_layers, "bidirectional": bool(rnn.bidirectional),
           "n_classes": module.readout.out_features, "bias": bool(rnn.bias)}
    if kind == "rnn":
        cfg["nonlinearity"] = rnn.nonlinearity
    return cfg


# ------------------------------------------------------------------ data
def _as_batch(X, lengths=None, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    """A list of ``(T_i, d)`` arrays or a padded ``(n, T, d)`` array (+ lengths) -> padded float32, lengths."""
    if isinstance(X, (list, tuple)):
        if lengths is not None:
            raise InputError(f"{name}: give lengths only with a padded array")
        if not X:
            raise InputError(f"{name} holds no sequence")
        arr, lengths = pad_sequences(X, dtype=np.float32)
        if arr.ndim != 3:
            raise InputError(f"{name} must hold (T_i, d) arrays")
    else:
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim != 3 or 0 in arr.shape:
            raise InputError(f"{name} must have shape (n, T, d), got {arr.shape}")
        n, T = arr.shape[:2]
        if lengths is None:
            lengths = np.full(n, T, dtype=np.int64)
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu" or lengths.min() < 1 or lengths.max() > T:
            raise InputError(f"{name}: lengths must be {n} integers in [1, {T}]")
        lengths = lengths.astype(np.int64)
    mask = np.arange(arr.shape[1])[None, :] < lengths[:, None]
    if not np.isfinite(arr[mask]).all():
        raise InputError(f"{name} contains NaN or infinite values")
    arr = np.where(mask[..., None], arr, 0.0).astype(np.float32)
    return arr, lengths


def _as_labels(y, n: int, T: int, lengths: np.ndarray, name: str = "y") -> np.ndarray:
    """A list of 1-D int arrays or a padded ``(n, T)`` int array -> padded int64, IGNORE_INDEX past lengths."""
    if isinstance(y, (list, tuple)):
        if len(y) != n:
            raise InputError(f"{name} has {len(y)} sequences, inputs have {n}")
        out = np.full((n, T), IGNORE_INDEX, dtype=np.int64)
        for i, s in enumerate(y):
            s = np.asarray(s, dtype=np.int64)
            if s.shape != (lengths[i],):
                raise InputError(f"{name}[{i}] has {s.size} labels for {lengths[i]} steps")
            out[i, : len(s)] = s
        return out
    arr = np.asarray(y)
    if arr.shape[:2] != (n, T) or arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be integer labels of shape ({n}, {T})")
    arr = arr.astype(np.int64).copy()
    arr[np.arange(T)[None, :] >= lengths[:, None]] = IGNORE_INDEX
    return arr


def encode_tags(tags: Sequence[Sequence[str]], tagset: Sequence[str]) -> list[np.ndarray]:
    """Tag strings -> index arrays; a tag outside ``tagset`` becomes :data:`IGNORE_INDEX`."""
    index = {t: i for i, t in enumerate(tagset)}
    return [np.array([index.get(t, IGNORE_INDEX) for t in s], dtype=np.int64) for s in tags]


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def _logits(module: SequenceClassifier, X: np.ndarray, lengths: np.ndarray, batch_size: int = 256) -> np.ndarray:
    module.eval()
    order = np.argsort(-lengths, kind="stable")  # similar lengths together: less padding
    n, T = X.shape[:2]
    out = np.zeros((n, T, module.n_classes), dtype=np.float32)
    dtype = next(module.parameters()).dtype
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        Tb = int(lengths[idx].max())
        xb = torch.from_numpy(X[idx, :Tb]).to(dtype)
        z = module(xb, torch.from_numpy(lengths[idx]))
        z = torch.nan_to_num(z.float(), nan=0.0, posinf=1e4, neginf=-1e4)
        out[idx, :Tb] = z.numpy()
    return out


def predict_proba(module: SequenceClassifier, X, lengths=None) -> list[np.ndarray]:
    """Class probabilities, one ``(T_i, n_classes)`` array per sequence (finite, rows sum to 1)."""
    Xp, L = _as_batch(X, lengths)
    z = _logits(module, Xp, L)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return [p[i, : L[i]] for i in range(len(L))]


def predict_labels(module: SequenceClassifier, X, lengths=None) -> list[np.ndarray]:
    """Most probable class per step, one int64 array per sequence."""
    Xp, L = _as_batch(X, lengths)
    z = _logits(module, Xp, L)
    return [z[i, : L[i]].argmax(axis=-1).astype(np.int64) for i in range(len(L))]


def _acc_loss(module, X, Y, L) -> tuple[float, float]:
    z = _logits(module, X, L)
    mask = Y != IGNORE_INDEX
    counted = np.arange(X.shape[1])[None, :] < L[:, None]
    n = int(counted.sum())
    pred = z.argmax(-1)
    correct = int(((pred == Y) & mask).sum())
    zt = torch.from_numpy(z[mask])
    loss = float(nn.functional.cross_entropy(zt, torch.from_numpy(Y[mask]), reduction="sum")) if mask.any() else 0.0
    return correct / max(n, 1), loss / max(int(mask.sum()), 1)


def accuracy(module: SequenceClassifier, X, y, lengths=None) -> float:
    """Share of steps whose most probable class is the label; an unknown label (IGNORE_INDEX) counts as an error."""
    Xp, L = _as_batch(X, lengths)
    Y = _as_labels(y, Xp.shape[0], Xp.shape[1], L)
    return _acc_loss(module, Xp, Y, L)[0]


# ------------------------------------------------------------------ training
@dataclass
class TrainHistory(RunLog):
    """One row per development evaluation (row 0: the start).

    ``time``: training seconds (evaluation excluded) at the evaluation; ``step``
    minibatch updates; ``epoch`` (fractional); ``train_loss`` mean cross-entropy since
    the last evaluation (NaN at row 0); ``dev_accuracy``, ``dev_loss``; ``lr``.
    ``best`` the row whose weights were returned; ``stop_reason`` "time_budget",
    "max_epochs", "early_stopping" or "diverged"; ``divergences`` non-finite steps met;
    ``eval_time`` total seconds spent evaluating (not in ``time``).
    """

    step: list[int] = field(default_factory=list)
    dev_accuracy: list[float] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)
    best: int = 0
    eval_time: float = 0.0

    @property
    def best_dev_accuracy(self) -> float:
        return self.dev_accuracy[self.best]

    def best_at(self, seconds: float) -> float:
        """Best development accuracy among evaluations made within ``seconds`` of training."""
        vals = [a for t, a in zip(self.time, self.dev_accuracy) if t <= seconds + 1e-9]
        return max(vals) if vals else float("nan")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("time", "step", "epoch", "train_loss", "dev_accuracy", "dev_loss",
                                              "lr", "best", "stop_reason", "divergences", "eval_time")}


def train_classifier(
    module: SequenceClassifier | tuple[nn.RNNBase, nn.Linear],
    X_train,
    y_train,
    X_dev,
    y_dev,
    lengths_train=None,
    lengths_dev=None,
    *,
    random_init: bool = False,
    budget_s: float | None = 60.0,
    max_epochs: int = 1000,
    lr: float = 2e-3,
    batch_size: int = 32,
    clip_norm: float = 5.0,
    weight_decay: float = 0.0,
    patience: int = 10,
    eval_every_s: float = 5.0,
    first_eval_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    max_restarts: int = 5,
    seed: int = 0,
    callback: Callable[[TrainHistory], None] | None = None,
) -> TrainHistory:
    """Train ``module`` in place by Adam on the per-step cross-entropy; returns a :class:`TrainHistory`.

    Inputs: lists of ``(T_i, d_x)`` arrays with lists of int label arrays, or padded
    arrays with ``lengths_*``. Labels equal to :data:`IGNORE_INDEX` are left out of the
    loss (and count as errors in the development accuracy).

    ``module``: a :class:`SequenceClassifier` or a pair ``(rnn, readout)`` (a batch-first
    ``nn.RNN``/``LSTM``/``GRU`` and an ``nn.Linear``), trained in place either way.
    ``random_init=False`` trains the given weights as they are (a spectral start);
    ``True`` first re-draws them by PyTorch's default initialisation with ``seed``.
    ``budget_s``: seconds of training (minibatch updates only; evaluation excluded);
    ``None`` = no limit. The development set is evaluated at the start, every
    ``eval_every_s`` seconds of training (on a fixed grid: after the minibatch that crosses
    each grid time; the first time after ``first_eval_s``, default
    ``eval_every_s``: a start whose fitting took ``f`` seconds passes
    ``eval_every_s - f % eval_every_s`` to be evaluated at the same wall-clock times as a
    random start) and at the end; ``clock``: the seconds counted (wall clock by default;
    ``time.process_time`` counts the process's CPU seconds, the measure that another
    process on a shared machine does not change); the best
    development accuracy's weights are restored at the end; ``patience``: stop after
    that many evaluations without improvement. A minibatch whose loss or gradient is
    not finite restores the best weights and halves the learning rate (fresh Adam
    state); after ``max_restarts`` of those training stops ("diverged"), the best
    weights kept. The minibatch order is seeded by ``seed``.
    """
    if isinstance(module, (tuple, list)) and len(module) == 2:
        module = SequenceClassifier(*module)  # (rnn, readout): trained in place all the same
    if not isinstance(module, SequenceClassifier):
        raise InputError(f"module must be a SequenceClassifier or (rnn, readout), got {type(module).__name__}")
    Xt, Lt = _as_batch(X_train, lengths_train, "X_train")
    Yt = _as_labels(y_train, Xt.shape[0], Xt.shape[1], Lt, "y_train")
    Xd, Ld = _as_batch(X_dev, lengths_dev, "X_dev")
    Yd = _as_labels(y_dev, Xd.shape[0], Xd.shape[1], Ld, "y_dev")
    for name, arr in (("X_train", Xt), ("X_dev", Xd)):
        if arr.shape[2] != module.input_size:
            raise InputError(f"{name} has {arr.shape[2]} features, the module expects {module.input_size}")
    for name, Y in (("y_train", Yt), ("y_dev", Yd)):
        if Y.max() >= module.n_classes or ((Y < 0) & (Y != IGNORE_INDEX)).any():
            raise InputError(f"{name} holds labels outside [0, {module.n_classes})")
    if not (Yt != IGNORE_INDEX).any():
        raise InputError("y_train has no usable label")
    if not (isinstance(eval_every_s, (int, float)) and 0 < eval_every_s < math.inf):
        raise InputError(f"eval_every_s must be a positive finite number of seconds, got {eval_every_s!r}")
    if first_eval_s is not None and not (isinstance(first_eval_s, (int, float)) and 0 <= first_eval_s < math.inf):
        raise InputError(f"first_eval_s must be a finite number >= 0, got {first_eval_s!r}")
    if random_init:
        module.reset_parameters(seed)
    dtype = next(module.parameters()).dtype
    rng = np.random.default_rng(seed)
    hist = TrainHistory()
    n = Xt.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)

    def make_opt(rate: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(module.parameters(), lr=rate, weight_decay=weight_decay)

    opt = make_opt(float(lr))
    train_clock = 0.0
    step = 0
    loss_sum, loss_n = 0.0, 0
    # the policies of spectral_rnn.refine: the best development accuracy (as its negative, a loss)
    # and its weights, stopping after more than `patience` evaluations without improvement
    stopper, recovery = EarlyStopping(patience + 1), DivergenceRecovery(max_restarts)

    def evaluate() -> bool:
        """Evaluate on dev, record, keep the best; returns True to stop early."""
        nonlocal loss_sum, loss_n
        t0 = clock()
        acc, dloss = _acc_loss(module, Xd, Yd, Ld)
        hist.time.append(train_clock)
        hist.step.append(step)
        hist.epoch.append(step / steps_per_epoch)
        hist.train_loss.append(loss_sum / loss_n if loss_n else float("nan"))
        hist.dev_accuracy.append(acc)
        hist.dev_loss.append(dloss)
        hist.lr.append(opt.param_groups[0]["lr"])
        loss_sum, loss_n = 0.0, 0
        if stopper.update(len(hist.time) - 1, -acc if math.isfinite(dloss) else math.inf, module):
            hist.best = len(hist.time) - 1
        hist.eval_time += clock() - t0
        if callback is not None:
            callback(hist)
        return stopper.should_stop

    evaluate()
    if stopper.state is None:  # the start itself is not finite: nothing safe to return to
        raise InputError("the starting module gives non-finite outputs on the development set")
    next_eval = eval_every_s if first_eval_s is None else float(first_eval_s)
    stop = ""
    module.train()
    for epoch in range(max_epochs):
        perm = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            t0 = clock()
            module.train()
            Tb = int(Lt[idx].max())
            xb = torch.from_numpy(Xt[idx, :Tb]).to(dtype)
            yb = torch.from_numpy(Yt[idx, :Tb])
            z = module(xb, torch.from_numpy(Lt[idx]))
            loss = nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), yb.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                gnorm = nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
                ok = bool(torch.isfinite(gnorm))
            if ok:
                opt.step()
                loss_sum += float(loss.detach())
                loss_n += 1
            else:
                new_opt = recovery.recover(module, stopper, opt)
                hist.divergences = recovery.count
                if new_opt is None:
                    stopper.restore(module)
                    for g in opt.param_groups:  # the history shows every halving, the last one too
                        g["lr"] *= recovery.factor
                    stop = "diverged"
                else:
                    opt = new_opt
            step += 1
            train_clock += clock() - t0
            if stop:
                break
            if budget_s is not None and train_clock >= budget_s:
                stop = "time_budget"
                break
            if train_clock >= next_eval:
                while next_eval <= train_clock:  # a fixed grid: no drift from the minibatch that crosses it
                    next_eval += eval_every_s
                if evaluate():
                    stop = "early_stopping"
                    break
        if stop:
            break
    else:
        stop = "max_epochs"
    if stop != "early_stopping" and hist.step[-1] != step:
        evaluate()
    hist.stop_reason = stop
    stopper.restore(module)
    module.eval()
    return hist


def fit_readout(module: SequenceClassifier, X, y, lengths=None, l2: float = 1e-4, max_iter: int = 100,
                max_steps: int = 200_000, seed: int = 0, dtype: torch.dtype = torch.float32) -> float:
    """Fit the read-out (weights and bias) by multinomial logistic regression on fixed hidden states.

    A convex problem (L2 penalty ``l2`` on the weights), solved by L-BFGS on at most
    ``max_steps`` labelled steps (a seeded sample of them beyond that), in ``dtype``
    (float32 by default: on the porttinari spectral start it is 2.6x faster than float64 and
    ends at the same loss to 4 digits). The RNN is left as it is; returns the final training
    cross-entropy (computed in float64). This is the step that turns a spectral estimate of
    the recurrent part into a classifier.
    """
    dtype = check_dtype(dtype)
    Xp, L = _as_batch(X, lengths)
    Y = _as_labels(y, Xp.shape[0], Xp.shape[1], L)
    with torch.no_grad():
        module.eval()
        mdtype = next(module.parameters()).dtype
        H = []
        for i in range(0, len(L), 256):
            Tb = int(L[i : i + 256].max())
            h = module.hidden_states(torch.from_numpy(Xp[i : i + 256, :Tb]).to(mdtype), torch.from_numpy(L[i : i + 256]))
            m = torch.from_numpy(Y[i : i + 256, :Tb] != IGNORE_INDEX)
            H.append((h[m], torch.from_numpy(Y[i : i + 256, :Tb])[m]))
        Hs = torch.cat([h for h, _ in H]).to(dtype)
        Ys = torch.cat([t for _, t in H])
    if len(Ys) == 0:
        raise InputError("no labelled step to fit the read-out on")
    if len(Ys) > max_steps:
        keep = torch.from_numpy(np.random.default_rng(seed).choice(len(Ys), max_steps, replace=False))
        Hs, Ys = Hs[keep], Ys[keep]
    Hs = torch.nan_to_num(Hs)
    has_bias = module.readout.bias is not None
    W = module.readout.weight.detach().to(dtype).clone().requires_grad_(True)
    b = (module.readout.bias.detach().to(dtype).clone() if has_bias
         else torch.zeros(W.shape[0], dtype=dtype)).requires_grad_(has_bias)
    optim = torch.optim.LBFGS([W, b] if has_bias else [W], lr=1.0, max_iter=max_iter,
                              line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        loss = nn.functional.cross_entropy(Hs @ W.T + b, Ys) + l2 * (W * W).sum()
        loss.backward()
        return loss

    optim.step(closure)
    if torch.isfinite(W).all() and torch.isfinite(b).all():
        with torch.no_grad():
            module.readout.weight.copy_(W.to(module.readout.weight.dtype))
            if has_bias:
                module.readout.bias.copy_(b.to(module.readout.bias.dtype))
    with torch.no_grad():
        bias = module.readout.bias.double() if has_bias else 0.0
        return float(nn.functional.cross_entropy(Hs.double() @ module.readout.weight.double().T + bias, Ys))


# ------------------------------------------------------------------ the tagger
@dataclass
class Tagger:
    """A part-of-speech tagger: featurizer, tag set and :class:`SequenceClassifier`.

    ``config`` is a JSON-able dict of how it was trained (recorded in the file).
    """

    featurizer: WordFeaturizer
    tags: list[str]
    module: SequenceClassifier
    config: dict = field(default_factory=dict)

    def features(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return self.featurizer.transform(sentences)

    def predict_proba(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One ``(T_i, n_tags)`` probability array per sentence (columns in ``tags`` order)."""
        return predict_proba(self.module, self.features(sentences))

    def predict(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """One list of tags per sentence (lists of word forms)."""
        return [[self.tags[j] for j in p] for p in predict_labels(self.module, self.features(sentences))]

    def evaluate(self, sentences: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
        """Accuracy on gold tags; a gold tag outside ``tags`` counts as an error and is reported.

        Returns ``{"accuracy", "n_tokens", "n_correct", "unseen_tags": {tag: count}}``; tokens
        whose gold tag is ``'_'`` (untagged) are left out.
        """
        pred = self.predict(sentences)
        known = set(self.tags)
        n = correct = 0
        unseen: dict[str, int] = {}
        if len(gold) != len(pred):
            raise InputError(f"{len(gold)} gold tag sequences for {len(pred)} sentences")
        for i, (ps, gs) in enumerate(zip(pred, gold)):
            if len(ps) != len(gs):
                raise InputError(f"sentence {i} has {len(gs)} gold tags for {len(ps)} words")
            for p, g in zip(ps, gs):
                if g in ("_", ""):
                    continue
                n += 1
                if g not in known:
                    unseen[g] = unseen.get(g, 0) + 1
                correct += p == g
        return {"accuracy": correct / n if n else float("nan"), "n_tokens": n, "n_correct": correct,
                "unseen_tags": dict(sorted(unseen.items()))}


def train_tagger(
    train_words: Sequence[Sequence[str]],
    train_tags: Sequence[Sequence[str]],
    dev_words: Sequence[Sequence[str]],
    dev_tags: Sequence[Sequence[str]],
    *,
    kind: str = "rnn",
    hidden_size: int = 64,
    budget_s: float = 60.0,
    seed: int = 0,
    featurizer: WordFeaturizer | None = None,
    module: SequenceClassifier | None = None,
    start: str = "random",
    start_kw: dict | None = None,
    log: Callable[[str], None] | None = None,
    **train_kw,
) -> tuple[Tagger, TrainHistory]:
    """Fit the featurizer on the training words, then train a bidirectional tagger.

    ``module``: an already-initialised :class:`SequenceClassifier` to train as it is (its
    input size must be the featurizer's ``n_features``, its classes the sorted training
    tag set); ``None``: a ``kind`` module (``"rnn"`` = BiRNN(tanh)) with ``hidden_size``
    units per direction, started by ``start``: ``"random"`` (PyTorch's default
    initialisation) or ``"spectral"`` (:func:`spectral_rnn.tag_start.fit_spectral_start`,
    ``kind="rnn"`` or ``"lstm"``, with ``start_kw`` passed on; its fitting time is charged
    to ``budget_s``). Other keywords go to :func:`train_classifier`.
    """
    if start not in ("random", "spectral"):
        raise InputError(f"start must be 'random' or 'spectral', got {start!r}")
    if start == "spectral" and (module is not None or kind not in ("rnn", "lstm")):
        raise InputError("the spectral start builds a BiRNN(tanh) or a BiLSTM: use kind='rnn' or 'lstm' and no module")
    tags = sorted({t for s in train_tags for t in s if t not in ("_", "")})
    if not tags:
        raise InputError("the training data hold no tag")
    if featurizer is None:
        featurizer = WordFeaturizer(random_state=seed)
    if not hasattr(featurizer, "vectors_"):
        featurizer.fit(train_words)
    Xt = featurizer.transform(train_words)
    Xd = featurizer.transform(dev_words)
    yt = encode_tags(train_tags, tags)
    yd = encode_tags(dev_tags, tags)
    start_cfg: dict = {"start": "given" if module is not None else start}
    train_budget = budget_s
    if module is None and start == "spectral":
        from .tag_start import fit_spectral_start

        clock = train_kw.get("clock", time.perf_counter)
        t0 = clock()
        sp = fit_spectral_start(Xt, yt, len(tags), hidden_size, random_state=seed, kind=kind, **(start_kw or {}))
        fit_s = clock() - t0
        module = sp.module
        start_cfg.update(units=sp.units, fit_s=fit_s)
        if train_budget is not None:
            train_budget = max(float(train_budget) - fit_s, 0.0)
        if log is not None:
            log(f"spectral start fitted in {fit_s:.1f} s (charged to the budget):")
            for line in sp.describe().splitlines():
                log(f"  {line}")
    elif module is None:
        module = make_classifier(kind, featurizer.n_features, hidden_size, len(tags), seed=seed)
    elif module.input_size != featurizer.n_features or module.n_classes != len(tags):
        raise InputError(f"module takes {module.input_size} features to {module.n_classes} classes; "
                         f"the data have {featurizer.n_features} features and {len(tags)} tags")
    def cb(h: TrainHistory) -> None:
        log(f"  {h.time[-1]:6.1f} s  epoch {h.epoch[-1]:5.2f}  dev accuracy {h.dev_accuracy[-1]:.4f}")

    hist = train_classifier(module, Xt, yt, Xd, yd, budget_s=train_budget, seed=seed,
                            callback=cb if log is not None else None, **train_kw)
    config = {"budget_s": budget_s, "seed": seed, "module": _module_config(module), **start_cfg,
              "best_dev_accuracy": hist.best_dev_accuracy, "stop_reason": hist.stop_reason}
    return Tagger(featurizer, tags, module, config), hist


# ------------------------------------------------------------------ the file
def _atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tagger(tagger: Tagger, path: str | os.PathLike) -> None:
    """Write ``tagger`` to one safetensors file (atomic: temporary file + ``os.replace``).

    Tensors: ``featurizer.*`` (word/suffix vectors) and ``model.*`` (the module's state
    dict). Metadata (all JSON strings, sorted keys): ``format``, ``version``, ``tags``,
    ``module`` (kind and sizes), ``config``, ``featurizer.config``, ``featurizer.vocab``,
    ``featurizer.suffixes``. No pickle anywhere.
    """
    from safetensors.torch import save

    arrays, fmeta = tagger.featurizer.to_state()
    tensors = {f"featurizer.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    for k, v in tagger.module.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tags": json.dumps(list(tagger.tags), ensure_ascii=False),
        "module": json.dumps(_module_config(tagger.module), sort_keys=True),
        "config": json.dumps(tagger.config, sort_keys=True, default=float),
    }
    meta.update({f"featurizer.{k}": v for k, v in fmeta.items()})
    _atomic_write_bytes(os.fspath(path), save(tensors, metadata=dict(sorted(meta.items()))))


def load_tagger(path: str | os.PathLike) -> Tagger:
    """Read a file written by :func:`save_tagger`; :class:`InputError` (one line) if it is not one."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise InputError(f"{path} is not a tagger file (safetensors): {' '.join(str(exc).split())}") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is a safetensors file but not a spectral-rnn tagger")
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(f"{path} has tagger format version {meta.get('version')}, this library reads {FORMAT_VERSION}")
    try:
        tags = json.loads(meta["tags"])
        mcfg = json.loads(meta["module"])
        config = json.loads(meta.get("config", "{}"))
        farr = {k[len("featurizer."):]: v.numpy() for k, v in tensors.items() if k.startswith("featurizer.")}
        fmeta = {k[len("featurizer."):]: v for k, v in meta.items() if k.startswith("featurizer.")}
        featurizer = WordFeaturizer.from_state(farr, fmeta)
        module = make_classifier(mcfg["kind"], mcfg["input_size"], mcfg["hidden_size"], mcfg["n_classes"],
                                 bidirectional=mcfg["bidirectional"], num_layers=mcfg["num_layers"],
                                 nonlinearity=mcfg.get("nonlinearity", "tanh"), seed=None,
                                 bias=mcfg.get("bias", True))
        if module.readout.bias is not None and "model.readout.bias" not in tensors:
            module.readout = nn.Linear(module.readout.in_features, module.readout.out_features, bias=False)
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        module.load_state_dict(state)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is a damaged tagger file: {' '.join(str(exc).split())[:200]}") from None
    if len(tags) != module.n_classes or featurizer.n_features != module.input_size:
        raise InputError(f"{path} is a damaged tagger file: sizes disagree")
    module.eval()
    return Tagger(featurizer, tags, module, config)
