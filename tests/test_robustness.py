"""Regression tests for the findings of issue 12 ("nothing lost, nothing crashes"), one or
more per finding: the command or call, the exit code or exception, and the files afterwards.

Command-line cases run in-process through ``main(argv)`` (fd-level capture, so LAPACK
messages written to the C stdout would be seen); those that need real signals or a fresh
interpreter run ``python -m spectral_rnn`` in a subprocess.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import spectral_rnn
from _helpers import time_limit
from spectral_rnn import (
    BRNN,
    IORNN,
    InputError,
    Polynomial,
    SpectralIORNN,
    SpectralRNNError,
    make_planted,
    refine,
    run_comparison,
)
from spectral_rnn import io as sio
from spectral_rnn.cli import main
from spectral_rnn.io import load_data, load_model, save_data, save_model

SIM = ["simulate", "--hidden-size", "2", "--input-dim", "5", "--output-dim", "4", "--activation", "0,1,0.5"]
FIT = ["--hidden-size", "2", "--activation", "0,1,0.5"]
SRC = os.path.dirname(os.path.dirname(os.path.abspath(spectral_rnn.__file__)))




def cli(capfd, *argv, limit=120):
    """Run the command line in-process; returns (exit code, stdout, stderr) at the fd level."""
    with time_limit(limit):
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, exit_code=2):
    assert code == exit_code, (code, out, err)
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    if exit_code == 2:
        assert err.startswith("spectral-rnn: error: ")


def tmp_files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def snapshot(directory):
    """Names and contents of the regular files in ``directory``."""
    out = {}
    for n in sorted(os.listdir(directory)):
        p = os.path.join(directory, n)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fh:
                out[n] = fh.read()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small IO-RNN data set (3e4 steps, d_x=5, d_y=4) and its true model."""
    d = tmp_path_factory.mktemp("robust")
    data, truth = d / "data.npz", d / "truth.safetensors"
    assert main(SIM + ["--sequences", "3000", "--length", "10", "--seed", "1", "--out", str(data),
                       "--truth", str(truth)]) == 0
    return data, truth


def _subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ============================================================== data loss
def test_compare_plot_cannot_overwrite_truth(files, tmp_path, capfd):
    """`compare DATA --truth T.png --plot T.png` overwrote its own --truth input with the plot."""
    data, truth = files
    t = tmp_path / "T.png"
    t.write_bytes(truth.read_bytes())
    before = snapshot(tmp_path)
    code, out, err = cli(capfd, "compare", data, *FIT, "--truth", t, "--plot", t, "--budget", "0.1", "--seeds", "1")
    assert_one_line_error(code, out, err)
    assert "also an input" in err
    assert snapshot(tmp_path) == before
    link = tmp_path / "link.png"  # the same file through a symbolic link, then a hard link
    link.symlink_to(t)
    hard = tmp_path / "hard.png"
    os.link(t, hard)
    for plot in (link, hard):
        assert_one_line_error(*cli(capfd, "compare", data, *FIT, "--truth", t, "--plot", plot, "--budget", "0.1"))
    assert t.read_bytes() == truth.read_bytes()


