"""Part-of-speech tagging benchmark on a UD corpus (default: porttinari from dante-corpora).

Same features for every method (:class:`spectral_rnn.features.WordFeaturizer` fitted on
the training split: PPMI+SVD word vectors, suffix vectors, shape flags):

* ``majority``: the most frequent training tag of each (lower-cased) word; unknown
  words get the most frequent tag overall;
* ``logreg``: window logistic regression (scikit-learn, multinomial, L2) on
  ``[x_{t-1}, x_t, x_{t+1}]`` (zeros past the sentence ends), standardised;
* ``birnn``: ``torch.nn.RNN(nonlinearity="tanh", bidirectional=True)`` + ``Linear``;
* ``bilstm``: ``torch.nn.LSTM(bidirectional=True)`` + ``Linear``;

the two neural ones at PyTorch's default initialisation, trained by
:func:`spectral_rnn.tagger.train_classifier` (Adam, cross-entropy, early stopping on
the development split, evaluation time excluded from the clock) for each budget and
seed. A spectral-started module plugs in through ``NEURAL`` below (a factory that
returns an initialised :class:`SequenceClassifier`, trained with ``random_init=False``).

Prints a table (dev/test accuracy per method, budget, seed, and medians over seeds),
writes the raw results as JSON (``--json``) and, with ``--plot``, a PNG of
development accuracy against training seconds.

    python benchmarks/bench_tagging.py --budgets 30 60 120 --seeds 0 1 2 --plot tagging.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from spectral_rnn.cli_tag import CLOCKS  # noqa: E402  (what a budget counts: wall or CPU seconds)
from spectral_rnn.corpora import load_corpus, split_corpus  # noqa: E402
from spectral_rnn.features import WordFeaturizer  # noqa: E402
from spectral_rnn.tagger import accuracy, encode_tags, make_classifier, train_classifier  # noqa: E402


def majority_baseline(train, test_sets):
    by_word = defaultdict(Counter)
    overall = Counter()
    for ws, ts in zip(train.words, train.tags):
        for w, t in zip(ws, ts):
            by_word[w.lower()][t] += 1
            overall[t] += 1
    top = overall.most_common(1)[0][0]
    best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
    out = []
    for corp in test_sets:
        n = ok = 0
        for ws, ts in zip(corp.words, corp.tags):
            for w, t in zip(ws, ts):
                n += 1
                ok += best.get(w.lower(), top) == t
        out.append(ok / n)
    return out


def window(X_list):
    rows = []
    for x in X_list:
        z = np.zeros((1, x.shape[1]), x.dtype)
        prev = np.vstack([z, x[:-1]])
        nxt = np.vstack([x[1:], z])
        rows.append(np.hstack([prev, x, nxt]))
    return np.vstack(rows)


def logreg_baseline(Xt, yt, evals, C=1.0, max_iter=300, context=True):
    """Logistic regression on the window ``[x_{t-1}, x_t, x_{t+1}]`` (``context=False``: on ``x_t`` alone,
    the per-token linear baseline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    window_ = window if context else np.vstack
    A = window_(Xt)
    y = np.concatenate(yt)
    scaler = StandardScaler().fit(A)
    t0 = time.perf_counter()
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(A), y)
    fit_s = time.perf_counter() - t0
    accs = []
    for X, yy in evals:
        yy = np.concatenate(yy)
        accs.append(float((clf.predict(scaler.transform(window_(X))) == yy).mean()))
    return accs, fit_s


# A factory per neural method: (input size, n_tags, hidden size, seed) -> (SequenceClassifier, random_init).
# The time a factory takes counts against the budget (a spectral start's fit time is training
# time): the trainer gets ``budget - factory seconds`` and the curve is shifted by them.
# Factories see the training data through the module-level DATA dict filled in main().
DATA: dict = {}
START_INFO: dict = {}


