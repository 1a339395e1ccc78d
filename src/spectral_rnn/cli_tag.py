"""``spectral-rnn tag``: train, evaluate and apply a part-of-speech tagger on CoNLL-U files.

    spectral-rnn tag train TRAIN.conllu --out TAGGER.safetensors [--hidden-size H] [--budget SECONDS] [--seed S]
                           [--kind lstm|rnn|gru] [--start spectral|random] [--clock wall|cpu]
    spectral-rnn tag eval TAGGER.safetensors TEST.conllu
    spectral-rnn tag predict TAGGER.safetensors IN.conllu --out OUT.conllu

To wire it into :mod:`spectral_rnn.cli`: call :func:`add_tag_parser` on the
sub-parsers object in ``build_parser`` and map the command ``"tag"`` to :func:`cmd_tag`
in ``_COMMANDS``; bad input raises :class:`InputError`, which ``cli.main`` already turns
into exit code 2 with one line. :func:`main` runs the ``tag`` commands alone (same
conventions), for tests and until then.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from ._checks import InputError

__all__ = ["add_tag_parser", "cmd_tag", "cmd_train", "cmd_eval", "cmd_predict", "fill_upos", "main"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return v


def add_tag_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``tag`` command (with ``train``, ``eval``, ``predict``) to an argparse sub-parsers object."""
    t = subparsers.add_parser("tag", help="part-of-speech tagging on CoNLL-U files (train, eval, predict)",
                              description="Train, evaluate and apply a bidirectional recurrent part-of-speech tagger on CoNLL-U "
                                          "files (UPOS column).")
    sub = t.add_subparsers(dest="tag_command", required=True, metavar="TAG_COMMAND")
    tr = sub.add_parser("train", help="train a tagger on a CoNLL-U file",
                        description="Fit word features on TRAIN.conllu (less a development split), train a "
                                    "bidirectional recurrent tagger (by default a BiLSTM from the spectral start) "
                                    "for a time budget, and write TAGGER.safetensors.")
    tr.add_argument("train", metavar="TRAIN.conllu")
    tr.add_argument("--out", required=True, metavar="TAGGER.safetensors")
    tr.add_argument("--hidden-size", type=_int_at_least(1, "a positive integer"), default=64,
                    help="hidden units per direction (default 64)")
    tr.add_argument("--budget", type=_positive_float, default=120.0,
                    help="training seconds, the spectral start's fit included, evaluation excluded (default 120)")
    tr.add_argument("--seed", type=_int_at_least(0, "a non-negative integer"), default=0, help="random seed (default 0)")
    tr.add_argument("--kind", choices=["rnn", "lstm", "gru"], default=DEFAULT_KIND,
                    help="recurrent module: lstm = nn.LSTM (default), rnn = nn.RNN(tanh), gru = nn.GRU")
    tr.add_argument("--start", choices=["spectral", "random"], default=None, help=START_HELP)
    tr.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="what --budget counts: wall = wall-clock seconds (default), cpu = this process's CPU "
                         "seconds (on a shared machine, the same amount of work whatever else runs)")
    tr.add_argument("--dev-fraction", type=_fraction, default=0.1,
                    help="share of TRAIN's sentences held out for development and early stopping (default 0.1)")
    tr.add_argument("--dim", type=_int_at_least(1, "a positive integer"), default=32,
                    help="word-vector dimension (default 32)")
    tr.add_argument("--threads", type=_int_at_least(1, "a positive integer"), default=1,
                    help="torch threads for the fit and the training (default 1: the minibatches of a tagger are "
                         "too small for more to help, and with --clock cpu every extra thread spends the budget)")
    ev = sub.add_parser("eval", help="accuracy of a tagger on a tagged CoNLL-U file",
                        description="Tag TEST.conllu and compare with its UPOS column. A gold tag the tagger "
                                    "never saw counts as an error and is listed. Last line: accuracy A on N tokens.")
    ev.add_argument("tagger", metavar="TAGGER.safetensors")
    ev.add_argument("test", metavar="TEST.conllu")
    pr = sub.add_parser("predict", help="fill the UPOS column of a CoNLL-U file",
                        description="Write IN.conllu to OUT.conllu with the UPOS column filled by the tagger; "
                                    "every other line and column is kept as it is.")
    pr.add_argument("tagger", metavar="TAGGER.safetensors")
    pr.add_argument("input", metavar="IN.conllu")
    pr.add_argument("--out", required=True, metavar="OUT.conllu")
    return t


#: ``tag train --kind`` and ``--start`` defaults, chosen by the measured results (docs/tagging.md,
#: "The spectral start" and "Command line")
DEFAULT_KIND = "lstm"
DEFAULT_START = "spectral"
START_HELP = ("how the network starts: spectral = input directions from Stein moments of the training "
              "features and tags, a delay line, a convex read-out (--kind rnn, or lstm: in the cell-candidate gate "
              "with the input and output gates open; its fitting time is charged to --budget); random = PyTorch's "
              "default initialisation. Default: " + DEFAULT_START + " for rnn and lstm, random for gru")

#: what ``--budget`` counts (``--clock``): wall-clock seconds or this process's CPU seconds; also
#: used by benchmarks/bench_tagging.py
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _say(text: str) -> None:
    print(text, flush=True)


