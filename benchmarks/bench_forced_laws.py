"""Every score law forced on every innovation law: does a fit that is wrong ever come back
without a word? For each model x innovations x forced law, over the seeds: how many fits were
refused, how many warned (a ``SpectralRNNWarning``), how many came back quietly, and the median
A1 error (for the BRNN the worse chain) of the fits that came back, beside the default's
(``scores="auto"``). A quiet fit whose A1 error is more than ``--factor`` times the best median
in its row (default 3) is marked ``QUIET-BAD``: the defect this audit looks for.

    .venv/bin/python benchmarks/bench_forced_laws.py                       # 3e5 steps, seeds 0,1
    .venv/bin/python benchmarks/bench_forced_laws.py --kinds tanh --innovations t5 --steps 1e6

Kinds as in ``bench_laws.py``: ``iornn`` (f = u + 0.5 u^2, d_x=10, d_h=4), ``brnn`` (d_x=12, d_h=3
per direction), ``tanh`` (unit-norm rows of A1), ``brnn-tanh``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from spectral_rnn import SpectralRNNError, SpectralRNNWarning, make_planted, parameter_errors

from bench_laws import KINDS

INNOVATIONS = ["gaussian", "t16", "t10", "t5", "laplace", "uniform", "bimodal"]
LAWS = ["auto", "gaussian", "student-t", "score-matching", "mixture", "moment"]
STEIN = ["student-t+stein", "score-matching+stein", "mixture+stein"]  # third-order (tanh) laws


def one(kind: str, law: str, p) -> dict:
    _, E, kw, act = KINDS[kind]
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectralRNNWarning)
        try:
            est = E(kw["d_h"], random_state=0, scores=law, **act).fit(p.X, p.Y)
        except SpectralRNNError as exc:
            return {"outcome": "refused", "why": str(exc)[:70]}
    said = [str(w.message)[:70] for w in caught if issubclass(w.category, SpectralRNNWarning)]
    e = parameter_errors(p.model, est.model_, odd=bool(act))
    return {"outcome": "warned" if said else "quiet", "why": said[0] if said else "",
            "A1": max(e["A1"], e.get("B1", 0.0)), "s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="iornn,tanh,brnn,brnn-tanh")
    ap.add_argument("--innovations", default=",".join(INNOVATIONS))
    ap.add_argument("--laws", default=None, help="comma-separated (default: every law; the +stein ones for tanh)")
    ap.add_argument("--steps", type=float, default=3e5)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--factor", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'kind':9} {'innovations':11} {'law':21} {'refused':>7} {'warned':>6} {'quiet':>5} "
          f"{'median A1':>9}  note")
    n_bad = 0
    for kind in args.kinds.split(","):
        name, _, kw, act = KINDS[kind]
        laws = args.laws.split(",") if args.laws else LAWS + (STEIN if act else [])
        for inn in args.innovations.split(","):
            rows: dict[str, list[dict]] = {law: [] for law in laws}
            for seed in seeds:
                try:
                    p = make_planted(name, n_steps=int(args.steps), random_state=seed, innovations=inn, **kw,
                                     **({"activation": "tanh", "input_norm": 1.0} if act else {}))
                except SpectralRNNError:
                    continue
                for law in laws:
                    rows[law].append(one(kind, law, p))
            med = {law: float(np.median([r["A1"] for r in rs if "A1" in r])) if any("A1" in r for r in rs)
                   else np.nan for law, rs in rows.items()}
            best = np.nanmin(list(med.values())) if np.isfinite(list(med.values())).any() else np.nan
            for law, rs in rows.items():
                count = {o: sum(r["outcome"] == o for r in rs) for o in ("refused", "warned", "quiet")}
                quiet = [r["A1"] for r in rs if r["outcome"] == "quiet"]
                bad = bool(quiet) and max(quiet) > args.factor * best and max(quiet) > 0.05
                n_bad += bad
                note = "QUIET-BAD " if bad else ""
                note += next((r["why"] for r in rs if r["why"]), "")
                print(f"{kind:9} {inn:11} {law:21} {count['refused']:7d} {count['warned']:6d} {count['quiet']:5d} "
                      f"{med[law]:9.4f}  {note}", flush=True)
    print(f"quiet fits with A1 error above {args.factor}x the row's best (and 0.05): {n_bad} rows")


if __name__ == "__main__":
    main()