def spectral_factory(d_x, k, h, seed, kind="rnn"):
    """The spectral start (spectral_rnn.tag_start): the same nn.RNN(tanh, bidirectional, biases) + Linear
    as ``birnn``, trained by the same trainer with ``random_init=False``."""
    from spectral_rnn.tag_start import fit_spectral_start

    sp = fit_spectral_start(DATA["X_train"], DATA["y_train"], k, h, random_state=seed, kind=kind)
    START_INFO.clear()
    START_INFO.update(units=sp.units, timings=sp.timings, start_train_loss=sp.start_train_loss)
    return sp.module, False


NEURAL = {
    "birnn": lambda d_x, k, h, seed: (make_classifier("rnn", d_x, h, k, nonlinearity="tanh", seed=seed), True),
    "bilstm": lambda d_x, k, h, seed: (make_classifier("lstm", d_x, h, k, seed=seed), True),
    "spectral": spectral_factory,
    "spectral_lstm": lambda d_x, k, h, seed: spectral_factory(d_x, k, h, seed, kind="lstm"),
}
# the random-start method each spectral one is compared with (same module, same trainer)
BASELINE = {"birnn": "birnn", "spectral": "birnn", "bilstm": "bilstm", "spectral_lstm": "bilstm"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="porttinari")
    p.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0, 120.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["majority", "token_logreg", "logreg", "birnn", "bilstm", "spectral"])
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--dim", type=int, default=32, help="word-vector dimension")
    p.add_argument("--suffix-dim", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="seconds counted for budgets and curves: wall (default) or cpu (the process's CPU seconds, "
                        "which another process on a shared machine does not change)")
    p.add_argument("--eval-every", type=float, default=5.0, help="seconds between dev evaluations (default 5)")
    p.add_argument("--patience", type=int, default=10, help="evaluations without improvement before stopping")
    p.add_argument("--from-json", default=None, help="print the table and plot from a saved --json instead of running")
    p.add_argument("--json", default=None, help="write raw results (histories included) here")
    p.add_argument("--plot", default=None, help="write a PNG of dev accuracy vs training seconds here")
    a = p.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as fh:
            saved = json.load(fh)
        report(saved["results"], saved["args"]["corpus"], a.plot, saved["args"].get("clock", "wall"))
        return
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    corpus = load_corpus(a.corpus)
    sp = split_corpus(corpus, (0.8, 0.1, 0.1), random_state=a.split_seed)
    feat = WordFeaturizer(dim=a.dim, suffix_dim=a.suffix_dim, random_state=0).fit(sp.train.words)
    feat_s = time.perf_counter() - t0
    tags = sp.train.tagset()
    Xt, Xd, Xs = (feat.transform(c.words) for c in (sp.train, sp.dev, sp.test))
    yt, yd, ys = (encode_tags(c.tags, tags) for c in (sp.train, sp.dev, sp.test))
    DATA.update(featurizer=feat, tags=tags, X_train=Xt, y_train=yt, X_dev=Xd, y_dev=yd)
    unk = np.mean([not feat.is_known(w) for s in sp.test.words for w in s])
    print(f"corpus {a.corpus}: {len(corpus)} sentences, {corpus.n_tokens} tokens, {len(tags)} tags; split "
          f"{len(sp.train)}/{len(sp.dev)}/{len(sp.test)} sentences (seed {a.split_seed}); features d_x="
          f"{feat.n_features} (PPMI+SVD {a.dim}, suffix {a.suffix_dim}, shape 6), vocabulary {len(feat.vocab_)}, "
          f"test unknown-word rate {unk:.3f}; loading+features {feat_s:.1f} s; torch threads {a.threads}",
          flush=True)

    # The first optimiser built in a process imports torch._dynamo (seconds): do it before any clock runs,
    # so that no method is charged for it.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    results = []
    if "majority" in a.methods:
        dev, test = majority_baseline(sp.train, [sp.dev, sp.test])
        results.append({"method": "majority", "budget": None, "seed": None, "dev": dev, "test": test, "time": 0.0})
        print(f"majority: dev {dev:.4f} test {test:.4f}", flush=True)
    if "token_logreg" in a.methods:
        (dev, test), fit_s = logreg_baseline(Xt, yt, [(Xd, yd), (Xs, ys)], context=False)
        results.append({"method": "token_logreg", "budget": None, "seed": None, "dev": dev, "test": test,
                        "time": fit_s})
        print(f"token_logreg: dev {dev:.4f} test {test:.4f} (fit {fit_s:.1f} s)", flush=True)
    if "logreg" in a.methods:
        (dev, test), fit_s = logreg_baseline(Xt, yt, [(Xd, yd), (Xs, ys)])
        results.append({"method": "logreg", "budget": None, "seed": None, "dev": dev, "test": test, "time": fit_s})
        print(f"logreg: dev {dev:.4f} test {test:.4f} (fit {fit_s:.1f} s)", flush=True)
    clock = CLOCKS[a.clock]
    # interleaved (budget, seed, then method), so that a change of load on a shared machine hits the arms alike
    runs = [(m, b, s) for b in a.budgets for s in a.seeds for m in a.methods if m in NEURAL]
    for method, budget, seed in runs:
        w0 = time.perf_counter()
        c0 = clock()
        module, random_init = NEURAL[method](feat.n_features, len(tags), a.hidden_size, seed)
        init_s = clock() - c0
        init_wall = time.perf_counter() - w0
        start_test = None if random_init else accuracy(module, Xs, ys)  # not timed (evaluation)
        info = dict(START_INFO) if not random_init else {}
        w0 = time.perf_counter() - init_wall  # wall seconds of the run: fit + training + evaluations
        # evaluate at the same clock times as a random start: the first evaluation at the next
        # multiple of eval_every after the fit
        first = a.eval_every - init_s % a.eval_every
        if first < 0.25 * a.eval_every:
            first += a.eval_every
        h = train_classifier(module, Xt, yt, Xd, yd, random_init=random_init,
                             budget_s=max(budget - init_s, 0.0), seed=seed, clock=clock,
                             eval_every_s=a.eval_every, first_eval_s=first, patience=a.patience)
        wall = time.perf_counter() - w0
        test = accuracy(module, Xs, ys)
        hd = h.as_dict()
        hd["time"] = [t + init_s for t in hd["time"]]
        r = {"method": method, "budget": budget, "seed": seed, "dev": h.best_dev_accuracy, "test": test,
             "start_dev": h.dev_accuracy[0], "start_test": start_test, "start_info": info, "init_s": init_s, "time": hd["time"][-1], "wall": wall,
             "eval_time": h.eval_time, "epochs": h.epoch[-1], "stop": h.stop_reason,
             "divergences": h.divergences, "history": hd}
        results.append(r)
        print(f"{method} budget {budget:g} s seed {seed}: dev {r['dev']:.4f} test {test:.4f} "
              f"({h.epoch[-1]:.1f} epochs, train {h.time[-1]:.1f} s, eval {h.eval_time:.1f} s, "
              f"{h.stop_reason})" + ("" if random_init else f"; start (fit {init_s:.1f} s): dev "
                                     f"{h.dev_accuracy[0]:.4f} test {start_test:.4f}"), flush=True)

    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "n_features": feat.n_features, "results": results}, fh, indent=1)
    report(results, a.corpus, a.plot, a.clock)