def cmd_train(a: argparse.Namespace) -> int:
    from .corpora import read_conllu, split_corpus
    from .features import WordFeaturizer
    from .tagger import save_tagger, train_tagger
    from .threads import limit_threads

    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        raise InputError(f"cannot write {a.out}: no directory {out_dir}")
    corpus = read_conllu(a.train)
    if len(corpus) < 2:
        raise InputError(f"{a.train} holds {len(corpus)} sentence; training needs at least 2 (one for development)")
    sp = split_corpus(corpus, (1 - a.dev_fraction, a.dev_fraction, 0.0), random_state=a.seed)
    t0 = time.perf_counter()
    feat = WordFeaturizer(dim=a.dim, suffix_dim=min(16, a.dim), random_state=a.seed).fit(sp.train.words)
    tags = sp.train.tagset()
    _say(f"data: {a.train}: {len(corpus)} sentences, {corpus.n_tokens} tokens, {len(tags)} tags; "
         f"train {len(sp.train)} / development {len(sp.dev)} sentences (seed {a.seed})")
    _say(f"features: d_x={feat.n_features} (PPMI+SVD word vectors {feat.dim}, suffix {feat.suffix_dim}, shape 6), "
         f"vocabulary {len(feat.vocab_)} words, fitted in {time.perf_counter() - t0:.1f} s")
    if a.kind == "gru" and a.start == "spectral":
        raise InputError("--start spectral builds a BiRNN(tanh) or a BiLSTM: --kind gru takes --start random only")
    start = a.start or (DEFAULT_START if a.kind in ("rnn", "lstm") else "random")
    _say(f"model: bidirectional {a.kind}{'(tanh)' if a.kind == 'rnn' else ''}, {a.hidden_size} units per direction, "
         f"{start} start, Adam, cross-entropy, budget {a.budget:g} s, {a.threads} thread{'s' if a.threads > 1 else ''}")
    with limit_threads(a.threads):
        tagger, hist = train_tagger(sp.train.words, sp.train.tags, sp.dev.words, sp.dev.tags, kind=a.kind,
                                    hidden_size=a.hidden_size, budget_s=a.budget, seed=a.seed, featurizer=feat,
                                    start=start, log=_say, clock=CLOCKS[a.clock])
    tagger.config.update({"train_file": os.path.basename(a.train), "dev_fraction": a.dev_fraction})
    save_tagger(tagger, a.out)
    _say(f"stopped: {hist.stop_reason} after {hist.epoch[-1]:.1f} epochs, {hist.time[-1]:.1f} s of training"
         + (f", {hist.divergences} divergent steps recovered" if hist.divergences else ""))
    _say(f"wrote {a.out}")
    _say(f"development accuracy {hist.best_dev_accuracy:.4f} on {sp.dev.n_tokens} tokens")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .corpora import read_conllu
    from .tagger import load_tagger

    tagger = load_tagger(a.tagger)
    corpus = read_conllu(a.test)
    res = tagger.evaluate(corpus.words, corpus.tags)
    if res["n_tokens"] == 0:
        raise InputError(f"{a.test} has no tagged token")
    _say(f"{a.test}: {len(corpus)} sentences, {res['n_tokens']} tagged tokens; tagger knows {len(tagger.tags)} tags")
    if res["unseen_tags"]:
        listed = ", ".join(f"{t} ({n})" for t, n in res["unseen_tags"].items())
        _say(f"gold tags the tagger never saw (counted as errors): {listed}")
    _say(f"accuracy {res['accuracy']:.4f} on {res['n_tokens']} tokens")
    return 0


def fill_upos(text: str, tag_sentences, name: str = "<text>") -> tuple[str, int]:
    """Return ``text`` with the UPOS column of every syntactic word filled by ``tag_sentences``.

    ``tag_sentences(list of word lists) -> list of tag lists``. Comment lines, multiword
    ranges, empty nodes and all other columns are kept byte for byte (line endings
    included). Returns the new text and the number of tagged tokens.
    """
    from .corpora import parse_conllu

    parse_conllu(text, name=name, require_tags=False)  # validates (InputError on bad input)
    lines = text.splitlines(keepends=True)
    blocks: list[list[int]] = []  # per sentence: indices of the lines of its syntactic words
    cur: list[int] = []
    for i, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if not body.strip():
            if cur:
                blocks.append(cur)
            cur = []
            continue
        if body.startswith("#"):
            continue
        first = body.split("\t", 1)[0]
        if first.isdigit():
            cur.append(i)
    if cur:
        blocks.append(cur)
    words = [[lines[i].rstrip("\r\n").split("\t")[1] for i in b] for b in blocks]
    tags = tag_sentences(words) if words else []
    for b, ts in zip(blocks, tags):
        for i, t in zip(b, ts):
            line = lines[i]
            end = line[len(line.rstrip("\r\n")):]
            cols = line.rstrip("\r\n").split("\t")
            cols[3] = t
            lines[i] = "\t".join(cols) + end
    return "".join(lines), sum(len(b) for b in blocks)


def cmd_predict(a: argparse.Namespace) -> int:
    from .corpora import read_conllu_text
    from .tagger import _atomic_write_bytes, load_tagger

    tagger = load_tagger(a.tagger)
    text = read_conllu_text(a.input)
    bom = text.startswith("\ufeff")
    new, n = fill_upos(text[1:] if bom else text, tagger.predict, name=a.input)
    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        raise InputError(f"cannot write {a.out}: no directory {out_dir}")
    _atomic_write_bytes(a.out, (("\ufeff" if bom else "") + new).encode("utf-8"))
    _say(f"tagged {n} tokens in {a.input}; wrote {a.out}")
    return 0


_TAG_COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}


def cmd_tag(a: argparse.Namespace) -> int:
    """Dispatch ``spectral-rnn tag ...`` (``a.tag_command``)."""
    return _TAG_COMMANDS[a.tag_command](a)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spectral-rnn tag ...`` (argv starts with ``tag``); returns the exit code. The same as
    the ``spectral-rnn`` command line, which owns the error handling and signals."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
