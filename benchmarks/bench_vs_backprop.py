"""Spectral estimate vs spectral + refinement vs tuned BPTT from random init (issue 4).

For each model kind, sequence length and number of training time steps, draws a
planted model (docs/method.md, section 'Planted models', for the IO-RNN: d_x=10, d_h=4, d_y=8,
f(u) = u + 0.5 u^2, ||U||_2 = 0.3, output noise 0.1; the BRNN of issue 3: d_x=12,
d_h=3 per direction, d_y=8), simulates Gaussian AR(1) inputs, and runs
:func:`spectral_rnn.compare.run_comparison` in this process: held-out error against
the true conditional mean, time to the common target (the tuned baseline's best error
within its budget), final errors and ratios.

Usage::

    python benchmarks/bench_vs_backprop.py                      # the whole table (long: see --dry-run)
    python benchmarks/bench_vs_backprop.py --lengths 10 --steps 1e6 --kinds iornn --budget 30
    python benchmarks/bench_vs_backprop.py --dry-run            # print the grid and its estimated duration

Every BPTT run (3 learning rates x 2 initial scales x 3 seeds by default) and the
spectral + refinement run each get ``--budget`` seconds; early stopping may end them sooner.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from spectral_rnn import BRNN, IORNN, GaussianAR1, make_planted
from spectral_rnn.compare import DEFAULT_INIT_SCALES, DEFAULT_LRS, run_comparison

SIZES = {"iornn": (10, 4, 8), "brnn": (12, 3, 8)}
ACT = (0.0, 1.0, 0.5)


def planted(kind: str, length: int, steps: int, seed: int, test_fraction: float, activation: str = "poly"):
    d_x, d_h, d_y = SIZES[kind]
    n_steps = int(math.ceil(steps / length / (1 - test_fraction))) * length  # training split holds `steps` steps
    if activation == "tanh":  # the planted tanh model of issue 8 (README, 'Fit a tanh RNN')
        p = make_planted(kind, d_x=d_x, d_h=d_h, d_y=d_y, n_steps=n_steps, length=length, activation="tanh",
                         input_norm=1.0, n_test=1, random_state=seed)
        return p.model, p.X, p.Y
    cls = BRNN if kind == "brnn" else IORNN
    truth = cls.random(d_x, d_h, d_y, activation=ACT, recurrent_norm=0.3, input_std=0.4, random_state=seed)
    proc = GaussianAR1.random(d_x, random_state=seed + 1)
    n = int(math.ceil(steps / length / (1 - test_fraction)))  # training split holds `steps` steps
    X = proc.sample(n, length, random_state=seed + 2)
    Y = truth.simulate(X, noise_std=0.1, random_state=seed + 3)
    return truth, X, Y


def fmt_e(x):
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else ("inf" if math.isinf(x) else f"{x:.2e}")


def fmt_t(x):
    return "never" if math.isinf(x) else ("nan" if math.isnan(x) else f"{x:.2f}")


def fmt_r(x):
    return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.3g}")


HEAD = ["kind", "T", "N", "spectral err", "spectral s", "refined err", "bptt err (best run)", "target",
        "t->target refine s", "t->target bptt s", "speedup", "final err ratio", "bptt best in 10x spectral / spectral err",
        "bptt s to spectral err"]


def row(kind, T, N, s):
    return [kind, str(T), f"{N:.0e}", fmt_e(s["spectral_error"]), f"{s['spectral_time']:.2f}", fmt_e(s["refined_error"]),
            fmt_e(s["bptt_error"]), fmt_e(s["target"]), fmt_t(s["t_target_refined"]), fmt_t(s["t_target_bptt"]),
            fmt_r(s["speedup"]), fmt_r(s["final_error_ratio"]), fmt_r(s["baseline_best_in_10x_spectral"]),
            fmt_t(s["baseline_time_to_spectral_error"])]


def markdown(rows):
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="10,30,100", help="comma-separated sequence lengths (default 10,30,100)")
    ap.add_argument("--steps", default="1e5,1e6", help="comma-separated training time steps (default 1e5,1e6)")
    ap.add_argument("--kinds", default="iornn,brnn", help="iornn, brnn or both (default both)")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per BPTT run and for spectral+refine (default 30)")
    ap.add_argument("--seeds", type=int, default=3, help="baseline seeds per grid point (default 3)")
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in DEFAULT_LRS), help="baseline learning rates")
    ap.add_argument("--init-scales", default=",".join(f"{x:g}" for x in DEFAULT_INIT_SCALES),
                    help="baseline initial scales (1 = PyTorch default)")
    ap.add_argument("--batch-size", type=int, default=256, help="baseline minibatch (sequences, default 256)")
    ap.add_argument("--activation", default="poly", choices=("poly", "tanh"),
                    help="poly: f(u) = u + 0.5 u^2 (default); tanh: the planted tanh model of issue 8 "
                         "(make_planted(..., activation='tanh', input_norm=1.0))")
    ap.add_argument("--refine-optimizer", default="auto", choices=("auto", "lbfgs", "adam"),
                    help="refinement optimiser (default auto: full-batch L-BFGS + refit up to 5e5 training steps, "
                         "Adam above)")
    ap.add_argument("--no-refit", action="store_true", help="no L-BFGS refit on training + validation sequences")
    ap.add_argument("--refine-lr", type=float, default=3e-4, help="refinement Adam step (default 3e-4)")
    ap.add_argument("--refine-batch-size", type=int, default=1024, help="refinement minibatch (default 1024)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the planted model and data")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--plot-dir", default=None, help="write one plot per configuration here")
    ap.add_argument("--json", default=None, help="append one JSON line per configuration to this file")
    ap.add_argument("--quiet", action="store_true", help="no per-run log lines")
    ap.add_argument("--dry-run", action="store_true", help="print the grid and its estimated duration, run nothing")
    args = ap.parse_args(argv)

    lengths = [int(x) for x in args.lengths.split(",") if x]
    steps = [int(float(x)) for x in args.steps.split(",") if x]
    kinds = [k.strip().lower() for k in args.kinds.split(",") if k.strip()]
    lrs = [float(x) for x in args.lrs.split(",") if x]
    scales = [float(x) for x in args.init_scales.split(",") if x]
    for k in kinds:
        if k not in SIZES:
            ap.error(f"unknown kind {k!r}: use iornn or brnn")
    if "brnn" in kinds:
        import spectral_rnn.estimators as est

        if not hasattr(est, "SpectralBRNN"):
            print("SpectralBRNN is not available: skipping the BRNN rows", file=sys.stderr)
            kinds = [k for k in kinds if k != "brnn"]
    torch.set_num_threads(args.threads)

    configs = [(k, T, N) for k in kinds for N in steps for T in lengths]
    runs_per = len(lrs) * len(scales) * args.seeds + 1
    est_s = len(configs) * runs_per * args.budget * 1.15  # +~15% for held-out evaluations and data
    print(f"{len(configs)} configurations x {runs_per} runs x {args.budget:g} s budget: "
          f"at most about {est_s / 60:.0f} min (early stopping makes it shorter)", flush=True)
    if args.dry_run:
        for c in configs:
            print("  ", *c)
        return 0
    if args.plot_dir:
        os.makedirs(args.plot_dir, exist_ok=True)

    act = "tanh" if args.activation == "tanh" else ACT
    rows = []
    t_all = time.perf_counter()
    for kind, T, N in configs:
        d_x, d_h, d_y = SIZES[kind]
        truth, X, Y = planted(kind, T, N, args.seed, 0.1, args.activation)
        print(f"\n=== {kind} d_x={d_x} d_h={d_h} d_y={d_y}, {act}, length {T}, {N:.0e} training steps ===", flush=True)
        tag = "" if args.activation == "poly" else "_tanh"
        plot = os.path.join(args.plot_dir, f"{kind}{tag}_T{T}_N{N:.0e}.png") if args.plot_dir else None
        comp = run_comparison(
            X, Y, None, hidden_size=d_h, activation=act, bidirectional=(kind == "brnn"), truth=truth,
            budget=args.budget, test_fraction=0.1, seeds=args.seeds, lrs=lrs, init_scales=scales,
            refine_lr=args.refine_lr, refine_batch_size=args.refine_batch_size, refine_optimizer=args.refine_optimizer,
            refine_refit=not args.no_refit, batch_size=args.batch_size, random_state=args.seed, device=args.device,
            plot=plot, log=None if args.quiet else (lambda m: print("  " + m, flush=True)),
        )
        print(comp.table(), flush=True)
        s = comp.summary()
        rows.append(row(kind + tag, T, N, s))
        if args.json:
            with open(args.json, "a") as fh:
                rec = {"kind": kind, "activation": args.activation, "T": T, "N": N, "budget": args.budget,
                       "threads": args.threads, "refine_optimizer": args.refine_optimizer, "refit": not args.no_refit,
                       **{k: v for k, v in s.items()}}
                rec["curves"] = {m.name: [m.times, m.errors] for m in comp.methods}
                fh.write(json.dumps(rec, default=float) + "\n")
    print(f"\nwhole run: {time.perf_counter() - t_all:.0f} s; budget {args.budget:g} s per run, "
          f"{args.threads} torch threads\n")
    print(markdown(rows))
    print("\nspeedup = bptt time to target / spectral+refine time to target (acceptance at length 10: >= 2);"
          "\nfinal err ratio = spectral+refine / bptt final held-out error (acceptance: <= 1);"
          "\nbptt best in 10x spectral / spectral err > 1: the baseline does not reach the spectral error in 10x"
          " the spectral fit time (acceptance at length 100).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
