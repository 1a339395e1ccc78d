"""Dask inputs: the passes run as Dask tasks per block of sequences and give the in-memory fit
(1e-10 relative, float64), on the threaded scheduler and on a distributed LocalCluster."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'spectral-rnn[scale]')")

from spectral_rnn import SpectralBRNN, SpectralIORNN, make_planted  # noqa: E402


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def planted():
    p = make_planted("brnn", 6, 1, 5, n_steps=40_000, random_state=0)
    L = np.random.default_rng(1).integers(4, 11, p.X.shape[0])
    return p.X, p.Y, L


def test_dask_threads_equal_in_memory(planted):
    X, Y, L = planted
    Xd = da.from_array(X, chunks=(700, 5, 6))  # chunked in time too: rechunked to whole sequences
    Yd = da.from_array(Y, chunks=(700, 10, 5))
    ref = SpectralBRNN(1, random_state=0).fit(X, Y)
    got = SpectralBRNN(1, random_state=0).fit(Xd, Yd)
    for k in ("A1", "U", "A2", "B1", "V", "B2"):
        assert _rel(getattr(got, k + "_"), getattr(ref, k + "_")) < 1e-10
    ref = SpectralIORNN(2, random_state=0, robust="off").fit(X, Y, L)
    got = SpectralIORNN(2, random_state=0, robust="off").fit(Xd, Yd, L)
    for k in ("A1", "U", "A2"):
        assert _rel(getattr(got, k + "_"), getattr(ref, k + "_")) < 1e-10


def test_dask_local_cluster_equals_in_memory(planted):
    distributed = pytest.importorskip("distributed")
    X, Y, _ = planted
    ref = SpectralBRNN(1, random_state=0).fit(X, Y)
    Xd, Yd = da.from_array(X, chunks=(1000, 10, 6)), da.from_array(Y, chunks=(1000, 10, 5))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            distributed.Client(cluster):
        got = SpectralBRNN(1, random_state=0).fit(Xd, Yd)
    for k in ("A1", "U", "A2", "B1", "V", "B2"):
        assert _rel(getattr(got, k + "_"), getattr(ref, k + "_")) < 1e-10


def test_dask_tanh_route_equals_in_memory():
    """The odd route (tanh) with Dask inputs: subsamples and the read-out pass read the blocks
    (it raised a raw IndexError before)."""
    p = make_planted("iornn", 6, 2, 5, n_steps=30_000, activation="tanh", random_state=0)
    L = np.random.default_rng(1).integers(4, 11, p.X.shape[0])
    ref = SpectralIORNN(2, "tanh", random_state=0).fit(p.X, p.Y, L)
    got = SpectralIORNN(2, "tanh", random_state=0).fit(da.from_array(p.X, chunks=(700, 10, 6)),
                                                      da.from_array(p.Y, chunks=(700, 10, 5)), L)
    for k in ("A1", "U", "A2"):
        assert _rel(getattr(got, k + "_"), getattr(ref, k + "_")) < 1e-10
