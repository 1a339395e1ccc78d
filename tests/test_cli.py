"""The ``spectral-rnn`` command line: simulate -> fit -> predict, demo, and bad input (exit 2, one line)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from spectral_rnn import BRNN, IORNN, make_planted
from spectral_rnn.cli import main, run_demo
from spectral_rnn.io import load_data, load_model, save_data
from spectral_rnn.metrics import parameter_errors, prediction_error

SIM = ["simulate", "--hidden-size", "3", "--input-dim", "6", "--output-dim", "5", "--activation", "0,1,0.5"]


def run(capsys, *argv):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err):
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("spectral-rnn: error: ")
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """An IO-RNN data set of 2e4 steps, its true model, and a fitted model (shared by the tests)."""
    d = tmp_path_factory.mktemp("planted")
    data, truth, model = d / "data.npz", d / "truth.safetensors", d / "model.safetensors"
    assert main(SIM + ["--sequences", "2000", "--length", "10", "--seed", "0", "--out", str(data),
                       "--truth", str(truth)]) == 0
    assert main(["fit", str(data), "--hidden-size", "3", "--activation", "0,1,0.5", "--out", str(model)]) == 0
    return d, data, truth, model


# ------------------------------------------------------------------ success
def test_simulate_fit_predict_end_to_end(planted, tmp_path, capsys):
    _, data, truth, model = planted
    X, Y, lengths = load_data(data)
    assert X.shape == (2000, 10, 6) and Y.shape == (2000, 10, 5) and lengths is None
    true, est = load_model(truth), load_model(model)
    assert isinstance(true, IORNN) and isinstance(est, IORNN)
    errors = parameter_errors(true, est)
    assert errors["A1"] < 0.15 and errors["A2"] < 0.15 and errors["U"] < 0.3, errors

    code, out, err = run(capsys, "predict", model, data, "--out", tmp_path / "pred.npz")
    assert code == 0 and str(tmp_path / "pred.npz") in out
    with np.load(tmp_path / "pred.npz") as z:
        assert set(z.files) == {"outputs"}
        pred = z["outputs"]
    assert pred.shape == Y.shape
    np.testing.assert_allclose(pred, est.predict(X))
    assert prediction_error(true.predict(X), pred) < 0.02
    # the data are the planted model plus noise of std 0.1
    assert np.std(Y - true.predict(X)) == pytest.approx(0.1, rel=0.05)


def test_fit_prints_the_score_choice_and_one_summary_line(planted, tmp_path, capsys):
    _, data, _, _ = planted
    code, out, err = run(capsys, "fit", data, "--hidden-size", "3", "--activation", "0,1,0.5",
                         "--out", tmp_path / "m.safetensors", "--seed", "3")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("scores: gaussian (innovations look Gaussian")  # Gaussian planted inputs
    assert "20000 time steps" in lines[1] and " s -> " in lines[1] and str(tmp_path / "m.safetensors") in lines[1]
    # forcing a law is reported as the user's choice
    code, out, err = run(capsys, "fit", data, "--hidden-size", "3", "--activation", "0,1,0.5", "--scores", "moment",
                         "--out", tmp_path / "m2.safetensors")
    assert code == 0 and out.splitlines()[0] == "scores: moment (chosen by the user)"
    code, out, err = run(capsys, "fit", data, "--hidden-size", "3", "--activation", "0,1,0.5", "--scores", "magic",
                         "--out", tmp_path / "m3.safetensors")
    assert code == 2 and err.count("\n") == 1 and "--scores" in err and not (tmp_path / "m3.safetensors").exists()


def test_fit_warns_in_one_line_when_a_forced_law_misses_stein(tmp_path, capsys):
    """A law forced on inputs it cannot score (a mixture on uniform innovations: edges): a fit that succeeds
    ends with one warning line saying its scores miss Stein's identity (exit 0); a fit refused shows its one
    error line only (exit 2); the default law fits the same data quietly."""
    p = make_planted("iornn", d_x=8, d_h=2, d_y=6, n_steps=100_000, random_state=0, innovations="uniform")
    np.savez(tmp_path / "u.npz", inputs=p.X, outputs=p.Y)
    fit = ["fit", tmp_path / "u.npz", "--hidden-size", "2", "--activation", "0,1,0.5", "--out"]
    code, out, err = run(capsys, *fit, tmp_path / "m.safetensors", "--scores", "mixture")
    assert code == 0 and (tmp_path / "m.safetensors").exists(), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "spectral-rnn: warning: the 'mixture' law's scores miss Stein's identity on the innovations"), err
    q = make_planted("iornn", d_x=4, d_h=1, d_y=3, n_steps=100_000, random_state=0, innovations="uniform")
    np.savez(tmp_path / "v.npz", inputs=q.X, outputs=q.Y)
    code, out, err = run(capsys, "fit", tmp_path / "v.npz", "--hidden-size", "1", "--activation", "0,1,0.5",
                         "--scores", "mixture", "--out", tmp_path / "v.safetensors")
    assert code == 2 and err.count("\n") == 1 and err.startswith("spectral-rnn: error: "), err
    code, out, err = run(capsys, *fit, tmp_path / "d.safetensors")
    assert code == 0 and err == "" and out.startswith("scores: moment"), (out, err)


def test_fit_ragged_data(planted, tmp_path, capsys):
    _, data, _, _ = planted
    X, Y, _ = load_data(data)
    lengths = np.random.default_rng(1).integers(5, 11, size=len(X))
    Y[np.arange(10)[None, :] >= lengths[:, None]] = np.nan  # padding is never read
    save_data(tmp_path / "ragged.npz", inputs=X, outputs=Y, lengths=lengths)
    code, out, _ = run(capsys, "fit", tmp_path / "ragged.npz", "--hidden-size", "3", "--activation", "0,1,0.5",
                       "--out", tmp_path / "m.safetensors")
    assert code == 0 and f"{lengths.sum()} time steps" in out


def test_fit_outlier_factor(planted, tmp_path, capsys):
    """One sequence with an extreme output: refused with --robust off (exit 2, one line naming the
    ways out), fitted by median of means by default, and without it under --outlier-factor."""
    _, data, _, _ = planted
    X, Y, _ = load_data(data)
    Y[7, 3] *= 5000.0
    save_data(tmp_path / "outlier.npz", inputs=X, outputs=Y)
    args = ["fit", tmp_path / "outlier.npz", "--hidden-size", "3", "--activation", "0,1,0.5", "--out", tmp_path / "m.safetensors"]
    code, out, err = run(capsys, *args, "--robust", "off")
    assert_one_line_error(code, out, err)
    assert "extreme time steps" in err and "--outlier-factor" in err and "robust='on'" in err
    code, out, _ = run(capsys, *args)
    assert code == 0 and "median of means" in out
    code, out, _ = run(capsys, *args, "--outlier-factor", "100")
    assert code == 0 and "left out 1 of 2000 sequences" in out and f"{(len(X) - 1) * 10} time steps" in out


def test_simulate_is_reproducible_and_seeds_differ(tmp_path, capsys):
    args = SIM + ["--sequences", "5", "--length", "4"]
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        assert run(capsys, *args, "--seed", seed, "--out", tmp_path / f"{name}.npz")[0] == 0
    a, b, c = (load_data(tmp_path / f"{n}.npz") for n in "abc")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_simulate_options(tmp_path, capsys):
    code, _, _ = run(capsys, *SIM, "--sequences", "50", "--length", "6", "--noise", "0", "--recurrent-norm", "0.5",
                     "--input-std", "0.2", "--out", tmp_path / "d.npz", "--truth", tmp_path / "t.safetensors")
    assert code == 0
    X, Y, _ = load_data(tmp_path / "d.npz")
    true = load_model(tmp_path / "t.safetensors")
    np.testing.assert_allclose(Y, true.predict(X))  # no noise
    assert np.linalg.norm(true.U, 2) == pytest.approx(0.5)
    assert true.activation.coefficients == (0.0, 1.0, 0.5)


def test_bidirectional_simulate_fit_predict(tmp_path, capsys):
    data, truth, model = tmp_path / "b.npz", tmp_path / "bt.safetensors", tmp_path / "bm.safetensors"
    code, _, _ = run(capsys, "simulate", "--bidirectional", "--hidden-size", "2", "--input-dim", "8", "--output-dim",
                     "6", "--sequences", "5000", "--length", "10", "--seed", "3", "--out", data, "--truth", truth)
    assert code == 0
    true = load_model(truth)
    assert isinstance(true, BRNN) and true.d_h == 2 and true.B1.shape == (2, 8)
    code, out, _ = run(capsys, "fit", data, "--bidirectional", "--hidden-size", "2", "--activation", "0,1,0.5",
                       "--out", model)
    assert code == 0 and "BRNN" in out
    est = load_model(model)
    assert isinstance(est, BRNN)
    errors = parameter_errors(true, est)
    assert max(errors[k] for k in ("A1", "A2", "B1", "B2")) < 0.2, errors
    # predict works from the file alone, for either kind, on inputs without outputs and ragged
    X, _, _ = load_data(data)
    lengths = np.random.default_rng(0).integers(1, 11, size=X.shape[0])
    save_data(tmp_path / "inputs.npz", inputs=X, lengths=lengths)
    code, _, _ = run(capsys, "predict", model, tmp_path / "inputs.npz", "--out", tmp_path / "p.npz")
    assert code == 0
    with np.load(tmp_path / "p.npz") as z:
        pred = z["outputs"]
        np.testing.assert_array_equal(z["lengths"], lengths)
    np.testing.assert_allclose(pred, est.predict(X, lengths))
    assert np.all(pred[np.arange(10)[None, :] >= lengths[:, None]] == 0)  # zeros on padding
    assert prediction_error(true.predict(X, lengths), pred, lengths) < 0.05


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "simulate" in capsys.readouterr().out
    assert main(["fit", "--help"]) == 0
    assert "--bidirectional" in capsys.readouterr().out


def test_demo_small(capsys):
    rows = run_demo(seed=1, steps=(20_000,))
    out = capsys.readouterr().out
    assert "err A1" in out and "pred rel. MSE" in out and "fit (s)" in out
    assert len(rows) == 1 and rows[0]["N"] == 20_000
    assert rows[0]["A1"] < 0.2 and rows[0]["prediction"] < 0.05


@pytest.mark.slow
def test_demo_command(capsys):
    code, out, err = run(capsys, "demo")
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("1e+0")]
    assert len(lines) == 2
    err_1e6 = [float(v) for v in lines[1].split()[1:4]]
    assert max(err_1e6) < 0.1


# -------------------------------------------------------------- bad input
def _bad_cases(d, data, truth):
    """(name, argv) pairs that must each exit 2 with one line on stderr."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((200, 10, 6)), rng.standard_normal((200, 10, 5))

    def npz(name, **arrays):
        np.savez(d / name, **arrays)
        return d / name

    fit = ["--hidden-size", "3", "--activation", "0,1,0.5", "--out", d / "out.safetensors"]
    (d / "text.npz").write_text("not numpy\n")
    (d / "garbage.safetensors").write_bytes(b"\0" * 100)
    cases = [
        ("missing data file", ["fit", d / "missing.npz", *fit]),
        ("data file not an npz", ["fit", d / "text.npz", *fit]),
        ("missing inputs array", ["fit", npz("noin.npz", outputs=Y), *fit]),
        ("missing outputs array", ["fit", npz("noout.npz", inputs=X), *fit]),
        ("wrong rank", ["fit", npz("rank.npz", inputs=X[0], outputs=Y), *fit]),
        ("mismatched sequences", ["fit", npz("mis.npz", inputs=X, outputs=Y[:100]), *fit]),
        ("string dtype", ["fit", npz("str.npz", inputs=X.astype(str), outputs=Y), *fit]),
        ("boolean dtype", ["fit", npz("bool.npz", inputs=X, outputs=Y > 0), *fit]),
        ("NaN in outputs", ["fit", npz("nan.npz", inputs=X, outputs=np.where(Y > 3, np.nan, Y)), *fit]),
        ("inf in inputs", ["fit", npz("inf.npz", inputs=np.where(X > 3, np.inf, X), outputs=Y), *fit]),
        ("bad lengths", ["fit", npz("len.npz", inputs=X, outputs=Y, lengths=np.full(200, 11)), *fit]),
        ("too few time steps", ["fit", npz("few.npz", inputs=X[:5], outputs=Y[:5]), *fit]),
        ("hidden size too large", ["fit", data, "--hidden-size", "6", "--activation", "0,1,0.5",
                                   "--out", d / "o.safetensors"]),
        ("bidirectional hidden size too large", ["fit", data, "--bidirectional", "--hidden-size", "3",
                                                 "--activation", "0,1,0.5", "--out", d / "o.safetensors"]),
        ("unidirectional data fitted as a BRNN", ["fit", data, "--bidirectional", "--hidden-size", "1",
                                                  "--activation", "0,1,0.5", "--out", d / "o.safetensors"]),
        ("malformed activation", ["fit", data, "--hidden-size", "3", "--activation", "0,1,x", "--out", d / "o"]),
        ("empty activation", ["fit", data, "--hidden-size", "3", "--activation", "", "--out", d / "o"]),
        ("linear activation", ["fit", data, "--hidden-size", "3", "--activation", "0,1", "--out", d / "o"]),
        ("no linear term", ["fit", data, "--hidden-size", "3", "--activation", "0,0,1", "--out", d / "o"]),
        ("zero hidden size", ["fit", data, "--hidden-size", "0", "--activation", "0,1,0.5", "--out", d / "o"]),
        ("output is the input", ["fit", data, "--hidden-size", "3", "--activation", "0,1,0.5", "--out", data]),
        ("output directory missing", ["fit", data, *fit[:-1], d / "no" / "such" / "dir.safetensors"]),
        ("output is a directory", ["fit", data, *fit[:-1], d]),
        ("missing model file", ["predict", d / "missing.safetensors", data, "--out", d / "p.npz"]),
        ("model file not safetensors", ["predict", d / "garbage.safetensors", data, "--out", d / "p.npz"]),
        ("model given as data", ["predict", truth, truth, "--out", d / "p.npz"]),
        ("data given as model", ["predict", data, data, "--out", d / "p.npz"]),
        ("predict output is the model", ["predict", truth, data, "--out", truth]),
        ("predict input dimension", ["predict", truth, npz("dim.npz", inputs=X[:, :, :4]), "--out", d / "p.npz"]),
        ("divergent simulation", [*SIM, "--sequences", "20", "--length", "10", "--input-std", "30",
                                  "--out", d / "div.npz"]),
        ("simulate negative noise", [*SIM, "--sequences", "2", "--length", "3", "--noise", "-1", "--out", d / "s"]),
        ("simulate zero length", [*SIM, "--sequences", "2", "--length", "0", "--out", d / "s.npz"]),
        ("simulate truth is out", [*SIM, "--sequences", "2", "--length", "3", "--out", d / "s", "--truth", d / "s"]),
        ("simulate non-integer size", [*SIM, "--sequences", "1e3", "--length", "3", "--out", d / "s.npz"]),
        ("missing required option", ["fit", data, "--hidden-size", "3", "--out", d / "o"]),
        ("unknown option", ["fit", data, *fit, "--frobnicate"]),
        ("unknown command", ["train", data]),
        ("no command", []),
        ("bad device", ["fit", data, *fit, "--device", "tpu"]),
    ]
    if not torch.cuda.is_available():
        cases.append(("cuda without a GPU", ["fit", data, *fit, "--device", "cuda"]))
        cases.append(("cuda without a GPU (predict)", ["predict", truth, data, "--out", d / "p.npz",
                                                       "--device", "cuda"]))
    return cases


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (without one, --device cuda is a bad-input case)")
def test_fit_and_predict_on_cuda(planted, tmp_path, capsys):
    _, data, _, model = planted
    code, _, err = run(capsys, "fit", data, "--hidden-size", "3", "--activation", "0,1,0.5", "--device", "cuda",
                       "--out", tmp_path / "g.safetensors")
    assert code == 0, err
    cpu, gpu = load_model(model), load_model(tmp_path / "g.safetensors")
    for k in ("A1", "U", "A2"):
        a, b = getattr(gpu, k), getattr(cpu, k)
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-6, k
    code, _, err = run(capsys, "predict", model, data, "--device", "cuda", "--out", tmp_path / "p.npz")
    assert code == 0, err
    X = load_data(data)[0]
    with np.load(tmp_path / "p.npz") as z:  # predict writes the predictions as "outputs"
        np.testing.assert_allclose(z["outputs"], cpu.predict(X), rtol=1e-9, atol=1e-12)