def _special_outputs(tmp_path):
    """(name, path, check-after) for outputs that are not regular files."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    devlink = tmp_path / "devnull"  # a link to /dev/null: were it replaced, only the link would go
    devlink.symlink_to(os.devnull)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
    except OSError:  # a temporary directory too deep for a socket's path
        sock_path = None
    cases = [
        ("named pipe", fifo, lambda: os.path.exists(fifo) and not os.path.isfile(fifo)),
        ("link to a character device", devlink, lambda: os.path.islink(devlink)),
        ("directory", tmp_path / "dir.png", lambda: os.path.isdir(tmp_path / "dir.png")),
    ]
    (tmp_path / "dir.png").mkdir()
    if sock_path is not None:
        cases.append(("socket", sock_path, lambda: not os.path.isfile(sock_path)))
    if os.geteuid() != 0:  # /dev/null itself, only where a bug could not replace it
        cases.append(("character device", os.devnull, lambda: not os.path.isfile(os.devnull)))
    return cases, sock


def test_outputs_must_be_regular_files(files, tmp_path, capfd):
    """`fit --out PATH` replaced a character device or named pipe with a regular file."""
    data, truth = files
    cases, sock = _special_outputs(tmp_path)
    try:
        for name, path, intact in cases:
            for argv in (["fit", data, *FIT, "--out", path],
                         ["predict", truth, data, "--out", path],
                         [*SIM, "--sequences", "10", "--length", "3", "--out", path],
                         [*SIM, "--sequences", "10", "--length", "3", "--out", tmp_path / "new.npz", "--truth", path],
                         ["compare", data, *FIT, "--plot", path, "--budget", "0.1"]):
                code, out, err = cli(capfd, *argv)
                assert_one_line_error(code, out, err)
                assert intact(), (name, argv)
        assert not (tmp_path / "new.npz").exists()
        assert tmp_files(tmp_path) == []
    finally:
        sock.close()


def test_failed_plot_write_keeps_the_old_plot(files, tmp_path, capfd, monkeypatch):
    """A failed compare (disk full while writing the plot) changed an existing plot file."""
    from matplotlib.figure import Figure

    data, _ = files
    plot = tmp_path / "cmp.png"
    plot.write_bytes(b"the previous plot")

    def full_disk(self, fh, **kwargs):
        fh.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    code, out, err = cli(capfd, "compare", data, *FIT, "--plot", plot, "--budget", "0.05", "--seeds", "1")
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert plot.read_bytes() == b"the previous plot"
    assert sorted(os.listdir(tmp_path)) == ["cmp.png"]


def test_plot_is_written_atomically_and_completely(files, tmp_path, capfd):
    data, _ = files
    plot = tmp_path / "cmp.svg"
    plot.write_bytes(b"old")
    code, out, err = cli(capfd, "compare", data, *FIT, "--plot", plot, "--budget", "0.05", "--seeds", "1")
    assert code == 0, err
    assert plot.read_bytes().lstrip().startswith(b"<?xml") and tmp_files(tmp_path) == []


# ============================================================== tracebacks instead of one line
def test_longdouble_and_big_endian_files_are_read(files, tmp_path, capfd):
    """longdouble inputs or outputs in fit and predict raised TypeError from torch."""
    data, truth = files
    X, Y, _ = load_data(data)
    for name, conv in (("ld", lambda a: a.astype(np.longdouble)), ("be", lambda a: a.astype(">f8")),
                       ("f16", lambda a: a.astype(np.float16))):
        p = tmp_path / f"{name}.npz"
        np.savez(p, inputs=conv(X), outputs=conv(Y))
        code, out, err = cli(capfd, "fit", p, *FIT, "--out", tmp_path / f"{name}.safetensors")
        assert code == 0 and err == "", err
        code, out, err = cli(capfd, "predict", truth, p, "--out", tmp_path / f"{name}.pred.npz")
        assert code == 0 and err == "", err
        with np.load(tmp_path / f"{name}.pred.npz") as z:
            np.testing.assert_allclose(z["outputs"], load_model(truth).predict(conv(X).astype(np.float64)))


@pytest.mark.parametrize("option", ["--input-dim", "--hidden-size", "--sequences", "--output-dim", "--length"])
@pytest.mark.parametrize("size", ["1000000", "1000000000"])
def test_simulate_refuses_sizes_beyond_memory(tmp_path, capfd, option, size):
    """--input-dim, --hidden-size or --sequences of 1e6 to 1e9 died with _ArrayMemoryError."""
    argv = {"--hidden-size": "2", "--input-dim": "5", "--output-dim": "4", "--sequences": "1000", "--length": "1000"}
    argv[option] = size
    from types import SimpleNamespace

    from spectral_rnn._checks import available_memory
    from spectral_rnn.cli import _simulate_bytes

    need = _simulate_bytes(SimpleNamespace(bidirectional=False, **{k[2:].replace("-", "_"): int(v) for k, v in argv.items()}))
    if available_memory() is None or need <= available_memory():
        pytest.skip("this machine has the memory for it")
    flat = ["simulate", *[x for kv in argv.items() for x in kv], "--out", tmp_path / "d.npz"]
    t0 = time.perf_counter()
    code, out, err = cli(capfd, *flat, limit=60)
    assert_one_line_error(code, out, err)
    assert "GB of memory" in err and time.perf_counter() - t0 < 30
    assert os.listdir(tmp_path) == []


def test_python_api_errors_are_spectral_rnn_errors():
    """Each call raised a plain TypeError/ValueError/RuntimeError/LinAlgError."""
    p = make_planted("iornn", d_x=6, d_h=2, d_y=5, n_steps=20_000, length=10, random_state=0)
    X, Y = p.X, p.Y
    calls = {
        "activation=None": lambda: SpectralIORNN(2, activation=None).fit(X, Y),
        "activation=3": lambda: SpectralIORNN(2, activation=3).fit(X, Y),
        "activation={}": lambda: SpectralIORNN(2, activation={"a": 1}).fit(X, Y),
        "activation=['a','b']": lambda: SpectralIORNN(2, activation=["a", "b"]).fit(X, Y),
        "random_state=-1": lambda: SpectralIORNN(2, random_state=-1).fit(X, Y),
        "device='tpu'": lambda: SpectralIORNN(2, device="tpu").fit(X, Y),
        "device='meta'": lambda: SpectralIORNN(2, device="meta").fit(X, Y),
        "device=0": lambda: SpectralIORNN(2, device=0).fit(X, Y),
        "ragged lengths": lambda: SpectralIORNN(2).fit(X, Y, [[1, 2], [3]] + [[1]] * (len(X) - 2)),
        "lengths 1e20": lambda: SpectralIORNN(2).fit(X, Y, np.full(len(X), 1e20)),
        "huge inputs": lambda: SpectralIORNN(2).fit(X * 1e200, Y),
        "huge outputs": lambda: SpectralIORNN(2).fit(X, Y * 1e200),
        "IORNN strings": lambda: IORNN("a", "b", "c", "0,1,0.5"),
        "IORNN ragged": lambda: IORNN([[1, 2], [3]], [[1]], [[1]], "0,1,0.5"),
        "BRNN strings": lambda: BRNN(*["x"] * 6, activation="0,1,0.5"),
        "Polynomial(None)": lambda: Polynomial(None),
        "Polynomial(5)": lambda: Polynomial(5),
        "Polynomial degree 5e5": lambda: Polynomial([0.0] * 500_000 + [1.0]),
        "activation 0,1,1e308": lambda: SpectralIORNN(2, activation="0,1,1e308").fit(X, Y),
        "refine(lr='x')": lambda: refine(p.model, X[:100], Y[:100], lr="x", max_epochs=1),
        "refine(batch_size=True)": lambda: refine(p.model, X[:100], Y[:100], batch_size=True, max_epochs=1),
        "to_torch(dtype='garbage')": lambda: p.model.to_torch(dtype="garbage"),
        "to_torch(dtype=torch.int64)": lambda: p.model.to_torch(dtype=torch.int64),
        "predict(dtype='x')": lambda: p.model.predict(X[:3], dtype="x"),
        "run_comparison(seeds='x')": lambda: run_comparison(X, Y, hidden_size=2, seeds="x", budget=0.1),
        "run_comparison(budget='x')": lambda: run_comparison(X, Y, hidden_size=2, budget="x"),
        "run_comparison(hidden_size=1e9)": lambda: run_comparison(X, Y, hidden_size=10**9, budget=0.1),
        "simulate(noise_std='x')": lambda: p.model.simulate(X[:3], noise_std="x"),
    }
    for name, call in calls.items():
        with pytest.raises(SpectralRNNError) as info:
            call()
        msg = str(info.value)
        assert msg and "\n" not in msg and len(msg) < 400, (name, msg)


def test_to_torch_accepts_dtype_names():
    m = IORNN.random(4, 2, 3, random_state=0)
    assert m.to_torch(dtype="float32").weight_ih_l0.dtype == torch.float32
    assert m.to_torch(dtype="float64").weight_ih_l0.dtype == torch.float64
    X = np.random.default_rng(0).standard_normal((2, 5, 4))
    np.testing.assert_array_equal(m.predict(X, dtype="float64"), m.predict(X))


# ============================================================== hangs
def test_named_pipe_inputs_are_refused_without_blocking(files, tmp_path, capfd):
    """A named pipe given as the data or model file blocked forever."""
    data, truth = files
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for argv in (["fit", fifo, *FIT, "--out", tmp_path / "m.safetensors"],
                 ["predict", fifo, data, "--out", tmp_path / "p.npz"],
                 ["predict", truth, fifo, "--out", tmp_path / "p.npz"],
                 ["compare", fifo, *FIT],
                 ["compare", data, *FIT, "--truth", fifo]):
        code, out, err = cli(capfd, *argv, limit=30)
        assert_one_line_error(code, out, err)
        assert "named pipe" in err
    for fn in (lambda: load_data(fifo), lambda: load_model(fifo), lambda: load_data(os.devnull)):
        with time_limit(10), pytest.raises(InputError, match="not a regular file"):
            fn()


def test_model_file_with_absurd_degree_is_refused_fast(files, tmp_path, capfd):
    """A 1 MB model file with an activation of degree 5e5 made predict take ~1 s per step and
    then print a 2 MB line."""
    from safetensors.numpy import save_file

    data, truth = files
    m = load_model(truth)
    p = tmp_path / "degree.safetensors"
    act = ",".join(["0"] * 500_000 + ["1"])
    save_file({"A1": m.A1, "U": m.U, "A2": m.A2}, str(p),
              metadata={"format": "spectral-rnn", "format_version": "1", "kind": "iornn", "activation": act})
    assert p.stat().st_size > 1e6
    t0 = time.perf_counter()
    code, out, err = cli(capfd, "predict", p, data, "--out", tmp_path / "p.npz", limit=60)
    assert_one_line_error(code, out, err)
    assert len(err) < 400 and "degree" in err and time.perf_counter() - t0 < 20
    assert not (tmp_path / "p.npz").exists()
    with pytest.raises(InputError, match="degrees above 16"):
        Polynomial([0.0] * 17 + [1.0])
    assert Polynomial([0.0] * 16 + [1.0]).degree == 16


# ============================================================== valid input rejected
def test_big_endian_and_negative_stride_inputs_fit_like_native():
    """Big-endian arrays and negative-stride views (a time-reversed view, as a BRNN user makes)
    were refused by torch."""
    p = make_planted("iornn", d_x=6, d_h=2, d_y=5, n_steps=30_000, length=10, random_state=2)
    Xr, Yr = p.X[:, ::-1], p.Y[:, ::-1]
    ref = SpectralIORNN(2, random_state=0).fit(np.ascontiguousarray(Xr), np.ascontiguousarray(Yr)).model_
    got = SpectralIORNN(2, random_state=0).fit(Xr, Yr).model_
    assert got == ref
    be = SpectralIORNN(2, random_state=0).fit(p.X.astype(">f8"), p.Y.astype(">f8")).model_
    assert be == SpectralIORNN(2, random_state=0).fit(p.X, p.Y).model_
    np.testing.assert_array_equal(p.model.predict(Xr), p.model.predict(np.ascontiguousarray(Xr)))
    np.testing.assert_array_equal(p.model.predict(p.X[:50].astype(np.longdouble)), p.model.predict(p.X[:50]))


@pytest.mark.parametrize("form", [["--activation", "-0.5,1,0.5"], ["--activation=-0.5,1,0.5"]])
def test_activation_starting_with_a_minus(files, tmp_path, capfd, form):
    """`--activation -0,1,0.5` was read as an option."""
    data, _ = files
    out = tmp_path / "m.safetensors"
    code, o, err = cli(capfd, "fit", data, "--hidden-size", "2", *form, "--out", out)
    assert code == 0, err
    assert load_model(out).activation == Polynomial([-0.5, 1.0, 0.5])
    code, o, err = cli(capfd, *SIM[:-2], *form, "--sequences", "5", "--length", "3", "--out", tmp_path / "d.npz",
                       "--truth", tmp_path / "t.safetensors")
    assert code == 0, err
    assert load_model(tmp_path / "t.safetensors").activation.coefficients == (-0.5, 1.0, 0.5)
    # an option name after --activation is still an error, not an activation
    assert_one_line_error(*cli(capfd, "fit", data, "--hidden-size", "2", "--activation", "--out", out))


def test_250_character_output_name(files, tmp_path, capfd):
    """The temporary file's name (target + suffix) exceeded NAME_MAX = 255."""
    data, truth = files
    for name, argv in (("m" * 250, ["fit", data, *FIT]), ("p" * 250, ["predict", truth, data])):
        code, out, err = cli(capfd, *argv, "--out", tmp_path / name)
        assert code == 0, err
        assert (tmp_path / name).stat().st_size > 0
    assert load_model(tmp_path / ("m" * 250)).d_h == 2
    assert tmp_files(tmp_path) == []
    code, out, err = cli(capfd, "fit", data, *FIT, "--out", tmp_path / ("x" * 256))
    assert_one_line_error(code, out, err)
    assert "longer than" in err


