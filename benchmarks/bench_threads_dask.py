"""Thread setting under a competing job, and the Dask fit against the serial one.

``threads``: IO-RNN and BRNN fits of 1e6 steps (d_x=10, d_h=4, d_y=8), back to back in one
process, with ``n_threads=1``, ``n_threads=2`` and the default (``None``), while a competing
CPU-bound process (a busy loop) runs; prints the median of 3 fits each and the ratio to one thread.

``dask``: the IO-RNN fit of ``--n`` steps (default 1e7) from in-memory arrays (serial) and from
the same arrays as ``dask.array`` blocks of 100,000 sequences on a ``distributed.LocalCluster``
with 2 worker processes of one thread each; prints both times and the largest relative
difference of the estimates.

    PYTHONPATH=src python benchmarks/bench_threads_dask.py threads
    PYTHONPATH=src python benchmarks/bench_threads_dask.py dask --n 1e7
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def threads() -> None:
    import torch

    from spectral_rnn import SpectralBRNN, SpectralIORNN, make_planted
    from spectral_rnn.threads import resolve_threads

    stop = mp.Event()
    hog = mp.Process(target=_busy, args=(stop,), daemon=True)
    hog.start()
    time.sleep(2.0)
    try:
        print(f"competing busy loop running; load average {os.getloadavg()}; torch threads {torch.get_num_threads()}; "
              f"default n_threads resolves to {resolve_threads(None)}")
        for kind, cls in (("iornn", SpectralIORNN), ("brnn", SpectralBRNN)):
            p = make_planted(kind, 10, 4, 8, n_steps=1_000_000, random_state=1)
            times = {1: [], 2: [], None: []}
            for _ in range(3):
                for n in (1, 2, None):
                    t0 = time.perf_counter()
                    cls(4, random_state=0, n_threads=n).fit(p.X, p.Y)
                    times[n].append(time.perf_counter() - t0)
            med = {n: float(np.median(v)) for n, v in times.items()}
            print(f"{kind}: 1 thread {med[1]:.2f} s, 2 threads {med[2]:.2f} s ({med[2] / med[1]:.2f}x), "
                  f"default {med[None]:.2f} s ({med[None] / med[1]:.2f}x); load average {os.getloadavg()}")
    finally:
        stop.set()
        hog.join(5)


def dask_bench(n_steps: int) -> None:
    import dask.array as da
    import distributed

    from spectral_rnn import SpectralIORNN, make_planted

    p = make_planted("iornn", 10, 4, 8, n_steps=n_steps, random_state=1, n_test=10)
    X, Y = p.X, p.Y
    t0 = time.perf_counter()
    ref = SpectralIORNN(4, random_state=0, n_threads=1).fit(X, Y)
    serial = time.perf_counter() - t0
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cl, \
            distributed.Client(cl) as client:
        Xd = da.from_array(X, chunks=(100_000, X.shape[1], X.shape[2]))
        Yd = da.from_array(Y, chunks=(100_000, Y.shape[1], Y.shape[2]))
        Xd, Yd = client.persist([Xd, Yd])  # the blocks live on the workers, as data read from Zarr would
        distributed.wait([Xd, Yd])
        t0 = time.perf_counter()
        got = SpectralIORNN(4, random_state=0, n_threads=1).fit(Xd, Yd)
        cold_s = time.perf_counter() - t0  # the workers import torch and spectral_rnn on their first task
        t0 = time.perf_counter()
        got = SpectralIORNN(4, random_state=0, n_threads=1).fit(Xd, Yd)
        dask_s = time.perf_counter() - t0
    diff = max(float(np.abs(getattr(got, k) - getattr(ref, k)).max() / np.abs(getattr(ref, k)).max())
               for k in ("A1_", "U_", "A2_"))
    print("stages serial", {k: round(v, 2) for k, v in ref.timings_.items()})
    print("stages dask", {k: round(v, 2) for k, v in got.timings_.items()})
    print(f"IO-RNN {n_steps:,} steps: serial {serial:.1f} s, Dask on 2 local workers {dask_s:.1f} s "
          f"({dask_s / serial:.2f}x; first fit on fresh workers {cold_s:.1f} s, {cold_s / serial:.2f}x); "
          f"max relative difference {diff:.1e}; load average {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["threads", "dask"])
    ap.add_argument("--n", type=float, default=1e7)
    a = ap.parse_args()
    if a.what == "threads":
        threads()
    else:
        dask_bench(int(a.n))


if __name__ == "__main__":
    main()
