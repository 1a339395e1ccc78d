#!/usr/bin/env python
"""Benchmark of the spectral fits on planted models.

Sweeps N = 1e4, 3e4, 1e5, 3e5, 1e6 time steps (sequences of T = 10 steps) for

* the IO-RNN of docs/method.md, section 'Planted models': d_x = 10, d_h = 4, d_y = 8;
* the BRNN of issue 3: d_x = 12, d_h = 3 per direction, d_y = 8;

both with f(u) = u + 0.5 u^2, input weights of std 0.4, ||U||_2 = ||V||_2 = 0.3, output
noise 0.1, Gaussian AR(1) inputs (``make_planted``). A last block per kind fits one long
sequence (1 x N steps) to show that memory does not grow when sequences are cut in time.

Per N it prints (medians over seeds; memory: the largest over seeds):

* rel. errors of the input weights (A1; for a BRNN the worse of A1 and B1), output
  weights (A2 / B2) and recurrent weights (U / V) after matching hidden units, and the
  held-out prediction rel. MSE against the true model's conditional mean on fresh inputs;
  ``inf`` when the fitted recursion diverges on a held-out sequence (small N);
* fit time (one ``fit``), the time of one plain pass over the same data
  (X and Y read into torch float64 and one product ``Y^T X``) and their ratio;
* peak extra memory of the fit: each (N, seed) runs in a fresh subprocess, which
  loads the data, records its RSS, fits, and reads the peak RSS
  ``getrusage(RUSAGE_SELF).ru_maxrss`` (torch allocations are invisible to
  tracemalloc). The library and torch are warmed up on a tiny fit before the data
  are loaded, so their own footprint is not counted.

A polynomial RNN is not globally stable: a planted draw that diverges on the
sampled inputs yields no data and is redrawn (the count is printed).

Usage::

    python benchmarks/bench_spectral.py [--kind iornn|brnn|both] [--seeds 3] [--max-n 1e6] [--device cpu|cuda] [--threads K]

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

SHAPES = {"iornn": (10, 4, 8), "brnn": (12, 3, 8)}  # d_x, d_h (per direction), d_y
T, NOISE = 10, 0.1
ACTIVATION = (0.0, 1.0, 0.5)
SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
LONG_SIZES = (300_000, 1_000_000)


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _hwm_mb() -> float:
    """Peak RSS of this address space (VmHWM): reset at exec, unlike ru_maxrss."""
    return _status_mb("VmHWM")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def make_data(kind: str, n_steps: int, seed: int, long: bool, path: str) -> dict:
    """Draw a planted model, data and held-out inputs; save them under ``path``. Returns metadata."""
    from spectral_rnn import make_planted, save_model

    d_x, d_h, d_y = SHAPES[kind]
    p = make_planted(kind, d_x, d_h, d_y, n_steps=n_steps, length=n_steps if long else T, activation=ACTIVATION,
                     noise_std=NOISE, n_test=2000, test_length=T, random_state=seed)
    Xh, Yh = p.X_test, p.Y_test  # 2000 fresh sequences of T steps (also for the long layout)
    for name, arr in (("X", p.X), ("Y", p.Y), ("Xh", Xh), ("Yh", Yh)):
        np.save(os.path.join(path, name + ".npy"), arr)
    save_model(p.model, os.path.join(path, "truth.safetensors"))
    return {"redraws": p.redraws, "data_mb": (p.X.nbytes + p.Y.nbytes) / 2**20}


def worker(kind: str, path: str, seed: int, device: str, threads: int | None = None) -> dict:
    """Runs in a fresh process: load data, fit, measure memory and times, evaluate."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from spectral_rnn import (DivergenceError, SpectralBRNN, SpectralIORNN, SpectralRNNError, load_model, make_planted,
                              parameter_errors, prediction_error)

    d_x, d_h, d_y = SHAPES[kind]
    cls = SpectralIORNN if kind == "iornn" else SpectralBRNN
    # warm up torch and the library on a tiny problem, so their footprint is not the fit's
    w = make_planted(kind, d_x, d_h, d_y, n_steps=30_000, random_state=0)
    try:
        cls(d_h, activation=ACTIVATION, random_state=0, device=device).fit(w.X, w.Y)
    except SpectralRNNError:
        pass
    del w

    X = np.load(os.path.join(path, "X.npy"))
    Y = np.load(os.path.join(path, "Y.npy"))
    rss_loaded, peak_loaded = _rss_mb(), _maxrss_mb()

    t0 = time.perf_counter()
    try:
        est = cls(d_h, activation=ACTIVATION, random_state=seed, device=device).fit(X, Y)
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
        Xt = torch.as_tensor(X).to(dev, torch.float64).reshape(-1, d_x)
        Yt = torch.as_tensor(Y).to(dev, torch.float64).reshape(-1, d_y)
        G = Yt.T @ Xt
        if dev.type == "cuda":
            torch.cuda.synchronize()
        plain.append(time.perf_counter() - t0)
        del Xt, Yt, G
    plain_s = float(np.median(plain))

    model = load_model(os.path.join(path, "truth.safetensors"))
    Xh, Yh = np.load(os.path.join(path, "Xh.npy")), np.load(os.path.join(path, "Yh.npy"))
    if est is None:
        errs = {"in": float("nan"), "rec": float("nan"), "out": float("nan"), "pred": float("nan")}
    else:
        e = parameter_errors(model, est.model_)
        try:
            pred = prediction_error(Yh, est.predict(Xh))
        except DivergenceError:  # the fitted recursion blows up on some held-out sequence
            pred = float("inf")
        errs = {"in": max(e["A1"], e.get("B1", 0.0)), "rec": max(e["U"], e.get("V", 0.0)),
                "out": max(e["A2"], e.get("B2", 0.0)), "pred": pred}
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


