"""The spectral fit on a CUDA GPU: agreement with the CPU fit, and fit time against one plain pass.

Prepared to run in one go on a machine with an NVIDIA GPU (a few minutes):

    PYTHONPATH=src python3 benchmarks/bench_gpu.py [--steps 1e6,1e7]

For each model kind (IO-RNN d_x=10, d_h=4, d_y=8; BRNN d_x=12, d_h=3) and input law (Gaussian,
Laplace: the density-free score for the IO-RNN, score matching for the BRNN), it fits the same
data with ``device="cpu"`` and ``device="cuda"`` (float64 passes) and prints the largest
relative difference of the weights (the issue's bar: 1e-6), the errors against the planted
truth, the fit times and the ratio to one plain pass (copy X and Y to the device in float64 and
one ``Y^T X`` product), and the peak device memory. Exits 1 if a GPU fit disagrees.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from spectral_rnn import SpectralBRNN, SpectralIORNN, make_planted, parameter_errors


def plain_pass(X: np.ndarray, Y: np.ndarray, device: str) -> float:
    t0 = time.perf_counter()
    x = torch.as_tensor(X.reshape(-1, X.shape[2]), dtype=torch.float64, device=device)
    y = torch.as_tensor(Y.reshape(-1, Y.shape[2]), dtype=torch.float64, device=device)
    (y.T @ x).sum().item()
    return time.perf_counter() - t0


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="1e6,1e7", help="comma-separated numbers of time steps")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here; nothing measured")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"{'kind':5} {'law':8} {'N':>9} {'scores':15} {'max rel diff':>12} {'A1 err':>7} {'U err':>7} "
          f"{'cpu s':>6} {'gpu s':>6} {'gpu plain s':>11} {'gpu ratio':>9} {'peak MB':>8}")
    bad = 0
    for n in [int(float(s)) for s in args.steps.split(",")]:
        for kind, law in (("iornn", "gaussian"), ("iornn", "laplace"), ("brnn", "gaussian"), ("brnn", "laplace")):
            kw = {"d_x": 10, "d_h": 4} if kind == "iornn" else {"d_x": 12, "d_h": 3}
            p = make_planted(kind, n_steps=n, random_state=0, innovations=law, n_test=0, **kw)
            E = SpectralIORNN if kind == "iornn" else SpectralBRNN
            t0 = time.perf_counter()
            cpu = E(kw["d_h"], random_state=0).fit(p.X, p.Y)
            t_cpu = time.perf_counter() - t0
            plain_pass(p.X[:1000], p.Y[:1000], "cuda")  # warm-up
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            gpu = E(kw["d_h"], random_state=0, device="cuda").fit(p.X, p.Y)
            torch.cuda.synchronize()
            t_gpu = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**20
            t_plain = plain_pass(p.X, p.Y, "cuda")
            diff = max(rel(getattr(gpu.model_, k), getattr(cpu.model_, k)) for k in cpu.model_._names)
            err = parameter_errors(p.model, gpu.model_)
            bad += diff > 1e-6
            print(f"{kind:5} {law:8} {n:>9,} {gpu.scores_:15} {diff:12.2e} {err['A1']:7.4f} {err['U']:7.4f} "
                  f"{t_cpu:6.2f} {t_gpu:6.2f} {t_plain:11.3f} {t_gpu / t_plain:9.1f} {peak:8.0f}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
