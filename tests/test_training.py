"""The training settings and the loop's policies, each on its own (spectral_rnn.refine)."""

import math

import numpy as np
import pytest
import torch

from spectral_rnn import InputError
from spectral_rnn.refine import (
    BPTT_DEFAULTS,
    LBFGS_MAX_STEPS,
    REFINE_DEFAULTS,
    DivergenceRecovery,
    EarlyStopping,
    LrPlateau,
    TrainConfig,
    TrainingClock,
)


def _module():
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)


def test_config_defaults_replace_and_checks():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.batch_size, cfg.max_epochs, cfg.patience) == (3e-4, 1024, 100, 10)
    assert (BPTT_DEFAULTS.lr, BPTT_DEFAULTS.batch_size) == (3e-3, 128)
    assert cfg.replace(lr=1e-2).lr == 1e-2 and cfg.lr == 3e-4  # a copy
    assert TrainConfig(dtype="float64").checked().dtype == torch.float64
    with pytest.raises(InputError, match="unknown training setting"):
        cfg.replace(learning_rate=1.0)
    for bad in (dict(lr=0.0), dict(batch_size=True), dict(patience=0), dict(val_fraction=1.0),
                dict(max_restarts=-1), dict(time_budget=0.0), dict(dtype="int8")):
        with pytest.raises(InputError):
            cfg.replace(**bad).checked()


def test_optimizer_rule_by_training_steps():
    """refine's "auto": full-batch L-BFGS up to LBFGS_MAX_STEPS training steps, Adam above; the
    baseline's settings and plain TrainConfig() stay Adam whatever the data size."""
    assert (REFINE_DEFAULTS.optimizer, REFINE_DEFAULTS.refit) == ("auto", True)
    assert (REFINE_DEFAULTS.lr, REFINE_DEFAULTS.batch_size) == (3e-4, 1024)  # Adam's, above the threshold
    assert LBFGS_MAX_STEPS == 500_000
    assert REFINE_DEFAULTS.resolved_optimizer(100_000) == "lbfgs"
    assert REFINE_DEFAULTS.resolved_optimizer(LBFGS_MAX_STEPS) == "lbfgs"
    assert REFINE_DEFAULTS.resolved_optimizer(LBFGS_MAX_STEPS + 1) == "adam"
    assert REFINE_DEFAULTS.replace(lbfgs_max_steps=10).resolved_optimizer(11) == "adam"
    for cfg in (TrainConfig(), BPTT_DEFAULTS):
        assert cfg.optimizer == "adam" and not cfg.refit
        assert cfg.resolved_optimizer(1) == cfg.resolved_optimizer(10**9) == "adam"
    assert TrainConfig(optimizer="LBFGS").checked().optimizer == "lbfgs"
    for bad in (dict(optimizer="sgd"), dict(optimizer=None), dict(refit=1), dict(lbfgs_max_steps=-1)):
        with pytest.raises(InputError):
            TrainConfig().replace(**bad).checked()


def test_early_stopping_keeps_the_best_weights_and_counts_patience():
    mod = _module()
    stop = EarlyStopping(patience=2)
    stop.start(1.0, mod)
    with torch.no_grad():
        mod.weight.fill_(7.0)
    assert stop.update(1, 0.5, mod) and stop.best == 0.5 and stop.best_epoch == 1
    with torch.no_grad():
        mod.weight.fill_(-3.0)
    assert not stop.update(2, 0.5, mod)  # equal is no improvement
    assert not stop.should_stop
    assert not stop.update(3, 0.9, mod) and stop.should_stop
    stop.restore(mod)
    assert torch.all(mod.weight == 7.0) and stop.best_epoch == 1
    fresh = EarlyStopping(1)
    fresh.start(math.nan, mod)  # a non-finite start is beaten by anything finite
    assert fresh.best == math.inf and fresh.update(1, 1e9, mod)


def test_lr_plateau_halves_after_patience_and_resets_on_improvement():
    opt = torch.optim.Adam(_module().parameters(), lr=1.0)
    plateau = LrPlateau(patience=2)
    assert not plateau.update(False, opt) and opt.param_groups[0]["lr"] == 1.0
    assert not plateau.update(True, opt)  # an improvement resets the count
    assert not plateau.update(False, opt)
    assert plateau.update(False, opt) and opt.param_groups[0]["lr"] == 0.5
    assert not plateau.update(False, opt) and plateau.update(False, opt) and opt.param_groups[0]["lr"] == 0.25


def test_divergence_recovery_restores_best_halves_rate_then_gives_up():
    mod = _module()
    best = EarlyStopping(5)
    best.start(1.0, mod)
    opt = torch.optim.Adam(mod.parameters(), lr=0.1, weight_decay=0.01)
    rec = DivergenceRecovery(max_restarts=2)
    for k in (1, 2):
        with torch.no_grad():
            mod.weight.fill_(math.nan)
        opt = rec.recover(mod, best, opt)
        assert opt is not None and opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**k)
        assert isinstance(opt, torch.optim.Adam) and opt.defaults["weight_decay"] == 0.01
        assert torch.isfinite(mod.weight).all() and rec.count == k
    assert rec.recover(mod, best, opt) is None and rec.count == 3


def test_clock_excludes_monitor_time():
    now = [100.0]
    seen = []

    def monitor(module, elapsed):
        seen.append(elapsed)
        now[0] += 10.0  # the monitor takes 10 s

    clock = TrainingClock(monitor, every=1.0, timer=lambda: now[0])
    clock.monitor(None)
    now[0] += 0.5  # half a second of training
    clock.tick(None)  # not yet due
    assert seen == [0.0] and clock.elapsed() == pytest.approx(0.5)
    now[0] += 0.7
    clock.tick(None)  # due: 1.2 s since the last call
    assert seen == pytest.approx([0.0, 1.2]) and clock.elapsed() == pytest.approx(1.2)
    assert clock.excluded == 20.0 and clock.over(1.0) and not clock.over(2.0) and not clock.over(None)
    quiet = TrainingClock(timer=lambda: now[0])
    now[0] += 3.0
    quiet.tick(None)
    assert quiet.elapsed() == pytest.approx(3.0)


def test_loop_excludes_monitor_time_from_history(small_refine_data):
    """fit_module's times and the monitor's ``elapsed`` leave out the monitor's own (slow) calls."""
    import time

    from spectral_rnn.refine import refine

    truth, X, Y = small_refine_data
    calls = []

    def slow_monitor(module, elapsed):
        calls.append(elapsed)
        time.sleep(0.4)

    t0 = time.perf_counter()
    _, hist = refine(truth, X, Y, max_epochs=2, patience=50, refit=False, monitor=slow_monitor, random_state=0)
    wall = time.perf_counter() - t0
    assert len(calls) == 3  # start and after each epoch
    # each epoch of this small problem trains in far less than the 0.4 s a monitor call sleeps
    assert all(b - a < 0.3 for a, b in zip(calls, calls[1:])), calls
    assert hist.time[-1] < wall - 3 * 0.4, (hist.time, wall)
    np.testing.assert_allclose(hist.time[1:], calls[1:], atol=0.05)