# The trainer evaluates on a fixed grid (every --eval-every seconds), after the minibatch that crosses each
# grid time: an evaluation "at 30 s" is logged at 30.0-30.1 s. The pass check allows that overshoot.
GRID_TOL = 0.25


def time_to(history, target):
    """Training seconds at the first evaluation whose dev accuracy reaches ``target`` (inf if never)."""
    for t, acc in zip(history["time"], history["dev_accuracy"]):
        if acc >= target:
            return t
    return float("inf")


def report(results, corpus_name, plot=None, clock="wall"):
    """The table (medians over seeds) and, if ``plot``, the accuracy-vs-time figure."""
    groups = defaultdict(list)
    for r in results:
        groups[(r["method"], r["budget"])].append(r)
    # Target per (random-start method, budget): its median final dev accuracy (the acceptance criterion's);
    # a spectral method is measured against its own module's random start (BASELINE)
    target = {(m, b): float(np.median([r["dev"] for r in rs])) for (m, b), rs in groups.items()
              if m in ("birnn", "bilstm")}
    print()
    print("dev/test: accuracy of the weights with the best dev accuracy; start: dev accuracy before training;")
    print("t->base: median seconds (fit included) to reach the random start's median final dev accuracy at that")
    print("budget (the same module's: birnn for birnn/spectral, bilstm for bilstm/spectral_lstm)")
    print(f"{'method':<13} {'budget (s)':>10} {'seeds':>5} {'dev':>7} {'test':>7} {'test per seed':>22} "
          f"{'start':>6} {'epochs':>6} {'t->base':>8}")
    print("-" * 93)
    for (method, budget), rs in groups.items():
        dev = np.median([r["dev"] for r in rs])
        test = np.median([r["test"] for r in rs])
        per = " ".join(f"{r['test']:.4f}" for r in rs) if len(rs) > 1 else ""
        neural = "history" in rs[0]
        start = f"{np.median([r['history']['dev_accuracy'][0] for r in rs]):.3f}" if neural else ""
        ep = f"{np.median([r['epochs'] for r in rs]):.1f}" if neural else ""
        tt = ""
        key = (BASELINE.get(method), budget)
        if neural and key in target:
            tt = f"{np.median([time_to(r['history'], target[key]) for r in rs]):.1f}"
        b = f"{budget:g}" if budget is not None else "-"
        print(f"{method:<13} {b:>10} {len(rs):>5} {dev:>7.4f} {test:>7.4f} {per:>22} {start:>6} {ep:>6} {tt:>8}")
    starts = [(m, b, rs) for (m, b), rs in groups.items() if rs[0].get("start_test") is not None]
    if starts:
        print()
        print("starts before any training (fit seconds counted in the budget); acceptance: reach the random start's")
        print("median final dev accuracy in at most half its budget, end no lower (medians over seeds)")
        print(f"{'method':<13} {'budget (s)':>10} {'fit (s)':>7} {'start dev':>9} {'start test':>10} "
              f"{'t->base':>8} {'half':>5} {'dev':>7} {'base dev':>9} {'pass':>5}")
        for method, budget, rs in starts:
            fit = np.median([r["init_s"] for r in rs])
            sd = np.median([r["start_dev"] for r in rs])
            st = np.median([r["start_test"] for r in rs])
            key = (BASELINE.get(method), budget)
            tt = np.median([time_to(r["history"], target[key]) for r in rs]) if key in target else float("nan")
            dev = np.median([r["dev"] for r in rs])
            tb = target.get(key, float("nan"))
            ok = "yes" if tt <= budget / 2 + GRID_TOL and dev >= tb else "no"
            print(f"{method:<13} {budget:>10g} {fit:>7.1f} {sd:>9.4f} {st:>10.4f} {tt:>8.1f} {budget / 2:>5.0f} "
                  f"{dev:>7.4f} {tb:>9.4f} {ok:>5}")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        budgets = [r["budget"] for r in results if r["budget"] is not None]
        top = max(budgets) if budgets else None
        seen = set()
        for r in results:
            if r["budget"] == top and "history" in r:
                h = r["history"]
                color = f"C{sorted({x['method'] for x in results if 'history' in x}).index(r['method'])}"
                ax.plot(h["time"], h["dev_accuracy"], color=color, alpha=0.8,
                        label=r["method"] if r["method"] not in seen else None)
                seen.add(r["method"])
        for r in results:
            if "history" not in r:
                ax.axhline(r["dev"], ls="--", color="gray" if r["method"] == "majority" else "k", lw=1,
                           label=r["method"])
        ax.set_xlabel(("CPU" if clock == "cpu" else "wall-clock") + " seconds of fit and training (evaluation excluded)")
        ax.set_ylabel("development accuracy")
        ax.set_ylim(0.85, 1.0)
        ax.set_title(f"{corpus_name}: dev accuracy vs training time (budget {top:g} s, one line per seed)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"plot written to {plot}")


if __name__ == "__main__":
    main()
