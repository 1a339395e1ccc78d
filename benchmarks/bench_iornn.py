#!/usr/bin/env python
"""Benchmark of the spectral IO-RNN fit on planted models (DESIGN.md section 7 size).

Sweeps N = 1e4, 3e4, 1e5, 3e5, 1e6 time steps (sequences of T = 10 steps) with
d_x = 10, d_h = 4, d_y = 8, f(u) = u + 0.5 u^2, ||U||_2 = 0.3, output noise 0.1;
models from ``IORNN.random``, inputs from ``GaussianAR1.random(10, random_state=seed)``.
A last block fits one long sequence (1 x N steps) to show that memory does not grow
when sequences are cut in time.

Per N it prints (medians over seeds; memory: the largest over seeds):

* rel. errors of A1, A2, U after matching hidden units, and the held-out prediction
  rel. MSE against the true model's conditional mean on fresh inputs;
* fit time (one ``SpectralIORNN.fit``), the time of one plain pass over the same data
  (X and Y read into torch float64 and one product ``Y^T X``) and their ratio;
* peak extra memory of the fit: each (N, seed) runs in a fresh subprocess, which
  loads the data, records its RSS, fits, and reads the peak RSS
  ``getrusage(RUSAGE_SELF).ru_maxrss`` (torch allocations are invisible to
  tracemalloc). The library and torch are warmed up on a tiny fit before the data
  are loaded, so their own footprint is not counted.

A polynomial RNN is not globally stable: a planted draw that diverges on the
sampled inputs yields no data and is redrawn (the count is printed).

Usage::

    python benchmarks/bench_iornn.py [--seeds 3] [--max-n 1e6] [--device cpu|cuda] [--threads K]

Timings on a shared machine include CPU contention from other processes: compare
fit and plain pass within one row (they are measured in the same process, one
after the other), not rows from different runs. With torch's default of one
thread per core and another busy process on the machine, every multi-threaded
torch operation can wait a scheduler time slice (~8 ms measured on 2 cores), which
dominates at small N; ``--threads 1`` shows the single-thread cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

D_X, D_H, D_Y, T, NOISE = 10, 4, 8, 10, 0.1
ACTIVATION = (0.0, 1.0, 0.5)
SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
LONG_SIZES = (300_000, 1_000_000)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _hwm_mb() -> float:
    """Peak RSS of this address space (VmHWM): reset at exec, unlike ru_maxrss."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def make_data(n_steps: int, seed: int, long: bool, path: str) -> dict:
    """Draw a planted model and data; save them under ``path``. Returns metadata."""
    from spectral_rnn import DivergenceError, GaussianAR1, IORNN

    proc = GaussianAR1.random(D_X, random_state=seed)
    n_seq, length = (1, n_steps) if long else (n_steps // T, T)
    X = proc.sample(n_seq, length, random_state=seed + 1)
    redraws = 0
    for k in range(50):
        model = IORNN.random(D_X, D_H, D_Y, activation=ACTIVATION,
                             random_state=seed if k == 0 else np.random.default_rng([seed, k]))
        try:
            Y = model.simulate(X, noise_std=NOISE, random_state=seed + 2)
            break
        except DivergenceError:
            redraws += 1
    else:  # pragma: no cover
        raise RuntimeError("no stable planted model found")
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "Y.npy"), Y)
    np.savez(os.path.join(path, "truth.npz"), A1=model.A1, U=model.U, A2=model.A2)
    return {"redraws": redraws, "data_mb": (X.nbytes + Y.nbytes) / 2**20}


