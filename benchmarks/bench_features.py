"""Word vectors for tagging: PPMI + truncated SVD against gensim's Word2Vec (skip-gram).

On the same split of a corpus (default porttinari), for each method: the time to fit the
featurizer, and the development accuracy of a BiRNN(tanh) tagger (64 units, Adam)
trained for a fixed budget from the same seeds, plus that of a per-token logistic
regression on the features (no context: what the vectors alone carry). gensim is
needed only for this comparison (``pip install gensim``).

    python benchmarks/bench_features.py --budget 20 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from spectral_rnn.corpora import load_corpus, split_corpus  # noqa: E402
from spectral_rnn.features import WordFeaturizer  # noqa: E402
from spectral_rnn.tagger import encode_tags, make_classifier, train_classifier  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="porttinari")
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=["ppmi", "word2vec"])
    p.add_argument("--dim", type=int, default=32)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from sklearn.linear_model import LogisticRegression

    sp = split_corpus(load_corpus(a.corpus), (0.8, 0.1, 0.1), random_state=0)
    tags = sp.train.tagset()
    yt, yd = encode_tags(sp.train.tags, tags), encode_tags(sp.dev.tags, tags)
    print(f"{'method':<10} {'fit (s)':>8} {'token logreg dev':>17} {'BiRNN dev per seed':>22} {'median':>8}")
    for method in a.methods:
        t0 = time.perf_counter()
        feat = WordFeaturizer(dim=a.dim, method=method, random_state=0).fit(sp.train.words)
        fit_s = time.perf_counter() - t0
        Xt, Xd = feat.transform(sp.train.words), feat.transform(sp.dev.words)
        clf = LogisticRegression(max_iter=200).fit(np.vstack(Xt), np.concatenate(yt))
        lr_dev = float((clf.predict(np.vstack(Xd)) == np.concatenate(yd)).mean())
        accs = []
        for seed in a.seeds:
            m = make_classifier("rnn", feat.n_features, 64, len(tags), seed=seed)
            h = train_classifier(m, Xt, yt, Xd, yd, budget_s=a.budget, seed=seed)
            accs.append(h.best_dev_accuracy)
        per = " ".join(f"{x:.4f}" for x in accs)
        print(f"{method:<10} {fit_s:>8.1f} {lr_dev:>17.4f} {per:>22} {np.median(accs):>8.4f}", flush=True)


if __name__ == "__main__":
    main()
