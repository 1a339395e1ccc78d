"""Validation helpers of ``spectral_rnn._checks`` (issue 12): each refuses bad values with an
``InputError`` carrying one line, and accepts every reasonable spelling of a good one.

The estimators' hyper-parameters (``hidden_size``, ``random_state``, ``device``, ``dtype``,
``chunk_steps``, ``outlier_factor``, ``process``, ``decomposer``) are checked by these functions.
"""

import numpy as np
import pytest
import torch

from spectral_rnn import GaussianAR1, InputError, SpectralRNNError
from spectral_rnn._checks import (
    MAX_MAGNITUDE,
    as_sequences,
    available_memory,
    check_decomposer,
    check_device,
    check_dtype,
    check_lengths,
    check_memory,
    check_nonnegative_int,
    check_outlier_factor,
    check_positive_int,
    check_process,
    check_random_state,
    check_real,
    check_xy,
    resolve_device,
)
from spectral_rnn.decomposition import CPDecomposer


def one_line_error(fn, *args, match=None, **kwargs):
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    return msg


# ------------------------------------------------------------------ ints and numbers
@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_check_positive_int_accepts(value):
    assert check_positive_int(value, "hidden_size") == int(value)
    assert type(check_positive_int(value, "hidden_size")) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 0, -1, 2.0, 1.5, "3", "x", None, [2]])
def test_check_positive_int_refuses(value):
    """hidden_size=True used to be accepted as 1; chunk_steps="x" raised ValueError."""
    one_line_error(check_positive_int, value, "hidden_size", match="hidden_size must be a positive integer")


def test_check_nonnegative_int():
    assert check_nonnegative_int(0, "seed") == 0
    for bad in (-1, True, 0.0, "0"):
        one_line_error(check_nonnegative_int, bad, "seed")


def test_check_real():
    assert check_real(3, "lr", low=0, low_open=True) == 3.0
    assert check_real(np.float32(0.5), "f", low=0, high=1) == 0.5
    assert check_real(float("inf"), "clip", low=0, finite=False) == float("inf")
    for bad in ("x", None, True, float("nan"), float("inf"), 0.0, -1):
        one_line_error(check_real, bad, "lr", low=0.0, low_open=True, match="lr must be")
    one_line_error(check_real, 1.0, "val_fraction", low=0, high=1, high_open=True)


def test_check_outlier_factor():
    assert check_outlier_factor(None) is None
    assert check_outlier_factor(100) == 100.0
    assert check_outlier_factor(1e308) == 1e308
    for bad in ("x", 1.0, 0.5, float("nan"), float("inf"), True):
        one_line_error(check_outlier_factor, bad, match="outlier_factor")


# ------------------------------------------------------------------ random state
def test_check_random_state_accepts():
    g = np.random.default_rng(0)
    assert check_random_state(g) is g
    assert isinstance(check_random_state(None), np.random.Generator)
    a, b = check_random_state(5).random(3), check_random_state(np.int32(5)).random(3)
    np.testing.assert_array_equal(a, b)
    # a legacy RandomState seeds a Generator from its stream: reproducible
    r1 = check_random_state(np.random.RandomState(3)).random(3)
    r2 = check_random_state(np.random.RandomState(3)).random(3)
    np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("value", [-1, np.int64(-5), "0", 1.5, True, [1, 2], object()])
def test_check_random_state_refuses(value):
    """random_state=-1 raised numpy's ValueError."""
    one_line_error(check_random_state, value, match="random_state")


# ------------------------------------------------------------------ device and dtype
def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    bad = ["tpu", "meta", "xla", "", "cpu0", 0, 1, 1.5, ["cpu"]]
    if torch.cuda.is_available():  # on a GPU machine the CUDA spellings resolve to the GPU
        assert all(resolve_device(v).type == "cuda" for v in ("cuda", "cuda:0", torch.device("cuda")))
        bad += [f"cuda:{torch.cuda.device_count()}"]  # one past the last GPU
    else:
        bad += ["cuda", "cuda:0", torch.device("cuda")]
    for value in bad:
        one_line_error(resolve_device, value)


