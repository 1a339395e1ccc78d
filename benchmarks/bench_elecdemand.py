"""Half-hourly electricity demand from temperature and the working-day flag (fpp2 ``elecdemand``).

One day (48 half-hours) per sequence, chronological split 70 / 15 / 15 % of the 365
days of 2014 (:func:`spectral_rnn.corpora.load_elecdemand`). Test R^2 (over all test
half-hours, around the test mean) of:

* ``ridge``: ridge regression on calendar features per step: time-of-day one-hot (48),
  working day, temperature and its square (penalty chosen on the dev days);
* ``ridge+tod*workday``: the same plus time-of-day x working-day interactions;
* ``tanh rnn(H) spectral`` / ``random``: a tanh RNN trained by the library's BPTT loop from
  a spectral start (one unit identified from the temperature; see :func:`tanh_rnn`) or from
  PyTorch's default initialisation, same loop, settings and time budget;
* ``gru``: ``torch.nn.GRU`` (inputs: standardised temperature and working-day flag;
  the time of day is the position in the sequence) + ``Linear``, Adam on MSE,
  best dev epoch kept; several seeds.

    python benchmarks/bench_elecdemand.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from spectral_rnn.corpora import load_elecdemand  # noqa: E402


def r2(y, yhat):
    y, yhat = np.ravel(y), np.ravel(yhat)
    return float(1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2))


def calendar(X, interactions=False):
    n, T, _ = X.shape
    tod = np.broadcast_to(np.eye(T), (n, T, T))
    temp, work = X[..., :1], X[..., 1:2]
    parts = [tod, work, temp, temp ** 2]
    if interactions:
        parts.append(tod * work)
    return np.concatenate(parts, axis=-1).reshape(n * T, -1)


def ridge(data, interactions):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    A_tr, A_dv, A_te = (calendar(X, interactions) for X in (data.X_train, data.X_dev, data.X_test))
    sc = StandardScaler().fit(A_tr)
    best = None
    for alpha in (1e-3, 1e-2, 0.1, 1, 10, 100):
        m = Ridge(alpha=alpha).fit(sc.transform(A_tr), data.Y_train.ravel())
        s = r2(data.Y_dev, m.predict(sc.transform(A_dv)))
        if best is None or s > best[0]:
            best = (s, alpha, m)
    s_dev, alpha, m = best
    return s_dev, r2(data.Y_test, m.predict(sc.transform(A_te))), alpha


def gru(data, seed, hidden=32, epochs=120, lr=5e-3, batch=16, bidirectional=False):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mx, sx = data.X_train.reshape(-1, 2).mean(0), data.X_train.reshape(-1, 2).std(0)
    my, sy = data.Y_train.mean(), data.Y_train.std()

    def tx(X):
        return torch.tensor((X - mx) / sx, dtype=torch.float32)

    Xt, Xd, Xs = tx(data.X_train), tx(data.X_dev), tx(data.X_test)
    Yt = torch.tensor((data.Y_train - my) / sy, dtype=torch.float32)
    rnn = torch.nn.GRU(2, hidden, batch_first=True, bidirectional=bidirectional)
    head = torch.nn.Linear(hidden * (2 if bidirectional else 1), 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def pred(X):
        with torch.no_grad():
            return head(rnn(X)[0]).numpy() * sy + my

    best = (-np.inf, None)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = rng.permutation(len(Xt))
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            loss = torch.mean((head(rnn(Xt[idx])[0]) - Yt[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
        s = r2(data.Y_dev, pred(Xd))
        if s > best[0]:
            best = (s, copy.deepcopy((rnn.state_dict(), head.state_dict())))
    fit_s = time.perf_counter() - t0
    rnn.load_state_dict(best[1][0])
    head.load_state_dict(best[1][1])
    return best[0], r2(data.Y_test, pred(Xs)), fit_s


def tanh_rnn(data, seed, hidden=8, budget=30.0, start="spectral", lr=3e-3, batch=16):
    """A tanh RNN (``torch.nn.RNN``, no biases; inputs: standardised temperature, working
    day and a constant 1, which stands in for the biases) refined by the library's BPTT loop
    (:func:`spectral_rnn.refine` / :func:`spectral_rnn.train_bptt`, the same loop and
    settings), from a spectral start or PyTorch's default initialisation.

    The spectral start is what the method can identify here: the working day is constant
    within a day and the constant has no innovation, so neither has a score, and the only
    input with one is the temperature (d_x = 1); with one output (d_y = 1) the third-order
    (tanh) route then identifies one unit. ``SpectralIORNN(1, "tanh")`` is fitted on the
    temperature alone; that unit is unit 0 of the network (its weights on the other inputs
    zero), and the other ``hidden - 1`` units start as PyTorch starts them, with no
    recurrent coupling to unit 0. A spectral unit whose pre-activation standard deviation is
    below 0.1 works in tanh's linear range, where only the product of its input and output
    weights is identified: it is rescaled to pre-activation scale 0.5, keeping the product. Returns (dev R2, test R2, spectral-start dev R2,
    seconds, note).
    """
    from spectral_rnn import IORNN, SpectralIORNN, refine, train_bptt

    torch.manual_seed(seed)
    mx, sx = data.X_train.reshape(-1, 2).mean(0), data.X_train.reshape(-1, 2).std(0)
    my, sy = data.Y_train.mean(), data.Y_train.std()

    def tx(X):
        Z = (X - mx) / sx
        return np.concatenate([Z, np.ones(Z.shape[:2] + (1,))], axis=-1)

    Xt, Xd, Xs = tx(data.X_train), tx(data.X_dev), tx(data.X_test)
    Yt = (data.Y_train - my) / sy
    kw = dict(lr=lr, batch_size=batch, max_epochs=10_000, patience=30, random_state=seed,
              time_budget=budget)
    t0 = time.perf_counter()
    start_dev = float("nan")
    note = ""
    if start == "spectral":
        est = SpectralIORNN(1, activation="tanh", random_state=seed).fit(Xt[..., :1], Yt)
        rng = np.random.default_rng(seed)
        k = 1 / np.sqrt(hidden)
        A1 = rng.uniform(-1 / np.sqrt(hidden), 1 / np.sqrt(hidden), (hidden, 3))  # as torch.nn.RNN
        U = rng.uniform(-k, k, (hidden, hidden))
        A2 = rng.uniform(-k, k, (hidden, 1))  # as torch.nn.Linear (fan-in hidden)
        a, u, w = est.model_.A1[0, 0], est.model_.U[0, 0], est.model_.A2[0]
        # a unit whose pre-activation stays in tanh's linear range identifies only a * w:
        # give it pre-activation scale 0.5 (same a * w), so its gradients are not a / w-skewed
        c = 1.0
        if abs(a) * Xt[..., 0].std() < 0.1:
            c = 0.5 / max(abs(a) * Xt[..., 0].std(), 1e-12)
        A1[0] = [c * a, 0.0, 0.0]
        U[0, :], U[:, 0] = 0.0, 0.0
        U[0, 0] = u
        A2[0] = w / c
        start_model = IORNN(A1, U, A2, activation="tanh")
        start_dev = r2(data.Y_dev, start_model.predict(Xd) * sy + my)
        note = f"spectral unit: A1 {a:.2e}, U {u:.3f}, A2 {w[0]:.2e}, rescaled by {c:.3g} ({est.scores_} score)"
        model, hist = refine(start_model, Xt, Yt, **kw)
        note += f"; refinement stopped: {hist.stop_reason} after {len(hist)} epochs"
    else:
        model, hist = train_bptt(Xt, Yt, hidden_size=hidden, activation="tanh", **kw)
    secs = time.perf_counter() - t0
    return (r2(data.Y_dev, model.predict(Xd) * sy + my), r2(data.Y_test, model.predict(Xs) * sy + my),
            start_dev, secs, note)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--bidirectional", action="store_true", help="also a bidirectional GRU")
    p.add_argument("--hidden-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rnn-hidden", type=int, default=8, help="units of the spectral/random-start tanh RNN")
    p.add_argument("--budget", type=float, default=30.0, help="training seconds of the tanh RNNs")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = load_elecdemand()
    print(f"elecdemand: days train {len(data.X_train)} / dev {len(data.X_dev)} / test {len(data.X_test)}, "
          f"48 steps each; inputs {data.input_names}, output {data.output_names}")
    print(f"{'method':<22} {'dev R2':>8} {'test R2':>8}  notes")
    print("-" * 60)
    for inter in (False, True):
        s_dev, s_test, alpha = ridge(data, inter)
        name = "ridge+tod*workday" if inter else "ridge"
        print(f"{name:<22} {s_dev:>8.3f} {s_test:>8.3f}  alpha {alpha:g}", flush=True)
    for start in ("spectral", "random"):
        rows = [tanh_rnn(data, s, hidden=a.rnn_hidden, budget=a.budget, start=start) for s in a.seeds]
        name = f"tanh rnn({a.rnn_hidden}) {start}"
        for seed, (d, t, d0, f, note) in zip(a.seeds, rows):
            extra = f"; start dev R2 {d0:.3f}, {note}" if start == "spectral" else ""
            print(f"{name + f' s{seed}':<22} {d:>8.3f} {t:>8.3f}  {f:.1f} s{extra}", flush=True)
        print(f"{name + ' median':<22} {np.median([r[0] for r in rows]):>8.3f} {np.median([r[1] for r in rows]):>8.3f}")
    for bidir in (False, True) if a.bidirectional else (False,):
        rows = [gru(data, s, hidden=a.hidden_size, epochs=a.epochs, bidirectional=bidir) for s in a.seeds]
        name = f"{'bi' if bidir else ''}gru({a.hidden_size})"
        for seed, (d, t, f) in zip(a.seeds, rows):
            print(f"{name + f' seed {seed}':<22} {d:>8.3f} {t:>8.3f}  {a.epochs} epochs, {f:.1f} s", flush=True)
        print(f"{name + ' median':<22} {np.median([r[0] for r in rows]):>8.3f} {np.median([r[1] for r in rows]):>8.3f}")


if __name__ == "__main__":
    main()