# ============================================================== wrong result accepted / too late
def test_predict_refuses_non_finite_outputs(files, tmp_path, capfd):
    """predict with A2 = 1e308 wrote non-finite outputs with exit 0."""
    data, truth = files
    m = load_model(truth)
    save_model(IORNN(m.A1, m.U, np.full_like(m.A2, 1e308), m.activation), tmp_path / "big.safetensors")
    out = tmp_path / "p.npz"
    code, o, err = cli(capfd, "predict", tmp_path / "big.safetensors", data, "--out", out)
    assert_one_line_error(code, o, err)
    assert "overflow" in err and not out.exists() and tmp_files(tmp_path) == []


def test_save_data_refuses_object_arrays(tmp_path):
    for bad in (np.array([np.zeros(3), None], dtype=object), [[1, 2], [3]]):
        with pytest.raises(InputError, match="save_data"):
            save_data(tmp_path / "d.npz", inputs=bad)
    assert os.listdir(tmp_path) == []


def test_simulate_leaves_nothing_when_truth_cannot_be_written(tmp_path, capfd, monkeypatch):
    """simulate left --out behind when --truth could not be written."""
    argv = [*SIM, "--sequences", "50", "--length", "5", "--out", tmp_path / "d.npz"]
    # checked up front: nothing is simulated or written
    code, out, err = cli(capfd, *argv, "--truth", tmp_path / "no" / "t.safetensors")
    assert_one_line_error(code, out, err)
    assert os.listdir(tmp_path) == []
    # failing while writing the second file: neither file appears, no temporary file stays
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(sio.os, "fsync", fsync)
    (tmp_path / "d.npz").write_bytes(b"old data")
    code, out, err = cli(capfd, *argv, "--truth", tmp_path / "t.safetensors")
    assert_one_line_error(code, out, err)
    assert "No space left" in err
    assert sorted(os.listdir(tmp_path)) == ["d.npz"] and (tmp_path / "d.npz").read_bytes() == b"old data"


