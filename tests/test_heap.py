"""The heap trims of a fit (spectral_rnn._heap): when they happen, and that the budget adapts."""

from __future__ import annotations

import numpy as np
import pytest

import spectral_rnn._heap as heap


class _Heap:
    """Anonymous resident memory (MB) of a pretend process whose trim hands back all but ``kept``."""

    def __init__(self, rss: float, kept: float) -> None:
        self.rss, self.kept, self.trims = rss, kept, 0

    def read(self) -> float:
        return self.rss

    def trim(self, pad: int) -> None:
        self.trims += 1
        self.rss = self.kept


@pytest.fixture
def fake(monkeypatch):
    """The heap trims act on a :class:`_Heap` instead of this process."""
    h = _Heap(1000.0, 1010.0)
    monkeypatch.setattr(heap, "_MALLOC_TRIM", h.trim)
    monkeypatch.setattr(heap, "anon_rss_mb", h.read)
    monkeypatch.setattr(heap, "_ENABLED", True)
    return h


def test_no_trim_outside_a_fit(fake):
    fake.rss = 5000.0
    for _ in range(3 * heap.EVERY):
        heap.trim_heap()
    assert fake.trims == 0


def test_sliced_data_trims_every_16_chunks(fake):
    with heap.trimming(True):
        for _ in range(3 * heap.EVERY + 5):
            heap.trim_heap()
    assert fake.trims == 3


def test_in_memory_trims_only_beyond_the_budget(fake):
    with heap.trimming(False):  # base 1000 MB
        for rss in (1010, 1060, 1000 + heap.HEAP_BUDGET_MB):  # within the budget
            fake.rss = rss
            heap.trim_heap()
        assert fake.trims == 0
        fake.rss = 1000 + heap.HEAP_BUDGET_MB + 1  # beyond it: one trim, down to 1010
        heap.trim_heap()
        assert fake.trims == 1 and fake.rss == 1010
        assert heap._STATE[0].budget == heap.HEAP_BUDGET_MB  # 10 MB kept: the budget stays
        heap.trim_heap()
        assert fake.trims == 1


def test_budget_doubles_when_the_working_set_is_that_large(fake):
    fake.kept = 1100.0  # a trim leaves 100 MB in use, more than half the 128 MB budget
    with heap.trimming(False):
        fake.rss = 1200.0
        heap.trim_heap()
        assert fake.trims == 1 and heap._STATE[0].budget == pytest.approx(200.0)
        for rss in (1150.0, 1200.0):  # within the doubled budget: no trim, so no page faults at every chunk
            fake.rss = rss
            heap.trim_heap()
        assert fake.trims == 1
        fake.rss = 1201.0
        heap.trim_heap()
    assert fake.trims == 2


def test_trimming_blocks_nest_and_restore(fake):
    with heap.trimming(True):
        with heap.trimming(False):
            assert heap._STATE[0].sliced is False
        assert heap._STATE[0].sliced is True
    assert heap._STATE[0].sliced is None


def test_no_trim_turned_off(fake, monkeypatch):
    monkeypatch.setattr(heap, "_ENABLED", False)
    fake.rss = 5000.0
    with heap.trimming(True):
        for _ in range(2 * heap.EVERY):
            heap.trim_heap()
    with heap.trimming(False):
        fake.rss = 9000.0
        heap.trim_heap()
    assert fake.trims == 0


@pytest.mark.skipif(heap.anon_rss_mb() is None, reason="no /proc/self/statm on this system")
def test_anon_rss_sees_an_allocation():
    before = heap.anon_rss_mb()
    a = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    grown = heap.anon_rss_mb() - before
    del a
    assert 48 < grown < 96
