"""Cost of the spectral fit against one plain pass over the data, as N, d_x, d_y and d_h grow.

Every row runs in a fresh process: it draws a planted problem (``make_planted``, quadratic
activation, Gaussian inputs, sequences of 10 steps), then, back to back in that process,
times one fit and one plain pass, and measures the fit's peak memory beyond the data.

* ``plain s``: one plain pass: copy X and Y into new torch float64 tensors and one product
  ``Y^T X`` (median of 3);
* ``fit s``: one ``fit`` (``SpectralIORNN`` or ``SpectralBRNN``; the median of ``--repeat`` fits,
  each then followed by one more plain pass that joins the plain median), and ``s/1e6``: the same per
  1e6 steps; ``ratio``: fit / plain;
* ``extra MB``: peak resident memory of the fit beyond the memory held once the data are
  loaded (the peak is reset through ``/proc/self/clear_refs`` just before the fit);
* ``A1``, ``A2``, ``U``: relative errors of the estimate against the planted truth
  (:func:`spectral_rnn.parameter_errors`; the BRNN: the worse chain).

Sweeps (``--sweep``): ``n`` (N from 1e5 to ``--max-n``, d_x=10, d_h=4, d_y=8), ``dx``
(d_x = 10, 30, 100, 300 with d_h=4, d_y=8 and every row of A1 of norm 1, so the
pre-activation variance does not grow with d_x), ``dy`` (d_y = 8, 50, 200), ``dh``
(d_h = 2, 4, 8, 16 with d_x = d_y = 32; the BRNN needs 2 d_h <= 32). ``--threads`` sets
``n_threads`` of the fit and torch's threads of the plain pass (default 1).

    PYTHONPATH=src python benchmarks/bench_passes.py --quick         # small version (about a minute)
    PYTHONPATH=src python benchmarks/bench_passes.py                 # all sweeps at 1e6 (N up to 1e7)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_spectral import _status_mb  # noqa: E402  (a memory figure of this process, MB)


def worker(cfg: dict) -> dict:
    """Runs in a fresh process."""
    import ctypes
    import gc

    import numpy as np
    import torch

    torch.set_num_threads(cfg["threads"])
    from spectral_rnn import SpectralBRNN, SpectralIORNN, SpectralRNNError, make_planted, parameter_errors

    cls = SpectralIORNN if cfg["kind"] == "iornn" else SpectralBRNN
    w = make_planted(cfg["kind"], cfg["d_x"], cfg["d_h"], cfg["d_y"], n_steps=20_000, random_state=0,
                     input_norm=cfg["input_norm"])
    try:  # warm up torch and the library, so their footprint is not the fit's
        cls(cfg["d_h"], random_state=0).fit(w.X, w.Y)
    except SpectralRNNError:
        pass
    p = make_planted(cfg["kind"], cfg["d_x"], cfg["d_h"], cfg["d_y"], n_steps=cfg["n"], random_state=cfg["seed"],
                     input_norm=cfg["input_norm"], n_test=10)
    X, Y = np.ascontiguousarray(p.X), np.ascontiguousarray(p.Y)
    del w
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS is the data and the libraries
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    rss0 = _status_mb("VmRSS")
    t0 = time.perf_counter()
    try:
        est = cls(cfg["d_h"], random_state=0, n_threads=cfg["threads"]).fit(X, Y)
        err = parameter_errors(p.model, est.model_)
        errs = {k: max(err[k], err.get({"A1": "B1", "A2": "B2", "U": "V"}[k], 0.0)) for k in ("A1", "A2", "U")}
        note = ""
    except SpectralRNNError as exc:
        errs, note = {"A1": float("nan"), "A2": float("nan"), "U": float("nan")}, type(exc).__name__
    fit_s = time.perf_counter() - t0
    extra = _status_mb("VmHWM") - rss0
    plain = []
    for _ in range(3):  # after the fit: its freed copies would otherwise hide the fit's own memory
        t0 = time.perf_counter()
        Xt = torch.tensor(X, dtype=torch.float64).reshape(-1, X.shape[2])
        Yt = torch.tensor(Y, dtype=torch.float64).reshape(-1, Y.shape[2])
        G = Yt.T @ Xt
        plain.append(time.perf_counter() - t0)
        del Xt, Yt, G
    fits = [fit_s]
    for _ in range(cfg.get("repeat", 1) - 1):  # --repeat: more fits, each followed by a plain pass; medians
        t0 = time.perf_counter()
        try:
            cls(cfg["d_h"], random_state=0, n_threads=cfg["threads"]).fit(X, Y)
        except SpectralRNNError:
            pass
        fits.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        G = torch.tensor(Y, dtype=torch.float64).reshape(-1, Y.shape[2]).T @ torch.tensor(
            X, dtype=torch.float64).reshape(-1, X.shape[2])
        plain.append(time.perf_counter() - t0)
        del G
    fit_s = float(np.median(fits))
    return {**cfg, "fit_s": fit_s, "plain_s": float(np.median(plain)), "extra_mb": extra,
            "data_mb": (X.nbytes + Y.nbytes) / 2**20, "note": note, **errs}


def memmap_worker(cfg: dict) -> dict:
    """Fit from float32 .npy memory maps written by ``write_memmaps``; the fit's own memory is the
    peak of the anonymous resident memory (``RssAnon``, sampled every 5 ms) beyond its level
    before the fit: pages of the mapped files are not the fit's memory."""
    import threading

    import numpy as np
    import torch

    torch.set_num_threads(cfg["threads"])
    from spectral_rnn import SpectralIORNN, parameter_errors
    from spectral_rnn.io import load_model

    w = SpectralIORNN(4, random_state=0)  # warm-up on a small slice
    X = np.load(os.path.join(cfg["dir"], "X.npy"), mmap_mode="r")
    Y = np.load(os.path.join(cfg["dir"], "Y.npy"), mmap_mode="r")
    w.fit(np.array(X[:3000]), np.array(Y[:3000]))
    peak = [0.0]
    base = _status_mb("RssAnon")
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _status_mb("RssAnon"))
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    est = SpectralIORNN(4, random_state=0, n_threads=cfg["threads"]).fit(X, Y)
    fit_s = time.perf_counter() - t0
    done.set()
    th.join()
    err = parameter_errors(load_model(os.path.join(cfg["dir"], "truth.safetensors")), est.model_)
    return {"n": int(X.shape[0] * X.shape[1]), "fit_s": fit_s, "anon_peak_mb": peak[0] - base,
            "data_mb": (X.nbytes + Y.nbytes) / 2**20, "A1": err["A1"], "A2": err["A2"], "U": err["U"]}


