"""Issue 10's wide-input target set against the exact fit's arithmetic floor and an information bound, in one run.

The target: an IO-RNN with d_x = 300 (d_h = 4, d_y = 8, 1e6 steps) fitted in under 10x the
d_x = 10 time. This script times, back to back in one process (torch on ``--threads``):

* ``fit d_x=10`` and ``fit d_x=300``: ``SpectralIORNN(4).fit`` on planted data of each width
  (``make_planted``, Gaussian AR(1) inputs, unit-norm rows of A1; medians of ``--repeat`` fits);
* the products no exact float64 fit at d_x = 300 can skip, each on the same 1e6 x 300 inputs
  (float64, chunks of 6,990 steps as the fit uses, so each product is as efficient as the fit's):

  - ``AR sums``: the autoregression's least squares needs ``sum x_t x_t^T`` and the lag product
    ``sum x_{t-1} x_t^T`` (two d_x x d_x products per step, the centred copy of each chunk
    included), whatever route computes them;
  - ``sketch``: the range of A1 from ``T(theta_a, I, omega_b)`` needs two products of the inputs
    with ``d_x x p k`` matrices (``p k = 80`` columns here: 8 output and 10 input probes), one
    for ``x_t`` and one for ``x_{t-1}`` in the score;
  - ``GEMM peak``: a square 2000 x 2000 float64 product, for the machine's attainable flop rate.

Each floor is also given as a multiple of the d_x = 10 fit. If the floor alone is near or above
10x, no implementation of the exact float64 method meets the target on this machine.

The accuracy line of the target (A1 error at d_x = 300 within 2x of d_x = 10) is set against an
oracle's Cramer-Rao bound: the smallest relative Frobenius error of A1 an unbiased estimator can
reach at N steps when the hidden states, U and A2 are known (Fisher information of
``y_t = A2^T f(A1 x_t + U h_{t-1}) + noise`` for A1 alone, on 20,000 steps of each planted model):
the bound grows like ``sqrt(d_x)`` although every row of A1 has norm 1, since A1 has ``d_x``
numbers per unit.

    PYTHONPATH=src python benchmarks/bench_dx_floor.py --threads 2      # about 1.5 minutes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ar_products(X: np.ndarray, rows: int) -> float:
    """Seconds for the AR sums' two d x d products over ``X`` (n, T, d), chunk by chunk."""
    n, T, d = X.shape
    per = max(1, rows // T)
    centre = torch.as_tensor(X[:per].reshape(-1, d).mean(0))
    buf = torch.empty((per, T, d), dtype=torch.float64)
    G = torch.zeros((d, d), dtype=torch.float64)
    L = torch.zeros((d, d), dtype=torch.float64)
    t0 = time.perf_counter()
    for i in range(0, n, per):
        src = torch.as_tensor(X[i:i + per])
        xw = torch.sub(src, centre, out=buf[:src.shape[0]]).reshape(-1, d)
        G += xw.T @ xw
        L += xw[:-1].T @ xw[1:]
    return time.perf_counter() - t0


def sketch_products(X: np.ndarray, rows: int, width: int, seed: int = 0) -> float:
    """Seconds for two products of the inputs with ``d x width`` operands (the sketch's ``x_t``
    and ``x_{t-1}`` terms), chunk by chunk, as ``(width, m) @ (m, d)`` sums."""
    n, T, d = X.shape
    per = max(1, rows // T)
    g = torch.Generator().manual_seed(seed)
    H = torch.randn((per * T, width), generator=g, dtype=torch.float64)
    acc = torch.zeros((width, d), dtype=torch.float64)
    t0 = time.perf_counter()
    for i in range(0, n, per):
        xw = torch.as_tensor(X[i:i + per]).reshape(-1, d)
        h = H[:xw.shape[0]]
        acc += h.T @ xw
        acc += h[1:].T @ xw[:-1]
    return time.perf_counter() - t0


def oracle_bound(model, X: np.ndarray, n: int, noise_std: float = 0.1, steps: int = 20_000) -> float:
    """Cramer-Rao bound on the relative Frobenius error of A1 at ``n`` steps, for an oracle that knows
    the hidden states, U and A2 (``make_planted``'s output noise ``noise_std``), from the Fisher
    information ``J^T J / noise_std^2`` on the first ``steps`` steps of ``X`` (n_sequences, T, d_x)."""
    Xs = X[:max(1, steps // X.shape[1])]
    d_x, d_h = Xs.shape[2], model.A1.shape[0]
    H = model.hidden_states(Xs)
    Hprev = np.concatenate([np.zeros_like(H[:, :1]), H[:, :-1]], axis=1)
    fprime = np.asarray(model.activation.deriv(torch.as_tensor(Xs @ model.A1.T + Hprev @ model.U.T), 1))
    x, f1 = Xs.reshape(-1, d_x), fprime.reshape(-1, d_h)
    # d y_o / d A1[j, i] = A2[j, o] f'(a_j) x_i: one row per (step, output)
    J = torch.as_tensor(np.einsum("jo,tj,ti->toji", model.A2, f1, x).reshape(-1, d_h * d_x))
    info = (J.T @ J).numpy() / x.shape[0] / noise_std**2
    return float(np.sqrt(np.trace(np.linalg.inv(info)) / n) / np.linalg.norm(model.A1))


def gemm_rate() -> float:
    a = torch.randn(2000, 2000, dtype=torch.float64)
    a @ a
    t = _median_time(lambda: a @ a, 5)
    return 2 * 2000**3 / t / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and the fits' n_threads); default 2")
    ap.add_argument("--n", type=float, default=1e6, help="steps (default 1e6)")
    ap.add_argument("--repeat", type=int, default=3, help="fits per width (median); default 3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spectral_rnn import SpectralIORNN, make_planted, parameter_errors

    n = int(args.n)
    fits, errs, bounds = {}, {}, {}
    for d_x in (10, 300):
        p = make_planted("iornn", d_x, 4, 8, n_steps=n, random_state=1, input_norm=1.0, n_test=10)
        X, Y = np.ascontiguousarray(p.X), np.ascontiguousarray(p.Y)
        SpectralIORNN(4, random_state=0).fit(X[:20_000], Y[:20_000])  # warm-up
        est = []
        fits[d_x] = _median_time(
            lambda: est.append(SpectralIORNN(4, random_state=0, n_threads=args.threads).fit(X, Y)), args.repeat)
        errs[d_x] = parameter_errors(p.model, est[-1].model_)["A1"]
        bounds[d_x] = oracle_bound(p.model, X, n)
        if d_x == 300:
            rows = min(1 << 17, max(256, (1 << 21) // d_x))  # the fit's chunk: at most 2M numbers
            ar = float(np.median([ar_products(X, rows) for _ in range(3)]))
            sk = float(np.median([sketch_products(X, rows, 80) for _ in range(3)]))
        del p, X, Y
    rate = gemm_rate()
    t10 = fits[10]
    print(f"IO-RNN, d_h=4, d_y=8, {n:,} steps, {args.threads} torch thread(s); float64 GEMM peak {rate:.0f} GFLOP/s")
    print(f"{'what':<34} {'seconds':>8} {'x fit d_x=10':>13}")
    rows_out = [("fit d_x=10", t10), ("fit d_x=300", fits[300]),
                ("floor: AR sums (d_x=300)", ar), ("floor: sketch products (d_x=300)", sk),
                ("floor: AR sums + sketch", ar + sk), ("target: 10x fit d_x=10", 10 * t10)]
    for name, s in rows_out:
        print(f"{name:<34} {s:>8.2f} {s / t10:>13.1f}")
    flops = 2 * n * 300 * 300 * 2 + 2 * 2 * n * 300 * 80
    print(f"A1 error: d_x=10 {errs[10]:.4f}, d_x=300 {errs[300]:.4f} ({errs[300] / errs[10]:.1f}x); oracle Cramer-Rao "
          f"bound: d_x=10 {bounds[10]:.5f}, d_x=300 {bounds[300]:.5f} ({bounds[300] / bounds[10]:.1f}x)")
    print(f"floor products: {flops / 1e9:.0f} GFLOP, {flops / 1e9 / (ar + sk):.0f} GFLOP/s achieved")


if __name__ == "__main__":
    main()