@pytest.mark.parametrize("spelling,want", [
    (torch.float32, torch.float32), (torch.float64, torch.float64), ("float32", torch.float32),
    ("float64", torch.float64), ("torch.float32", torch.float32), ("double", torch.float64),
    (np.float32, torch.float32), (np.dtype("float64"), torch.float64),
])
def test_check_dtype_accepts(spelling, want):
    assert check_dtype(spelling) is want


@pytest.mark.parametrize("value", ["x", "int64", torch.int64, torch.float16, np.int32, None, 3, "complex64"])
def test_check_dtype_refuses(value):
    """dtype="float32" (a string) and torch.int64 failed deep inside torch."""
    one_line_error(check_dtype, value, match="dtype must be")


# ------------------------------------------------------------------ process and decomposer
def test_check_process():
    assert check_process(None) is None
    p = GaussianAR1()
    assert check_process(p) is p
    for bad in ("gaussian", 3, object(), GaussianAR1):
        one_line_error(check_process, bad, match="process must be")


def test_check_decomposer():
    assert check_decomposer(None) is None
    d = CPDecomposer()
    assert check_decomposer(d) is d
    for bad in (object(), "als", CPDecomposer):
        one_line_error(check_decomposer, bad, match="decomposer must be")


# ------------------------------------------------------------------ memory
def test_memory_checks():
    have = available_memory()
    assert have is None or have > 1e8
    check_memory(1e6, "a small array")
    if have is not None:
        msg = one_line_error(check_memory, 1e15, "simulating 1e9 x 1e6 steps")
        assert "GB" in msg and "simulating" in msg


# ------------------------------------------------------------------ arrays
X = np.random.default_rng(0).standard_normal((5, 4, 3))


@pytest.mark.parametrize("make,dtype", [
    (lambda a: a.astype(np.longdouble), np.float64),
    (lambda a: a.astype(np.float16), np.float32),
    (lambda a: a.astype(">f8"), np.float64),
    (lambda a: a.astype(">f4"), np.float32),
    (lambda a: (a * 100).astype(">i4"), np.float64),
    (lambda a: (a * 10).astype(np.int8), np.float32),
    (lambda a: (a * 10).astype(np.uint16), np.float32),
    (lambda a: a[:, ::-1], np.float64),
    (lambda a: a.astype(np.float32)[::-1, ::-1, ::-1], np.float32),
    (lambda a: np.asfortranarray(a), np.float64),
    (lambda a: torch.as_tensor(a, dtype=torch.bfloat16), np.float32),
])
def test_as_sequences_accepts_every_real_layout(make, dtype):
    """longdouble, big-endian, negative strides: all refused by torch before; now converted once."""
    src = make(X)
    arr = as_sequences(src, "inputs")
    assert arr.dtype == dtype and arr.dtype.isnative and all(s >= 0 for s in arr.strides)
    torch.as_tensor(arr)  # what the estimators and models do with it
    ref = np.asarray(src.float() if isinstance(src, torch.Tensor) else src, dtype=np.float64)
    np.testing.assert_allclose(arr, ref, rtol=1e-2 if dtype == np.float32 else 0)


def test_as_sequences_copies_only_when_needed():
    x32 = X.astype(np.float32)
    assert as_sequences(x32) is x32  # a float32 array is never promoted to a float64 copy
    assert as_sequences(X) is X
    view = X[:, 1:]
    assert np.shares_memory(as_sequences(view), X)  # positive-stride views are kept as they are


@pytest.mark.parametrize("value", [
    [[[1.0], [2.0]], [[1.0]]],  # ragged
    X.astype(complex), X > 0, X.astype(str), np.array([X, None], dtype=object), "abc", None,
])
def test_as_sequences_refuses(value):
    one_line_error(as_sequences, value, "inputs")