def test_bad_input_exits_2_with_one_line(planted, tmp_path, capsys):
    _, data, truth, _ = planted
    before = {p: p.read_bytes() for p in (data, truth)}
    for name, argv in _bad_cases(tmp_path, data, truth):
        code, out, err = run(capsys, *argv)
        try:
            assert_one_line_error(code, out, err)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
    assert {p: p.read_bytes() for p in before} == before  # inputs never touched
    written = {p.name for p in tmp_path.iterdir()}
    assert not {"out.safetensors", "o.safetensors", "p.npz", "div.npz", "s.npz", "s"} & written
    assert not [n for n in written if n.endswith(".tmp")]


def test_existing_output_untouched_after_failed_command(planted, tmp_path, capsys):
    _, data, truth, _ = planted
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"an earlier result")
    code, o, e = run(capsys, "fit", data, "--hidden-size", "6", "--activation", "0,1,0.5", "--out", out)
    assert_one_line_error(code, o, e)
    code, o, e = run(capsys, *SIM, "--sequences", "20", "--length", "10", "--input-std", "30",
                     "--out", tmp_path / "d.npz", "--truth", out)
    assert_one_line_error(code, o, e)
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_failure_while_writing_keeps_old_file(planted, tmp_path, capsys, monkeypatch):
    """A crash in the middle of writing the output leaves the previous file whole."""
    _, _, truth, model = planted
    data = tmp_path / "x.npz"
    save_data(data, inputs=np.zeros((3, 4, 6)))
    out = tmp_path / "pred.npz"
    out.write_bytes(b"old predictions")

    def broken_savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    code, o, e = run(capsys, "predict", truth, data, "--out", out)
    assert_one_line_error(code, o, e)
    assert "No space left on device" in e and str(out) in e
    assert out.read_bytes() == b"old predictions"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.npz", "x.npz"]


