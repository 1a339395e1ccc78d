"""Score functions on non-Gaussian inputs: parameter and prediction errors and fit time,
for each innovation law x score function x N (issue "Inputs as they come").

Planted IO-RNN of the benchmarks (d_x=10, d_h=4, d_y=8, f = u + 0.5 u^2, ||U|| = 0.3,
noise 0.1, length 10), inputs an AR(1) whose innovations have the same covariance but
another law; BRNN rows (d_x=12, d_h=3 per direction) with the default, the Gaussian score
and the two fitted densities (score matching, Gaussian mixture). ``auto`` is the library
default (``scores="auto"``): the chosen law is shown.

    .venv/bin/python benchmarks/bench_scores.py              # full table (about 10 min on 2 cores)
    .venv/bin/python benchmarks/bench_scores.py --quick      # N = 1e5 only, fewer laws
"""

from __future__ import annotations

import argparse
import time

import torch

from spectral_rnn import SpectralBRNN, SpectralIORNN, SpectralRNNError, make_planted, parameter_errors, prediction_error

LAWS = ["gaussian", "t16", "t10", "t5", "laplace", "uniform", "bimodal", "tanh-chain"]


def run(kind: str, law: str, score: str, n_steps: int, seed: int) -> dict:
    chain = "tanh" if law == "tanh-chain" else "linear"
    innovations = "gaussian" if law == "tanh-chain" else law
    kw = {"d_x": 10, "d_h": 4} if kind == "iornn" else {"d_x": 12, "d_h": 3}
    try:
        p = make_planted(kind, n_steps=n_steps, random_state=seed, innovations=innovations, chain=chain, **kw)
    except SpectralRNNError as exc:  # every planted draw diverged on these inputs
        return {"refused": f"no planted model: {type(exc).__name__}", "seconds": 0.0}
    E = SpectralIORNN if kind == "iornn" else SpectralBRNN
    t0 = time.perf_counter()
    try:
        est = E(kw["d_h"], scores=score, random_state=0).fit(p.X, p.Y)
    except SpectralRNNError as exc:
        return {"refused": type(exc).__name__, "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    err = parameter_errors(p.model, est.model_)
    try:
        pred = prediction_error(p.Y_test, est.predict(p.X_test))
    except SpectralRNNError:
        pred = float("nan")
    return {"A1": max(err["A1"], err.get("B1", 0)), "A2": max(err["A2"], err.get("B2", 0)),
            "U": max(err["U"], err.get("V", 0)), "pred": pred, "seconds": seconds, "chosen": est.scores_}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 1e5 only and four laws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--kinds", default="iornn,brnn", help="comma-separated: iornn, brnn (default both)")
    ap.add_argument("--laws", default=None, help="comma-separated subset of " + ",".join(LAWS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    laws = ["gaussian", "t10", "laplace", "uniform"] if args.quick else LAWS
    if args.laws:
        laws = args.laws.split(",")
    kinds = args.kinds.split(",")
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    print(f"{'kind':5} {'law':10} {'N':>9} {'score':15} {'chosen':15} {'A1':>7} {'A2':>7} {'U':>7} {'pred':>9} {'fit s':>6}")
    jobs = []
    for law in laws if "iornn" in kinds else []:
        scores = (["auto", "gaussian", "moment", "score-matching", "mixture"]
                  + (["student-t"] if law.startswith("t") and law[1:].isdigit() else []))
        jobs += [("iornn", law, n, sc) for n in sizes for sc in scores]
    if "brnn" in kinds:
        jobs += [("brnn", law, sizes[-1], sc) for law in laws for sc in ("auto", "gaussian", "score-matching", "mixture")]
    for kind, law, n, sc in jobs:
        r = run(kind, law, sc, n, args.seed)
        if "refused" in r:
            what = r["refused"] if r["refused"].startswith("no planted") else f"refused ({r['refused']})"
            print(f"{kind:5} {law:10} {n:>9,} {sc:15} {'-':15} {what} after {r['seconds']:.1f} s", flush=True)
            continue
        print(f"{kind:5} {law:10} {n:>9,} {sc:15} {r['chosen']:15} {r['A1']:7.4f} {r['A2']:7.4f} {r['U']:7.4f} "
              f"{r['pred']:9.2e} {r['seconds']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