def test_check_lengths():
    np.testing.assert_array_equal(check_lengths([1, 2, 4], 3, 4), [1, 2, 4])
    np.testing.assert_array_equal(check_lengths(np.array([1, 2, 4], ">i8"), 3, 4), [1, 2, 4])
    assert check_lengths(np.array([4.0, 4.0]), 2, 4) is None
    msg = one_line_error(check_lengths, np.full(3, 1e20), 3, 4)
    assert "1e+20" in msg and "-9223372036854775808" not in msg  # was the int64 minimum
    msg = one_line_error(check_lengths, np.array([2**63 + 5, 1, 1], dtype=np.uint64), 3, 4)
    assert "9223372036854775813" in msg
    for bad in ([[1, 2], [3]], [1, 2], ["a", "b", "c"], [0, 1, 1], [1.5, 1, 1], [np.nan, 1, 1]):
        one_line_error(check_lengths, bad, 3, 4)


def test_check_xy_refuses_huge_values():
    """Inputs near 1e154-1e300 overflowed the moment sums: LinAlgError and LAPACK noise on stdout."""
    Y = np.ones((5, 4, 2))
    for scale in (1e154, 1e200, 1e300):
        msg = one_line_error(check_xy, X * scale, Y, None, match="values above")
        assert "inputs" in msg
        one_line_error(check_xy, X, Y * scale, None, match="outputs hold values")
    check_xy(X * 1e50, Y, None)  # large but safe
    # padding is never read, so a huge value there is fine
    Xp = X.copy()
    Xp[0, 3] = 1e300
    check_xy(Xp, Y, [3, 4, 4, 4, 4])
    assert MAX_MAGNITUDE == 1e100


def test_errors_are_value_errors():
    assert issubclass(InputError, SpectralRNNError) and issubclass(SpectralRNNError, ValueError)


def test_float32_inputs_raise_no_warning():
    """Checking float32 data against the float64 magnitude limit once warned 'overflow
    encountered in cast' (numpy casts the Python float limit to float32)."""
    import warnings

    from spectral_rnn._checks import check_xy

    X = np.zeros((3, 4, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_xy(X, X[..., :1], None)


def test_a_fit_reads_each_input_once_for_finiteness():
    """check_xy, the input law and the stability check all validate the inputs; within one fit the
    data are read once for it (a memory map was read three times), and nothing is remembered
    across fits: NaN written into the same array afterwards is refused by the next fit."""
    from unittest import mock

    import spectral_rnn._checks as C
    from spectral_rnn import SpectralIORNN, make_planted

    p = make_planted("iornn", 6, 2, 5, n_steps=20_000, random_state=0)
    X = p.X.copy()
    with mock.patch.object(C, "_check_finite", wraps=C._check_finite) as m:
        SpectralIORNN(2, random_state=0).fit(X, p.Y)
    assert [c.args[2] for c in m.call_args_list] == ["inputs", "outputs"]
    X[3, 4, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SpectralIORNN(2, random_state=0).fit(X, p.Y)
    L = np.full(len(X), 10)
    L[3] = 4  # the NaN is padding under these lengths
    with C.inputs_checked_once():  # the same array under other lengths is checked again
        C.check_finite(X, L, "inputs")
        with pytest.raises(InputError, match="NaN"):
            C.check_finite(X, None, "inputs")


@pytest.mark.parametrize("threads", [1, 2])  # numpy's max and min on one thread, torch's aminmax on more
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finiteness_scan_finds_a_bad_value_on_either_path(threads, dtype, bad):
    from spectral_rnn._checks import check_finite

    X = np.random.default_rng(0).standard_normal((50, 7, 3)).astype(dtype)
    X[31, 4, 2] = bad
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(InputError, match="NaN or infinite"):
            check_finite(X, None, "inputs")
        with pytest.raises(InputError, match="NaN or infinite"):  # a reversed view (negative strides)
            check_finite(X[:, ::-1, ::-1], None, "inputs")
        L = np.full(50, 7)
        L[31] = 4  # the bad value now lies in padding: not read as data
        check_finite(X, L, "inputs")
        X[31, 4, 2] = 0
        check_finite(X, None, "inputs", limit=10.0)
        X[2, 0, 0] = 20.0
        with pytest.raises(InputError, match="values up to 20"):
            check_finite(X, None, "inputs", limit=10.0)
    finally:
        torch.set_num_threads(before)
