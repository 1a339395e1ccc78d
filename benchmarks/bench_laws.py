"""The defaults on non-Gaussian inputs, median over seeds (issues 7 and 8's acceptance): for each
model x innovation law, the law ``scores="auto"`` chose, the median A1 / A2 / U errors (for the
BRNN the worse of its two chains) and held-out prediction relative MSE, and the median fit time;
``--compare`` adds a column with the given estimator options (e.g. ``control_variate=False``).

    .venv/bin/python benchmarks/bench_laws.py                                  # 1e6 steps, seeds 0-4
    .venv/bin/python benchmarks/bench_laws.py --kinds brnn --laws bimodal --compare control_variate=False
    .venv/bin/python benchmarks/bench_laws.py --kinds tanh --laws laplace --steps 1e7   # minutes per fit

Kinds: ``iornn`` (d_x=10, d_h=4, d_y=8, f = u + 0.5 u^2), ``brnn`` (d_x=12, d_h=3 per direction),
``tanh`` (issue 8's planted tanh IO-RNN: unit-norm rows of A1), ``brnn-tanh`` (its BRNN: d_x=12, d_h=3
per direction). Noise 0.1, length 10, ||U|| = 0.3.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spectral_rnn import SpectralBRNN, SpectralIORNN, SpectralRNNError, make_planted, parameter_errors, prediction_error

KINDS = {
    "iornn": ("iornn", SpectralIORNN, {"d_x": 10, "d_h": 4}, {}),
    "brnn": ("brnn", SpectralBRNN, {"d_x": 12, "d_h": 3}, {}),
    "tanh": ("iornn", SpectralIORNN, {"d_x": 10, "d_h": 4}, {"activation": "tanh"}),
    "brnn-tanh": ("brnn", SpectralBRNN, {"d_x": 12, "d_h": 3}, {"activation": "tanh"}),
}


def _options(text: str | None) -> dict:
    out: dict = {}
    for item in (text or "").split(","):
        if item:
            key, value = item.split("=")
            out[key] = {"True": True, "False": False}.get(value, value)
    return out


def one(kind: str, law: str, n_steps: int, seed: int, p, options: dict) -> dict:
    _, E, kw, act = KINDS[kind]
    t0 = time.perf_counter()
    try:
        est = E(kw["d_h"], random_state=0, **act, **options).fit(p.X, p.Y)
    except SpectralRNNError as exc:
        return {"refused": str(exc)[:80]}
    seconds = time.perf_counter() - t0
    e = parameter_errors(p.model, est.model_, odd=bool(act))
    return {"A1": max(e["A1"], e.get("B1", 0)), "A2": max(e["A2"], e.get("B2", 0)), "U": max(e["U"], e.get("V", 0)),
            "pred": prediction_error(p.Y_test, est.predict(p.X_test)), "s": seconds, "chosen": est.scores_}


def cell(rows: list[dict]) -> str:
    ok = [r for r in rows if "refused" not in r]
    refused = len(rows) - len(ok)
    if not ok:
        return f"refused ({refused} of {len(rows)})"
    inf = {"A1": np.inf, "A2": np.inf, "U": np.inf, "pred": np.inf}  # a refusal counts as the worst
    med = {k: float(np.median([r[k] for r in ok] + [inf[k]] * refused)) for k in inf}
    s = float(np.median([r["s"] for r in ok]))
    extra = f", {refused} refused" if refused else ""
    return f"{med['A1']:.4f} / {med['A2']:.4f} / {med['U']:.4f} / {med['pred']:.2e} ({s:.1f} s{extra})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="iornn,brnn", help="comma-separated: iornn, brnn, tanh, brnn-tanh")
    ap.add_argument("--laws", default="gaussian,bimodal,uniform,laplace,t10")
    ap.add_argument("--steps", type=float, default=1e6)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--compare", default=None, help="estimator options of a second column, e.g. control_variate=False")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    n_steps = int(args.steps)
    other = _options(args.compare)
    head = f"{'kind':6} {'law':9} {'chosen':22} {'defaults: A1 / A2 / U / pred (fit s)':52}"
    print(head + (f" {args.compare}" if other else ""))
    for kind in args.kinds.split(","):
        name, _, kw, act = KINDS[kind]
        for law in args.laws.split(","):
            rows, rows_other = [], []
            for seed in seeds:
                try:
                    p = make_planted(name, n_steps=n_steps, random_state=seed, innovations=law,
                                     **kw, **({"activation": "tanh", "input_norm": 1.0} if act else {}))
                except SpectralRNNError:  # every planted draw diverged on these inputs: no data for this seed
                    continue
                rows.append(one(kind, law, n_steps, seed, p, {}))
                if other:
                    rows_other.append(one(kind, law, n_steps, seed, p, other))
            if not rows:
                print(f"{kind:6} {law:9} no planted model on any seed", flush=True)
                continue
            chosen = next((r["chosen"] for r in rows if "chosen" in r), "-")
            line = f"{kind:6} {law:9} {chosen:22} {cell(rows):52}"
            print(line + (f" {cell(rows_other)}" if other else ""), flush=True)


if __name__ == "__main__":
    main()