def test_compare_refuses_bad_plot_before_the_run(files, tmp_path, capfd, monkeypatch):
    """An unsupported --plot extension was rejected only after the whole comparison (19 min)."""
    import spectral_rnn.compare as cmp

    def never(*a, **k):
        raise AssertionError("the comparison ran before the plot path was checked")

    monkeypatch.setattr(cmp, "refine", never)
    monkeypatch.setattr(cmp, "train_bptt", never)
    monkeypatch.setattr(cmp, "_spectral_estimator", never)
    data, _ = files
    for plot in ("out.xyz", "noextension", "out.png/"):
        code, out, err = cli(capfd, "compare", data, *FIT, "--plot", f"{tmp_path}/{plot}", "--budget", "1000", limit=30)
        assert_one_line_error(code, out, err)
    X, Y, _ = load_data(data)
    with pytest.raises(InputError, match="extension"):
        run_comparison(X, Y, hidden_size=2, plot=str(tmp_path / "p.doc"))
    assert os.listdir(tmp_path) == []


# ============================================================== messages
@pytest.mark.parametrize("scale", [1e154, 1e200, 1e300])
def test_huge_values_give_one_line_and_nothing_on_stdout(files, tmp_path, capfd, scale):
    """Inputs near 1e154-1e300 gave exit 2 with 13 lines of LAPACK output."""
    data, _ = files
    X, Y, _ = load_data(data)
    for name, arrays in (("x", dict(inputs=X * scale, outputs=Y)), ("y", dict(inputs=X, outputs=Y * scale))):
        p = tmp_path / f"{name}.npz"
        save_data(p, **arrays)
        code, out, err = cli(capfd, "fit", p, *FIT, "--out", tmp_path / "m.safetensors")
        assert_one_line_error(code, out, err)  # out == "" at the fd level: no LAPACK message
        assert "values above" in err