def run_one(kind: str, n_steps: int, seed: int, long: bool, device: str, threads: int | None = None) -> dict:
    """Data are drawn in one subprocess and fitted in another: on Linux a child's ru_maxrss
    starts from its parent's RSS at fork (it survives exec), so the driver must stay small."""
    with tempfile.TemporaryDirectory(prefix="bench_spectral_") as tmp:
        me = [sys.executable, os.path.abspath(__file__), "--kind", kind]
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


HEADER = (f"{'kind':>5} {'layout':>8} {'N':>9} {'in':>7} {'out':>7} {'rec':>7} {'pred':>9} {'fit s':>7} "
          f"{'plain s':>8} {'ratio':>6} {'extra MB':>9} {'data MB':>8} {'redraw':>6}")


def row(kind: str, layout: str, n: int, rs: list[dict]) -> str:
    ok = [r for r in rs if r["error"] is None]
    med = lambda k: float(np.median([r[k] for r in ok])) if ok else float("nan")  # noqa: E731
    refused = len(rs) - len(ok)
    note = f"  ({refused}/{len(rs)} fits refused: ill-conditioned)" if refused else ""
    return (f"{kind:>5} {layout:>8} {n:>9,d} {med('in'):7.4f} {med('out'):7.4f} {med('rec'):7.4f} {med('pred'):9.2e} "
            f"{med('fit_s'):7.3f} {med('plain_s'):8.4f} {np.median([r['fit_s'] / r['plain_s'] for r in rs]):6.0f} "
            f"{max(r['extra_mb'] for r in rs):9.1f} {rs[0]['data_mb']:8.1f} {sum(r['redraws'] for r in rs):6d}" + note)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=("iornn", "brnn", "both"), default="both", help="which model (default both)")
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
        print(json.dumps(make_data(args.kind, args.n, args.seed, args.long, args.make)))
        return

    if args.worker:
        print(json.dumps(worker(args.kind, args.worker, args.seed, args.device, args.threads)))
        return

    print(f"spectral fit benchmark: IO-RNN d_x,d_h,d_y={SHAPES['iornn']}, BRNN {SHAPES['brnn']} (d_h per direction); "
          f"f=u+0.5u^2 ||U||=0.3 noise={NOISE}; "
          f"{args.seeds} seed(s) per N; device={args.device}; torch threads={args.threads or 'default'}; "
          f"cpus={os.cpu_count()}; load average at start {os.getloadavg()[0]:.1f}")
    print("errors: medians over seeds (in/out/rec: A1/A2/U, for a BRNN the worse of A1,B1 / A2,B2 / U,V);")
    print("extra MB: peak RSS of the fit beyond the loaded data, max over seeds;")
    print("ratio: fit time / one plain pass (read X, Y into torch float64 + one product Y^T X)\n")
    blocks = []
    for kind in ("iornn", "brnn") if args.kind == "both" else (args.kind,):
        blocks += [(kind, "n x 10", n, False) for n in SIZES if n <= args.max_n]
        if not args.no_long:
            blocks += [(kind, "1 x N", n, True) for n in LONG_SIZES if n <= args.max_n]
    print(HEADER)
    for kind, layout, n, long in blocks:
        rs = [run_one(kind, n, s, long, args.device, args.threads) for s in range(args.seeds)]
        print(row(kind, layout, n, rs), flush=True)
        if args.verbose:
            for s, r in enumerate(rs):
                if r["error"]:
                    print(f"{'':>10} seed {s}: {r['error']}")
                    continue
                st = " ".join(f"{k}={v:.3f}" for k, v in r["stages"].items())
                print(f"{'':>10} seed {s}: in {r['in']:.4f} out {r['out']:.4f} rec {r['rec']:.4f} pred {r['pred']:.2e} "
                      f"fit {r['fit_s']:.3f}s plain {r['plain_s']:.4f}s extra {r['extra_mb']:.1f}MB "
                      f"(VmHWM-based {r['extra_hwm_mb']:.1f}MB; pre-fit peak over rss {r['load_peak_over_rss_mb']:.1f}MB; "
                      f"torch threads {r['n_threads']}) [{st}]", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
