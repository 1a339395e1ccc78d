"""Fit a planted IO-RNN by the spectral method, check it against the truth, save it,
export it to PyTorch and refine it by backpropagation.

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from spectral_rnn import SpectralIORNN, load_model, make_planted, parameter_errors, prediction_error, refine, save_model


def main() -> None:
    # d_x=10 inputs, d_h=4 hidden units, d_y=8 outputs, f(u) = u + 0.5 u^2, 2e5 time steps
    p = make_planted("iornn", d_x=10, d_h=4, d_y=8, n_steps=200_000, length=10, random_state=0)
    est = SpectralIORNN(hidden_size=4, activation="0,1,0.5", random_state=0).fit(p.X, p.Y)
    print("fit in %.2f s on %d steps" % (est.timings_["total"], est.n_steps_))
    print("relative errors after matching units:", {k: round(v, 4) for k, v in parameter_errors(p.model, est.model_).items()})
    print("held-out prediction rel. MSE: %.2e" % prediction_error(p.Y_test, est.predict(p.X_test)))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(est.model_, path)
        assert load_model(path) == est.model_

    module = est.model_.to_torch(dtype=torch.float64)
    with torch.no_grad():
        out = module(torch.as_tensor(p.X_test[:5]))
    print("PyTorch module agrees with predict:", bool(np.allclose(out.numpy(), est.predict(p.X_test[:5]))))

    refined, history = refine(est.model_, p.X, p.Y, max_epochs=5, random_state=0)
    print("after 5 epochs of refinement: held-out rel. MSE %.2e" % prediction_error(p.Y_test, refined.predict(p.X_test)))


if __name__ == "__main__":
    main()