def worker(path: str, seed: int, device: str, threads: int | None = None) -> dict:
    """Runs in a fresh process: load data, fit, measure memory and times, evaluate."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from spectral_rnn import GaussianAR1, IORNN, SpectralIORNN, SpectralRNNError, parameter_errors, prediction_error

    # warm up torch and the library on a tiny problem, so their footprint is not the fit's
    wp = GaussianAR1.random(D_X, random_state=0)
    wx = wp.sample(3000, T, random_state=0)
    wm = IORNN.random(D_X, D_H, D_Y, random_state=0)
    try:
        SpectralIORNN(D_H, activation=ACTIVATION, random_state=0, device=device).fit(wx, wm.simulate(wx, noise_std=NOISE))
    except SpectralRNNError:
        pass
    del wx, wm

    X = np.load(os.path.join(path, "X.npy"))
    Y = np.load(os.path.join(path, "Y.npy"))
    rss_loaded, peak_loaded = _rss_mb(), _maxrss_mb()

    t0 = time.perf_counter()
    try:
        est = SpectralIORNN(D_H, activation=ACTIVATION, random_state=seed, device=device).fit(X, Y)
        error = None
    except SpectralRNNError as exc:  # e.g. too few samples to show d_h components: a clear refusal
        est, error = None, f"{type(exc).__name__}: {exc}"
    fit_s = time.perf_counter() - t0
    peak_fit, hwm_fit = _maxrss_mb(), _hwm_mb()

    # one plain pass over the same data: read into torch float64 (on the device), one product Y^T X
    dev = torch.device(device)
    plain = []
    for _ in range(3):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        Xt = torch.as_tensor(X).to(dev, torch.float64).reshape(-1, D_X)
        Yt = torch.as_tensor(Y).to(dev, torch.float64).reshape(-1, D_Y)
        G = Yt.T @ Xt
        if dev.type == "cuda":
            torch.cuda.synchronize()
        plain.append(time.perf_counter() - t0)
        del Xt, Yt, G
    plain_s = float(np.median(plain))

    truth = np.load(os.path.join(path, "truth.npz"))
    model = IORNN(truth["A1"], truth["U"], truth["A2"], ACTIVATION)
    proc = GaussianAR1.random(D_X, random_state=seed)
    Xh = proc.sample(2000, T, random_state=seed + 1000)  # fresh inputs
    if est is None:
        errs = {"A1": float("nan"), "U": float("nan"), "A2": float("nan"), "pred": float("nan")}
    else:
        errs = parameter_errors(model, est.model_)
        errs["pred"] = prediction_error(model.predict(Xh), est.predict(Xh))
    return {
        **errs,
        "error": error,
        "fit_s": fit_s,
        "plain_s": plain_s,
        "stages": {} if est is None else est.timings_,
        "rss_loaded_mb": rss_loaded,
        "extra_mb": max(0.0, peak_fit - rss_loaded),
        "load_peak_over_rss_mb": max(0.0, peak_loaded - rss_loaded),
        "extra_hwm_mb": max(0.0, hwm_fit - rss_loaded),
        "n_threads": torch.get_num_threads(),
    }


def run_one(n_steps: int, seed: int, long: bool, device: str, threads: int | None = None) -> dict:
    """Data are drawn in one subprocess and fitted in another: on Linux a child's ru_maxrss
    starts from its parent's RSS at fork (it survives exec), so the driver must stay small."""
    with tempfile.TemporaryDirectory(prefix="bench_iornn_") as tmp:
        me = [sys.executable, os.path.abspath(__file__)]
        out = subprocess.run(me + ["--make", tmp, "--n", str(n_steps), "--seed", str(seed)] + (["--long"] if long else []),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"data generation failed (N={n_steps}, seed={seed}):\n{out.stderr}")
        meta = json.loads(out.stdout.strip().splitlines()[-1])
        cmd = me + ["--worker", tmp, "--seed", str(seed), "--device", device] + (["--threads", str(threads)] if threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"worker failed (N={n_steps}, seed={seed}):\n{out.stderr}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
    return {**meta, **res}


HEADER = (f"{'layout':>10} {'N':>9} {'A1':>7} {'A2':>7} {'U':>7} {'pred':>9} {'fit s':>7} "
          f"{'plain s':>8} {'ratio':>6} {'extra MB':>9} {'data MB':>8} {'redraw':>6}")


def row(layout: str, n: int, rs: list[dict]) -> str:
    ok = [r for r in rs if r["error"] is None]
    med = lambda k: float(np.median([r[k] for r in ok])) if ok else float("nan")  # noqa: E731
    refused = len(rs) - len(ok)
    note = f"  ({refused}/{len(rs)} fits refused: ill-conditioned)" if refused else ""
    return (f"{layout:>10} {n:>9,d} {med('A1'):7.4f} {med('A2'):7.4f} {med('U'):7.4f} {med('pred'):9.2e} "
            f"{med('fit_s'):7.3f} {med('plain_s'):8.4f} {np.median([r['fit_s'] / r['plain_s'] for r in rs]):6.0f} "
            f"{max(r['extra_mb'] for r in rs):9.1f} {rs[0]['data_mb']:8.1f} {sum(r['redraws'] for r in rs):6d}" + note)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per N (medians are printed)")
    ap.add_argument("--max-n", type=float, default=1e6, help="largest number of time steps")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads in the fit and the plain pass (default: torch's choice)")
    ap.add_argument("--no-long", action="store_true", help="skip the single-long-sequence block")
    ap.add_argument("--verbose", action="store_true", help="also print every seed and the stage times")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--make", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--long", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.make:
        print(json.dumps(make_data(args.n, args.seed, args.long, args.make)))
        return

    if args.worker:
        print(json.dumps(worker(args.worker, args.seed, args.device, args.threads)))
        return

    print(f"spectral IO-RNN benchmark: d_x={D_X} d_h={D_H} d_y={D_Y} f=u+0.5u^2 ||U||=0.3 noise={NOISE}; "
          f"{args.seeds} seed(s) per N; device={args.device}; torch threads={args.threads or 'default'}; "
          f"cpus={os.cpu_count()}; load average at start {os.getloadavg()[0]:.1f}")
    print("errors: medians over seeds; extra MB: peak RSS of the fit beyond the loaded data, max over seeds;")
    print("ratio: fit time / one plain pass (read X, Y into torch float64 + one product Y^T X)\n")
    blocks = [("n x 10", n, False) for n in SIZES if n <= args.max_n]
    if not args.no_long:
        blocks += [("1 x N", n, True) for n in LONG_SIZES if n <= args.max_n]
    print(HEADER)
    for layout, n, long in blocks:
        rs = [run_one(n, s, long, args.device, args.threads) for s in range(args.seeds)]
        print(row(layout, n, rs), flush=True)
        if args.verbose:
            for s, r in enumerate(rs):
                if r["error"]:
                    print(f"{'':>10} seed {s}: {r['error']}")
                    continue
                st = " ".join(f"{k}={v:.3f}" for k, v in r["stages"].items())
                print(f"{'':>10} seed {s}: A1 {r['A1']:.4f} A2 {r['A2']:.4f} U {r['U']:.4f} pred {r['pred']:.2e} "
                      f"fit {r['fit_s']:.3f}s plain {r['plain_s']:.4f}s extra {r['extra_mb']:.1f}MB "
                      f"(VmHWM-based {r['extra_hwm_mb']:.1f}MB; pre-fit peak over rss {r['load_peak_over_rss_mb']:.1f}MB; "
                      f"torch threads {r['n_threads']}) [{st}]", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
