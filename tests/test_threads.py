"""The default thread count: the load of other jobs counts, this process's own does not."""

from __future__ import annotations

import math

import pytest
import torch

import spectral_rnn.threads as threads


@pytest.fixture
def samples(monkeypatch):
    """A fresh sample list for own_load (the module's real one is left alone)."""
    s: list[tuple[float, float]] = []
    monkeypatch.setattr(threads, "_SAMPLES", s)
    return s


def _run(samples, rate: float, seconds: float, step: float = 5.0, start: float = 1000.0) -> float:
    """Record a process using ``rate`` cores for ``seconds`` (a call every ``step`` s); the last share."""
    samples.append((start, 0.0))
    share = 0.0
    for k in range(1, int(seconds / step) + 1):
        t = start + k * step
        share = threads.own_load(now=t, cpu=rate * (t - start))
    return share


def test_a_busy_process_counts_itself_as_one_core(samples):
    assert _run(samples, 1.0, 600) == pytest.approx(1.0, abs=1e-3)


def test_a_minute_at_two_cores_is_the_kernel_s_average(samples):
    assert _run(samples, 2.0, 60) == pytest.approx(2 * (1 - math.exp(-1)), rel=1e-9)


def test_an_idle_process_counts_nothing_and_old_work_fades(samples):
    _run(samples, 1.0, 120)
    cpu = 120.0
    share = threads.own_load(now=1000 + 120 + 300, cpu=cpu)  # five minutes idle since
    assert share == pytest.approx(math.exp(-5) * (1 - math.exp(-2)), rel=1e-9)
    assert len(samples) < 40


def test_samples_stay_few(samples):
    _run(samples, 1.0, 3600, step=1.0)  # a fit every second for an hour: kept samples 4 to 5 s apart, 10 minutes
    assert len(samples) <= 10 * threads.LOAD_TAU / (threads.SAMPLE_GAP - 1.0) + 3
    assert samples[-1][0] - samples[0][0] <= 10 * threads.LOAD_TAU + threads.SAMPLE_GAP


def test_default_threads_leave_out_the_process_s_own_load(samples, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "own_load", lambda: 1.0)  # this process kept one core busy
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.1, 1.0, 1.0))
    assert threads.resolve_threads(None) == 2  # the load is this process's: both cores
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.1, 2.0, 2.0))
    assert threads.resolve_threads(None) == 1  # another job holds the second core
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    assert threads.resolve_threads(None) == 1  # at least one
