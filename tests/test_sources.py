"""Data sources: memory maps (float32 converted per chunk), Zarr arrays, iterables of chunks and
tensors on an accelerator (read where they lie) give the in-memory fit; the chunk contract is
enforced; the CLI reads a directory or a Zarr store."""

import numpy as np
import pytest
import torch

from spectral_rnn import InputError, SpectralBRNN, SpectralIORNN, make_planted
from spectral_rnn._checks import DeviceSequences, as_sequences
from spectral_rnn.cli import main
from spectral_rnn.sources import ChunkedSequences, open_chunks, open_data_dir


@pytest.fixture(scope="module")
def planted():
    p = make_planted("brnn", 6, 1, 5, n_steps=30_000, random_state=0)
    return p.X.astype(np.float32), p.Y.astype(np.float32)


def _same(a, b, names=("A1", "U", "A2")):
    for k in names:
        np.testing.assert_allclose(getattr(a, k + "_"), getattr(b, k + "_"), rtol=1e-10, atol=1e-13)


def test_memmap_float32_equals_in_memory(planted, tmp_path):
    X, Y = planted
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    Xm, Ym = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "Y.npy", mmap_mode="r")
    ref = SpectralBRNN(1, random_state=0).fit(X.astype(np.float64), Y.astype(np.float64))
    _same(SpectralBRNN(1, random_state=0).fit(Xm, Ym), ref, ("A1", "U", "A2", "B1", "V", "B2"))
    with pytest.raises(InputError, match="outlier_factor"):
        SpectralBRNN(1, outlier_factor=100).fit(Xm, Ym)


def test_chunk_sources_equal_in_memory(planted):
    X, Y = planted
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    L = np.random.default_rng(0).integers(3, 11, X.shape[0])
    ref = SpectralIORNN(2, random_state=0).fit(X, Y, L)

    def gen():  # a generator function: a fresh iterator on every call
        for i in range(0, X.shape[0], 700):
            Tc = int(L[i:i + 700].max())  # chunks of different lengths are padded
            yield X[i:i + 700, :Tc], Y[i:i + 700, :Tc], L[i:i + 700]

    _same(SpectralIORNN(2, random_state=0).fit(gen), ref)
    _same(SpectralIORNN(2, random_state=0).fit(list(gen())), ref)
    Xc, Yc, Lc = open_chunks(gen)
    assert isinstance(Xc, ChunkedSequences) and Xc.shape == X.shape and np.array_equal(Lc, L)
    np.testing.assert_array_equal(Xc[::7, 0], X[::7, 0])
    valid = np.arange(10)[None, :] < L[[5, 2999, 2], None]  # steps past a length are padding, never read
    np.testing.assert_array_equal(Yc[[5, 2999, 2]][valid], Y[[5, 2999, 2]][valid])
    with pytest.raises(InputError, match="never read whole"):
        np.asarray(Xc)


def test_chunk_contract_is_enforced(planted):
    X, Y = planted
    with pytest.raises(InputError, match="one-shot"):
        SpectralIORNN(2).fit(iter([(X, Y, None)]))
    with pytest.raises(InputError, match="chunk 1"):
        open_chunks([(X[:10], Y[:10], None), (X[:10, :, :3], Y[:10], None)])
    with pytest.raises(InputError, match="lengths come with each chunk"):
        SpectralIORNN(2).fit([(X, Y, None)], None, np.full(len(X), 10))
    calls = []

    def shrinking():  # a source that yields fewer chunks the second time
        calls.append(1)
        yield X[:1500], Y[:1500], None
        if len(calls) == 1:
            yield X[1500:], Y[1500:], None

    with pytest.raises(InputError, match="fewer chunks"):
        SpectralIORNN(2).fit(shrinking)