def test_float_lengths_message(files, tmp_path, capfd):
    """lengths given as float 1e20 printed the int64 minimum."""
    data, _ = files
    X, Y, _ = load_data(data)
    save_data(tmp_path / "l.npz", inputs=X, outputs=Y, lengths=np.full(len(X), 1e20))
    code, out, err = cli(capfd, "fit", tmp_path / "l.npz", *FIT, "--out", tmp_path / "m.safetensors")
    assert_one_line_error(code, out, err)
    assert "1e+20" in err and "-9223372036854775808" not in err


def test_outlier_factor_1e308_prints_no_warning(files, tmp_path, capfd):
    """--outlier-factor 1e308 printed an overflow warning."""
    data, _ = files
    code, out, err = cli(capfd, "fit", data, *FIT, "--outlier-factor", "1e308", "--out", tmp_path / "m.safetensors")
    assert code == 0 and err == "" and out.count("\n") == 2  # the score line and the summary


# ============================================================== interrupts
def _kill_self_while(monkeypatch, obj, name, signum, after_calls=1):
    """Make ``obj.name`` deliver ``signum`` to this process when called."""
    real, n = getattr(obj, name), []

    def wrapped(*args, **kwargs):
        n.append(1)
        if len(n) == after_calls:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapped)


@pytest.mark.parametrize("signum,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_while_writing_removes_the_temporary_file(files, tmp_path, capfd, monkeypatch, signum, code, word):
    """SIGTERM had no handler and left .tmp files (up to a 30 MB partial)."""
    data, truth = files
    out = tmp_path / "pred.npz"
    out.write_bytes(b"old predictions")
    real_savez = np.savez

    def savez_then_signal(fh, **arrays):
        fh.write(b"PK partial")
        os.kill(os.getpid(), signum)  # arrives in the middle of the write
        real_savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", savez_then_signal)
    c, o, err = cli(capfd, "predict", truth, data, "--out", out)
    assert c == code and err == f"spectral-rnn: {word}\n", (c, err)
    assert out.read_bytes() == b"old predictions"
    assert sorted(os.listdir(tmp_path)) == ["pred.npz"]
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))


