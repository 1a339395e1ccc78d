"""Sequence labelling needs both directions: fit a planted bidirectional RNN, see which
units the estimator assigned to the forward and to the backward chain, and that an
IO-RNN fitted to the same data cannot explain it.

    .venv/bin/python examples/bidirectional.py
"""

from __future__ import annotations

import numpy as np

from spectral_rnn import SpectralBRNN, SpectralIORNN, SpectralRNNError, make_planted, parameter_errors, prediction_error


def main() -> None:
    # d_x=12, 3 units per direction, d_y=8: the planted BRNN of issue 3, 4e5 time steps
    p = make_planted("brnn", d_x=12, d_h=3, d_y=8, n_steps=400_000, length=10, random_state=0)
    # (some draws put one near-divergent sequence in the data: the fit is then refused with a
    # clear IllConditionedError, "dominated by a few extreme time steps", rather than returned)
    est = SpectralBRNN(hidden_size=3, activation="0,1,0.5", random_state=0).fit(p.X, p.Y)
    print("share of each component's lag derivative that looks to the past "
          "(forward units near 1, backward near 0):", np.round(np.sort(est.separation_), 3))
    print("relative errors:", {k: round(v, 4) for k, v in parameter_errors(p.model, est.model_).items()})
    print("BRNN held-out prediction rel. MSE: %.2e" % prediction_error(p.Y_test, est.predict(p.X_test)))
    try:
        io = SpectralIORNN(hidden_size=6, activation="0,1,0.5", random_state=0).fit(p.X, p.Y)
        print("IO-RNN with 6 units, held-out prediction rel. MSE: %.2e"
              % prediction_error(p.Y_test, io.predict(p.X_test)))
    except SpectralRNNError as exc:
        print("IO-RNN with 6 units:", exc)


if __name__ == "__main__":
    main()
