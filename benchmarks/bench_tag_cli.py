"""The ``spectral-rnn tag`` commands end to end on a held-out split, against the majority baseline.

Splits a corpus (one or more shipped names or ``.conllu`` paths, concatenated) 90/10 by
sentence (seed 0) into two CoNLL-U files, then for each configuration runs
``spectral-rnn tag train TRAIN --budget B [options]`` (which holds out 10% of TRAIN for
development) and ``spectral-rnn tag eval TAGGER TEST``, and prints a table with the
majority-tag-per-word baseline (fitted on TRAIN). Configurations: ``default`` (the
command's defaults), ``spectral``, ``random`` (BiRNN(tanh), ``--kind rnn --start ...``),
``lstm`` (BiLSTM from PyTorch's initialisation, ``--kind lstm --start random``: the
baseline of the issue's acceptance) and ``spectral_lstm`` (``--kind lstm --start spectral``).

    python benchmarks/bench_tag_cli.py --corpus turkish-web turkish-wiki --budget 120 --runs default lstm
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from spectral_rnn.cli_tag import main as tag_main  # noqa: E402
from spectral_rnn.corpora import TaggedCorpus, load_corpus, split_corpus  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tagging import majority_baseline  # noqa: E402

RUNS = {"default": [], "spectral": ["--kind", "rnn", "--start", "spectral"], "random": ["--kind", "rnn", "--start", "random"],
        "lstm": ["--kind", "lstm", "--start", "random"], "spectral_lstm": ["--kind", "lstm", "--start", "spectral"]}


def write_conllu(corpus: TaggedCorpus, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i, (ws, ts) in enumerate(zip(corpus.words, corpus.tags)):
            fh.write(f"# sent_id = {i}\n")
            for j, (w, t) in enumerate(zip(ws, ts), 1):
                fh.write(f"{j}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_\n")
            fh.write("\n")


def run_cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = tag_main(argv)
    return code, buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", default=["porttinari"])
    p.add_argument("--budget", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", nargs="+", default=["default", "lstm"], choices=sorted(RUNS))
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what --budget counts (tag train --clock)")
    p.add_argument("--hidden-size", type=int, default=None, help="tag train --hidden-size of every run (default: its own)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    parts = [load_corpus(c) for c in a.corpus]
    corpus = TaggedCorpus([w for c in parts for w in c.words], [t for c in parts for t in c.tags], "+".join(a.corpus))
    sp = split_corpus(corpus, (0.9, 0.0, 0.1), random_state=0)
    results = {"corpus": a.corpus, "sentences": len(corpus), "tokens": corpus.n_tokens,
               "tags": corpus.tagset(), "budget": a.budget, "seed": a.seed, "runs": {}}
    print(f"corpus {'+'.join(a.corpus)}: {len(corpus)} sentences, {corpus.n_tokens} tokens, "
          f"{len(corpus.tagset())} tags; train file {len(sp.train)} sentences, test file {len(sp.test)} "
          f"sentences ({sp.test.n_tokens} tokens)", flush=True)
    (maj,) = majority_baseline(sp.train, [sp.test])
    results["majority"] = maj
    print(f"majority tag per word (fitted on the train file): test {maj:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        train, test = os.path.join(tmp, "train.conllu"), os.path.join(tmp, "test.conllu")
        write_conllu(sp.train, train)
        write_conllu(sp.test, test)
        for name in a.runs:
            model = os.path.join(tmp, f"{name}.safetensors")
            t0 = time.perf_counter()
            code, out = run_cli(["tag", "train", train, "--out", model, "--budget", f"{a.budget:g}",
                                 "--seed", str(a.seed), "--clock", a.clock, *RUNS[name],
                                 *(["--hidden-size", str(a.hidden_size)] if a.hidden_size else [])])
            wall = time.perf_counter() - t0
            if code:
                raise SystemExit(f"tag train {name} failed with code {code}")
            lines = out.strip().splitlines()
            dev = float(lines[-1].split()[2])
            model_line = next(ln for ln in lines if ln.startswith("model:"))
            code, ev = run_cli(["tag", "eval", model, test])
            acc = float(ev.strip().splitlines()[-1].split()[1])
            results["runs"][name] = {"test": acc, "dev": dev, "wall_s": wall, "model": model_line,
                                     "train_output": out, "eval_output": ev}
            print(f"{name}: {model_line}; dev {dev:.4f}; test {acc:.4f} (train wall {wall:.1f} s)", flush=True)
            for ln in lines:
                if ln.startswith("  forward:") or ln.startswith("  backward:") or ln.startswith("stopped"):
                    print("   ", ln.strip(), flush=True)
    print()
    print(f"{'method':<22} {'test accuracy':>13}")
    print(f"{'majority':<22} {maj:>13.4f}")
    for name, r in results["runs"].items():
        print(f"{name:<22} {r['test']:>13.4f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