def test_interrupt_right_after_the_temporary_file_is_created(files, tmp_path, capfd, monkeypatch):
    """A SIGINT arriving as the temporary file was created left it behind (os.open sat outside
    the cleanup try)."""
    data, _ = files
    real_open = os.open

    def open_then_interrupt(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".tmp"):
            raise KeyboardInterrupt  # between the file's creation and anything else
        return fd

    monkeypatch.setattr(sio.os, "open", open_then_interrupt)
    c, o, err = cli(capfd, "fit", data, *FIT, "--out", tmp_path / "m.safetensors")
    assert c == 130 and err == "spectral-rnn: interrupted\n"
    assert os.listdir(tmp_path) == []


def test_sigint_during_predict_in_process(files, tmp_path, capfd, monkeypatch):
    """SIGINT during predict printed a KeyboardInterrupt traceback."""
    import spectral_rnn.models as models

    data, truth = files
    _kill_self_while(monkeypatch, models, "run_chain", signal.SIGINT)
    c, o, err = cli(capfd, "predict", truth, data, "--out", tmp_path / "p.npz")
    assert (c, o, err) == (130, "", "spectral-rnn: interrupted\n")
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def _spawn(argv, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "spectral_rnn", *map(str, argv)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env())


@pytest.mark.parametrize("delay", [0.5, 1.0])
def test_sigint_during_start_up(files, tmp_path, delay):
    """SIGINT during start-up (torch's import) printed a traceback, and once exited 0."""
    data, _ = files
    proc = _spawn(["fit", data, *FIT, "--out", tmp_path / "m.safetensors"], tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # a fast machine finished first: the output is whole
        assert load_model(tmp_path / "m.safetensors").d_h == 2
    else:
        assert proc.returncode == 130 and err == "spectral-rnn: interrupted\n", (proc.returncode, err)
    assert "Traceback" not in err and tmp_files(tmp_path) == []


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_a_long_predict(tmp_path, signum, code, word):
    """A real signal during a long predict (one sequence of 3e5 steps): one line, 130 or 143,
    no temporary file, no output."""
    m = IORNN.random(4, 2, 3, random_state=0)
    save_model(m, tmp_path / "m.safetensors")
    save_data(tmp_path / "x.npz", inputs=0.1 * np.random.default_rng(0).standard_normal((1, 300_000, 4)))
    proc = _spawn(["predict", "m.safetensors", "x.npz", "--out", "p.npz"], tmp_path)
    time.sleep(4.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        assert load_data(tmp_path / "p.npz")[0].shape == (1, 300_000, 3)
    else:
        assert proc.returncode == code and err == f"spectral-rnn: {word}\n", (proc.returncode, err)
        assert not (tmp_path / "p.npz").exists()
    assert "Traceback" not in err and tmp_files(tmp_path) == []


# ============================================================== determinism
def test_model_files_are_byte_identical(tmp_path):
    """Same weights, different bytes: safetensors ordered the metadata keys at random."""
    m = BRNN.random(5, 2, 4, random_state=0)
    blobs = set()
    for i in range(8):
        save_model(m, tmp_path / f"m{i}.safetensors")
        blobs.add((tmp_path / f"m{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    blob = blobs.pop()
    n = int.from_bytes(blob[:8], "little")
    header = blob[8 : 8 + n].decode()
    assert n % 8 == 0 and header.index('"activation"') < header.index('"backward_activation"') < header.index('"format"')
    assert load_model(tmp_path / "m0.safetensors") == m


def test_same_seed_same_bytes_across_processes(files, tmp_path):
    """Two runs of `spectral-rnn fit` (and `simulate`) with the same seed write identical files."""
    data, _ = files
    runs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        fit = subprocess.run([sys.executable, "-m", "spectral_rnn", "fit", str(data), *FIT, "--seed", "3",
                              "--out", "m.safetensors"], cwd=d, capture_output=True, text=True, env=_subprocess_env(),
                             timeout=300)
        assert fit.returncode == 0, fit.stderr
        assert main([*SIM, "--sequences", "200", "--length", "7", "--seed", "4", "--out", str(d / "d.npz"),
                     "--truth", str(d / "t.safetensors")]) == 0
        runs.append(snapshot(d))
    assert runs[0] == runs[1]


# ============================================================== start-up
def test_cli_start_up_imports_no_heavy_module():
    """The handlers go in before torch's (slow) import, so the command line itself must not
    import torch, numpy or argparse when its module loads."""
    code = ("import sys, spectral_rnn.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'argparse') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_subprocess_env(), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_package_exports_survive_submodule_imports():
    """With the lazy package, importing the submodule spectral_rnn.refine must not turn
    spectral_rnn.refine (the function) into the module."""
    import importlib

    importlib.import_module("spectral_rnn.refine")
    import spectral_rnn as pkg

    assert callable(pkg.refine) and pkg.refine.__name__ == "refine"
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError):
        pkg.no_such_name


def test_allocation_failures_are_one_line(files, tmp_path, capfd, monkeypatch):
    """Out of memory anywhere (numpy's MemoryError, torch's allocator RuntimeError): one line, exit 2."""
    import spectral_rnn.models as models

    data, truth = files
    for exc in (MemoryError("Unable to allocate 7.28 TiB for an array"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 4000000000000000000 bytes")):
        def boom(*a, exc=exc, **k):
            raise exc

        monkeypatch.setattr(models, "run_chain", boom)
        code, out, err = cli(capfd, "predict", truth, data, "--out", tmp_path / "p.npz")
        assert_one_line_error(code, out, err)
        assert "memory" in err and not (tmp_path / "p.npz").exists()