def write_memmaps(n_steps: int, path: str, seed: int) -> None:
    """One planted IO-RNN (d_x=10, d_h=4, d_y=8, sequences of 10 steps); its data written block by
    block into float32 .npy files (never whole in memory)."""
    import numpy as np

    from spectral_rnn import make_planted, save_model

    p = make_planted("iornn", 10, 4, 8, n_steps=100_000, random_state=seed, n_test=10)
    save_model(p.model, os.path.join(path, "truth.safetensors"))
    n_seq, T = n_steps // 10, 10
    X = np.lib.format.open_memmap(os.path.join(path, "X.npy"), mode="w+", dtype=np.float32, shape=(n_seq, T, 10))
    Y = np.lib.format.open_memmap(os.path.join(path, "Y.npy"), mode="w+", dtype=np.float32, shape=(n_seq, T, 8))
    rng = np.random.default_rng(seed)
    for i in range(0, n_seq, 100_000):
        m = min(100_000, n_seq - i)
        Xb = p.process.sample(m, T, random_state=rng)
        X[i:i + m] = Xb
        Y[i:i + m] = p.model.simulate(Xb, noise_std=0.1, random_state=rng)
    X.flush()
    Y.flush()


def run(cfg: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(HERE, "..", "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        return {**cfg, "failed": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "?"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def configs(args) -> list[dict]:
    base = {"seed": args.seed, "threads": args.threads, "input_norm": None, "repeat": args.repeat}
    n1 = args.n
    rows = []
    for kind in args.kinds:
        if "n" in args.sweep:
            for n in (100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000):
                if n <= args.max_n:
                    rows.append({**base, "sweep": "n", "kind": kind, "n": n, "d_x": 10, "d_h": 4, "d_y": 8})
        if "dx" in args.sweep:
            for d_x in (10, 30, 100, 300):
                rows.append({**base, "sweep": "dx", "kind": kind, "n": n1, "d_x": d_x, "d_h": 4 if kind == "iornn" else 3,
                             "d_y": 8, "input_norm": 1.0})
        if "dy" in args.sweep:
            for d_y in (8, 50, 200):
                rows.append({**base, "sweep": "dy", "kind": kind, "n": n1, "d_x": 10, "d_h": 4, "d_y": d_y})
        if "dh" in args.sweep:
            for d_h in (2, 4, 8, 16):
                if kind == "brnn" and 2 * d_h > 32:
                    continue
                rows.append({**base, "sweep": "dh", "kind": kind, "n": n1, "d_x": 32, "d_h": d_h, "d_y": 32})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="N = 1e5 and 3e5, other sweeps at 1e5 steps")
    ap.add_argument("--sweep", nargs="+", default=["n", "dx", "dy", "dh"], choices=["n", "dx", "dy", "dh"])
    ap.add_argument("--kinds", nargs="+", default=["iornn", "brnn"], choices=["iornn", "brnn"])
    ap.add_argument("--n", type=float, default=1e6, help="steps of the d_x, d_y, d_h sweeps (default 1e6)")
    ap.add_argument("--max-n", type=float, default=1e7, help="largest N of the N sweep (default 1e7)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="fits per row (median; each followed by a plain pass, whose median is the row's)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--memmap", type=float, metavar="N",
                    help="instead of the sweeps: write N steps of float32 data as .npy files (under --dir) and fit "
                         "the IO-RNN from their memory maps, reporting the fit's peak anonymous memory")
    ap.add_argument("--dir", default="/tmp/bench_passes_memmap", help="where --memmap writes its files")
    ap.add_argument("--memmap-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.memmap_worker:
        print(json.dumps(memmap_worker(json.loads(args.memmap_worker))))
        return
    if args.memmap:
        os.makedirs(args.dir, exist_ok=True)
        n = int(args.memmap)
        t0 = time.perf_counter()
        write_memmaps(n, args.dir, args.seed)
        print(f"wrote {n:,} steps of float32 data to {args.dir} in {time.perf_counter() - t0:.0f} s")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(HERE, "..", "src") + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run([sys.executable, __file__, "--memmap-worker",
                              json.dumps({"dir": args.dir, "threads": args.threads})],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(out.stderr)
            return
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"load average {os.getloadavg()}")
        print(f"memmap float32 IO-RNN: N {r['n']:,}  fit {r['fit_s']:.1f} s ({r['fit_s'] / r['n'] * 1e6:.2f} s per 1e6)  "
              f"peak anonymous memory of the fit {r['anon_peak_mb']:.0f} MB  data on disk {r['data_mb']:.0f} MB  "
              f"A1 {r['A1']:.4f} A2 {r['A2']:.4f} U {r['U']:.4f}")
        return
    if args.quick:
        args.n, args.max_n = 1e5, 3e5
    args.n, args.max_n = int(args.n), int(args.max_n)
    print(f"load average before: {os.getloadavg()}; threads {args.threads}")
    print(f"{'kind':>5} {'sweep':>5} {'N':>10} {'d_x':>4} {'d_h':>3} {'d_y':>4} {'fit s':>7} {'s/1e6':>7} "
          f"{'plain s':>8} {'ratio':>6} {'extra MB':>8} {'data MB':>8} {'A1':>7} {'A2':>7} {'U':>7}", flush=True)
    rows = []
    for cfg in configs(args):
        r = run(cfg)
        rows.append(r)
        if "failed" in r:
            print(f"{r['kind']:>5} {r['sweep']:>5} {r['n']:>10,} {r['d_x']:>4} {r['d_h']:>3} {r['d_y']:>4}  failed: "
                  f"{r['failed']}", flush=True)
            continue
        print(f"{r['kind']:>5} {r['sweep']:>5} {r['n']:>10,} {r['d_x']:>4} {r['d_h']:>3} {r['d_y']:>4} "
              f"{r['fit_s']:7.2f} {r['fit_s'] / r['n'] * 1e6:7.2f} {r['plain_s']:8.4f} {r['fit_s'] / r['plain_s']:6.1f} "
              f"{r['extra_mb']:8.0f} {r['data_mb']:8.0f} {r['A1']:7.4f} {r['A2']:7.4f} {r['U']:7.4f} {r['note']}",
              flush=True)
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