def test_zarr_and_cli_directories(planted, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    X, Y = planted
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("inputs", data=X, chunks=(300, 10, 6))
    g.create_array("outputs", data=Y, chunks=(300, 10, 5))
    Xz, Yz, Lz = open_data_dir(tmp_path / "d.zarr")
    assert Lz is None and Xz.shape == X.shape
    ref = SpectralIORNN(2, random_state=0).fit(X, Y)
    _same(SpectralIORNN(2, random_state=0).fit(Xz, Yz), ref)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "X.npy", X)
    np.save(tmp_path / "npy" / "Y.npy", Y)
    for data in ("d.zarr", "npy"):
        out = tmp_path / f"{data}.safetensors"
        assert main(["fit", str(tmp_path / data), "--hidden-size", "2", "--activation", "0,1,0.5", "--out", str(out),
                     "--threads", "1"]) == 0
    from spectral_rnn import load_model

    a, b = load_model(tmp_path / "d.zarr.safetensors"), load_model(tmp_path / "npy.safetensors")
    np.testing.assert_allclose(a.A1, b.A1, rtol=1e-10)
    (tmp_path / "empty").mkdir()
    assert main(["fit", str(tmp_path / "empty"), "--hidden-size", "2", "--activation", "0,1,0.5", "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "neither X.npy" in capsys.readouterr().err


def test_tanh_route_reads_sources_by_slices(tmp_path):
    """The odd route (tanh) from a chunk source and from memory maps gives the in-memory fit: its
    subsamples and its read-out pass read the source by slices (a Dask array crashed there)."""
    p = make_planted("iornn", 6, 2, 5, n_steps=30_000, activation="tanh", random_state=0)
    X, Y = p.X, p.Y
    L = np.random.default_rng(1).integers(4, 11, X.shape[0])
    ref = SpectralIORNN(2, "tanh", random_state=0).fit(X, Y, L)

    def gen():
        for i in range(0, X.shape[0], 700):
            yield X[i:i + 700], Y[i:i + 700], L[i:i + 700]

    _same(SpectralIORNN(2, "tanh", random_state=0).fit(gen), ref)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    Xm, Ym = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "Y.npy", mmap_mode="r")
    _same(SpectralIORNN(2, "tanh", random_state=0).fit(Xm, Ym, L), ref)


class _HostReads(DeviceSequences):
    """:class:`DeviceSequences` over a CPU tensor (the code path of a GPU tensor, on any machine)
    that counts the time steps copied to the host through ``__getitem__``."""

    steps = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        _HostReads.steps += out.size // self.shape[2]
        return out


@pytest.mark.parametrize("kind", ["iornn", "brnn"])
def test_device_tensor_is_read_where_it_lies(kind):
    """A tensor on an accelerator is fitted from device slices: the result equals the fit from host
    arrays, and only fixed-size subsamples (the law's choice, the centre, the first steps) reach
    the host, never the data: 1e6 steps, under 40% of them."""
    E, d_h = (SpectralIORNN, 2) if kind == "iornn" else (SpectralBRNN, 1)
    p = make_planted(kind, 6, d_h, 5, n_steps=1_000_000, random_state=0, n_test=0)
    X, Y = p.X.astype(np.float32), p.Y.astype(np.float32)
    ref = E(d_h, random_state=0).fit(X, Y)
    _HostReads.steps = 0
    got = E(d_h, random_state=0).fit(_HostReads(torch.as_tensor(X)), _HostReads(torch.as_tensor(Y)))
    _same(got, ref, ("A1", "U", "A2") + (("B1", "V", "B2") if kind == "brnn" else ()))
    assert 0 < _HostReads.steps < 0.4 * X.shape[0] * X.shape[1]


def test_device_sequences_slices_and_ragged_lengths(planted):
    X, Y = planted
    L = np.random.default_rng(1).integers(3, 11, X.shape[0])
    D = DeviceSequences(torch.as_tensor(X))
    assert D.shape == X.shape and D.dtype == np.float32 and "DeviceSequences" in repr(D)
    np.testing.assert_array_equal(D[::7, 0], X[::7, 0])
    np.testing.assert_array_equal(D[np.array([5, 2, 9])], X[[5, 2, 9]])
    assert isinstance(D.device_slice((slice(0, 4), slice(1, 3))), torch.Tensor)
    np.testing.assert_array_equal(np.asarray(D), X)
    half = DeviceSequences(torch.as_tensor(X).to(torch.bfloat16))  # converted once, on its device
    assert half.dtype == np.float32
    # ragged sequences take the generic route of the autoregression (host slices): same estimate
    ref = SpectralIORNN(2, random_state=0).fit(X, Y, L)
    _same(SpectralIORNN(2, random_state=0).fit(D, DeviceSequences(torch.as_tensor(Y)), L), ref)


def test_cpu_tensors_stay_plain_arrays():
    """Only tensors on an accelerator become DeviceSequences: a CPU tensor is viewed as a numpy array."""
    t = torch.zeros((3, 4, 2))
    for keep in (False, True):
        out = as_sequences(t, keep_device=keep)
        assert isinstance(out, np.ndarray) and out.shape == (3, 4, 2)