# -------------------------------------------------------------- entry point
def test_installed_entry_point(tmp_path):
    """The console script and ``python -m spectral_rnn``, as a user runs them."""
    exe = shutil.which("spectral-rnn", path=os.path.dirname(sys.executable)) or shutil.which("spectral-rnn")
    assert exe is not None, "the spectral-rnn console script is not installed (pip install -e .)"
    ok = subprocess.run([exe, *SIM, "--sequences", "10", "--length", "5", "--out", str(tmp_path / "d.npz")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "d.npz").exists()
    bad = subprocess.run([sys.executable, "-m", "spectral_rnn", "fit", str(tmp_path / "missing.npz"),
                          "--hidden-size", "2", "--activation", "0,1,0.5", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == "" and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("spectral-rnn: error: ") and "missing.npz" in bad.stderr


# ------------------------------------------------------------------ tanh
def test_tanh_simulate_predict_and_fit_refusal(tmp_path, capsys):
    data, truth = tmp_path / "t.npz", tmp_path / "t.safetensors"
    for bidir in ([], ["--bidirectional"]):
        code, out, _ = run(capsys, "simulate", *bidir, "--hidden-size", "2", "--input-dim", "6", "--output-dim", "5",
                           "--sequences", "50", "--length", "7", "--activation", "tanh", "--out", data,
                           "--truth", truth)
        assert code == 0 and "'tanh'" in out
        true = load_model(truth)
        assert true.activation.to_string() == "tanh" and isinstance(true, BRNN if bidir else IORNN)
        # predict works from the file alone
        code, _, _ = run(capsys, "predict", truth, data, "--out", tmp_path / "p.npz")
        assert code == 0
        X, _, _ = load_data(data)
        with np.load(tmp_path / "p.npz") as z:
            np.testing.assert_allclose(z["outputs"], true.predict(X))
    # the third-order route fits tanh (tests/test_odd_route.py); its refusals are one line too
    code, out, err = run(capsys, "fit", data, "--hidden-size", "3", "--activation", "tanh", "--bidirectional",
                         "--out", tmp_path / "m.safetensors")
    assert_one_line_error(code, out, err)
    assert "too large" in err
    assert not (tmp_path / "m.safetensors").exists()
    code, out, err = run(capsys, "fit", data, "--hidden-size", "2", "--activation", "tanhh", "--out", tmp_path / "m")
    assert_one_line_error(code, out, err)
    assert "malformed activation" in err


def test_tanh_accepted_by_compare_and_odd_polynomials_parse():
    from spectral_rnn import Polynomial, Tanh
    from spectral_rnn.cli import build_parser

    a = build_parser().parse_args(["compare", "d.npz", "--hidden-size", "2", "--activation", "tanh"])
    assert a.activation == Tanh()
    a = build_parser().parse_args(["simulate", "--hidden-size", "2", "--input-dim", "3", "--output-dim", "3",
                                   "--sequences", "2", "--length", "2", "--activation", "0,1,0,-0.3333", "--out", "x"])
    assert a.activation == Polynomial([0, 1, 0, -0.3333])


def test_heavy_tailed_inputs_refused_unless_no_tail_check(tmp_path, capsys):
    """Student-t(3) innovations: exit 2 naming the tails and the option; --no-tail-check fits them."""
    from spectral_rnn import GaussianAR1
    from spectral_rnn.datasets import sample_inputs

    proc = GaussianAR1.random(3, random_state=0)
    X = 0.3 * sample_inputs(proc, 3000, 10, innovations="t3", random_state=1)  # small: the recursion stays finite
    truth = IORNN.random(3, 2, 4, activation="0,1,0.5", recurrent_norm=0.3, random_state=2)
    save_data(tmp_path / "t3.npz", inputs=X, outputs=truth.simulate(X, noise_std=0.1, random_state=3))
    argv = ["fit", tmp_path / "t3.npz", "--hidden-size", "2", "--activation", "0,1,0.5", "--min-gap", "1",
            "--out", tmp_path / "m"]  # min-gap 1: this small sample is about the tails, not the gap
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, out, err)
    assert "heavy-tailed" in err and "--no-tail-check" in err
    code, out, err = run(capsys, *argv, "--no-tail-check")
    assert code == 0, err
    assert isinstance(load_model(tmp_path / "m"), IORNN)


def test_control_variate_option(tmp_path, capsys):
    """--control-variate on/off reaches the estimator (Laplace inputs: auto is on, so off differs);
    a bad value exits 2 with one line."""
    from spectral_rnn import make_planted

    p = make_planted("iornn", d_x=4, d_h=2, d_y=3, n_steps=30_000, innovations="laplace", random_state=0)
    save_data(tmp_path / "lap.npz", inputs=p.X, outputs=p.Y)
    models = {}
    for opt in ("auto", "on", "off"):
        code, out, err = run(capsys, "fit", tmp_path / "lap.npz", "--hidden-size", "2", "--activation", "0,1,0.5",
                             "--control-variate", opt, "--out", tmp_path / f"{opt}.safetensors")
        assert code == 0, err
        models[opt] = load_model(tmp_path / f"{opt}.safetensors")
    assert np.array_equal(models["auto"].A1, models["on"].A1)
    assert not np.allclose(models["on"].A1, models["off"].A1, rtol=0, atol=1e-9)
    assert_one_line_error(*run(capsys, "fit", tmp_path / "lap.npz", "--hidden-size", "2", "--activation", "0,1,0.5",
                               "--control-variate", "maybe", "--out", tmp_path / "x.safetensors"))
