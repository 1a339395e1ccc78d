"""The head-to-head comparison runs end to end on tiny data and writes its plot."""

import math

import numpy as np
import pytest

from spectral_rnn import BRNN, IORNN, InputError
from spectral_rnn.compare import Comparison, MethodResult, run_comparison


@pytest.fixture(scope="module")
def data(compare_problem):
    return compare_problem


def test_compare_end_to_end(tmp_path, data):
    truth, X, Y = data
    out = tmp_path / "cmp.png"
    comp = run_comparison(X, Y, hidden_size=4, truth=truth, budget=0.6, seeds=2, lrs=(1e-2,),
                          init_scales=(1.0, 0.3), batch_size=256, plot=str(out), random_state=0)
    assert isinstance(comp, Comparison)
    assert out.exists() and out.stat().st_size > 1000
    assert len(comp.bptt_runs) == 4
    assert comp.bptt in comp.bptt_runs
    assert comp.target == min(r.best_error for r in comp.bptt_runs)
    assert math.isfinite(comp.spectral.final_error) and comp.spectral.wall_time > 0
    assert comp.refined.final_error <= comp.spectral.final_error * 1.5
    # the refinement's default rule on these 2e4 steps is full-batch L-BFGS; the baseline stays Adam, 256-sequence batches
    # (unless the spectral fit alone used the 0.6 s budget, as on a loaded machine)
    assert comp.refined.note.startswith("no refinement") or comp.refined.settings["optimizer"] == "lbfgs"
    assert all(r.settings["batch"] == 256 and "optimizer" not in r.settings for r in comp.bptt_runs)
    for m in comp.methods:
        assert len(m.times) == len(m.errors) >= 1
        assert all(b >= a - 1e-9 for a, b in zip(m.times, m.times[1:]))
        assert m.wall_time <= 0.6 + 1.0  # the budget, plus one minibatch or one evaluation
    s = comp.summary()
    for k in ("target", "speedup", "final_error_ratio", "t_target_refined", "t_target_bptt",
              "baseline_best_in_10x_spectral", "spectral_speedup"):
        assert k in s
    text = comp.table()
    for word in ("spectral", "spectral+refine", "bptt", "target", "speedup", "init_scale=0.3"):
        assert word in text
    assert "the true conditional mean" in text


def test_compare_ragged_without_truth(data):
    _, X, Y = data
    L = np.random.default_rng(0).integers(4, 9, size=X.shape[0])
    comp = run_comparison(X, Y, L, hidden_size=4, budget=0.3, seeds=1, lrs=(1e-2,), init_scales=(0.3,),
                          batch_size=256)
    assert "held-out outputs" in comp.reference
    assert math.isfinite(comp.refined.final_error)


def test_method_result_helpers():
    r = MethodResult("x", times=[1.0, 2.0, 3.0], errors=[0.5, 0.1, 0.2])
    assert r.time_to(0.2) == 2.0 and r.time_to(0.01) == math.inf
    assert r.best_within(1.5) == 0.5 and r.best_error == 0.1


def test_compare_bad_inputs(data):
    truth, X, Y = data
    with pytest.raises(InputError):
        run_comparison(X, Y, hidden_size=4, budget=0.0)
    with pytest.raises(InputError):
        run_comparison(X, Y, hidden_size=4, truth=BRNN.random(10, 2, 8, random_state=0), budget=1)
    with pytest.raises(InputError):
        run_comparison(X, Y, hidden_size=4, lrs=(), budget=1)
    with pytest.raises(InputError):
        run_comparison(X[:10], Y, hidden_size=4, budget=1)
    # everything after the data is keyword-only: a positional hidden size is refused by Python
    with pytest.raises(TypeError, match="positional"):
        run_comparison(X, Y, None, 4)


def test_cli_fit_refine_and_compare(tmp_path, data, capsys):
    from spectral_rnn.cli import main
    from spectral_rnn.io import load_model, save_data, save_model

    truth, X, Y = data
    d, t, m, p = (str(tmp_path / n) for n in ("d.npz", "t.safetensors", "m.safetensors", "p.png"))
    save_data(d, inputs=X, outputs=Y)
    save_model(truth, t)
    assert main(["fit", d, "--hidden-size", "4", "--activation", "0,1,0.5", "--out", m,
                 "--refine", "--max-epochs", "2"]) == 0
    assert "refined by backpropagation" in capsys.readouterr().out
    assert isinstance(load_model(m), IORNN)
    assert main(["compare", d, "--hidden-size", "4", "--activation", "0,1,0.5", "--budget", "0.3",
                 "--seeds", "1", "--truth", t, "--plot", p]) == 0
    out = capsys.readouterr().out
    assert "spectral+refine" in out and "speedup" in out
    assert (tmp_path / "p.png").exists()
    assert main(["compare", d, "--hidden-size", "4", "--activation", "0,1,0.5", "--budget", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "budget" in err
    assert main(["compare", str(tmp_path / "missing.npz"), "--hidden-size", "4", "--activation", "0,1,0.5"]) == 2


def test_compare_tanh_runs_the_nn_rnn_baseline():
    from spectral_rnn import make_planted

    p = make_planted("iornn", d_x=6, d_h=2, d_y=5, n_steps=4000, length=8, activation="tanh", input_norm=1.0,
                     random_state=0)
    comp = run_comparison(p.X, p.Y, hidden_size=2, activation="tanh", truth=p.model, budget=0.3, seeds=1,
                          lrs=(1e-2,), init_scales=(1.0,), batch_size=256)
    # the third-order route fits tanh (src/spectral_rnn/odd_route.py), and the baseline runs too
    assert "not a polynomial" not in comp.spectral.note
    assert math.isfinite(comp.spectral.final_error), comp.spectral.note
    assert len(comp.bptt_runs) == 1 and math.isfinite(comp.bptt.final_error)
    assert comp.bptt.model.activation.to_string() == "tanh"
