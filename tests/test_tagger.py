"""Tagger: trainer (budget, early stopping, divergence recovery, given weights), predictions
without NaN, tagger file round trip, and the ``tag`` command line."""

import math

import numpy as np
import pytest
import torch

from spectral_rnn import InputError
from spectral_rnn.cli_tag import fill_upos, main
from spectral_rnn.features import WordFeaturizer
from spectral_rnn.tagger import (
    IGNORE_INDEX,
    SequenceClassifier,
    Tagger,
    accuracy,
    encode_tags,
    fit_readout,
    load_tagger,
    make_classifier,
    predict_labels,
    predict_proba,
    save_tagger,
    train_classifier,
    train_tagger,
)
from test_features import toy_corpus


@pytest.fixture(scope="module")
def toy():
    sents, tags = toy_corpus(160, seed=0)
    dev_s, dev_t = toy_corpus(40, seed=1)
    return sents, tags, dev_s, dev_t


@pytest.fixture(scope="module")
def toy_arrays(toy):
    """The toy corpus as features and label arrays: (featurizer, tag set, Xt, Xd, yt, yd)."""
    sents, tags, dev_s, dev_t = toy
    feat = WordFeaturizer(dim=8, suffix_dim=4).fit(sents)
    ts = sorted({t for s in tags for t in s})
    return feat, ts, feat.transform(sents), feat.transform(dev_s), encode_tags(tags, ts), encode_tags(dev_t, ts)


@pytest.fixture(scope="module")
def trained(toy):
    sents, tags, dev_s, dev_t = toy
    feat = WordFeaturizer(dim=8, suffix_dim=4, min_suffix_count=2)
    tagger, hist = train_tagger(sents, tags, dev_s, dev_t, hidden_size=8, budget_s=3, featurizer=feat,
                                eval_every_s=0.5, lr=1e-2, patience=100)
    return tagger, hist


def test_trainer_learns_the_toy_grammar(trained, toy):
    tagger, hist = trained
    _, _, dev_s, dev_t = toy
    assert hist.best_dev_accuracy >= 0.95
    assert hist.dev_accuracy[hist.best] == max(hist.dev_accuracy)
    assert hist.time == sorted(hist.time) and hist.time[-1] <= 3 + 1.0  # budget respected (one step over at most)
    res = tagger.evaluate(dev_s, dev_t)
    assert res["accuracy"] == pytest.approx(hist.best_dev_accuracy, abs=1e-9)
    assert res["unseen_tags"] == {}


def test_no_nan_on_unknown_one_word_and_long_sentences(trained):
    tagger, _ = trained
    rng = np.random.default_rng(0)
    long = [str(w) for w in rng.choice(["gato", "xyzzy", "Qq", ".", "2024", "corre"], 300)]
    sents = [["desconhecidíssimo"], long, ["O", "gato", "dorme", "."]]
    probs = tagger.predict_proba(sents)
    assert [p.shape[0] for p in probs] == [1, 300, 4]
    assert all(np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-5) for p in probs)
    tags = tagger.predict(sents)
    assert [len(t) for t in tags] == [1, 300, 4] and all(t in tagger.tags for s in tags for t in s)


def test_bidirectional_packing_matches_single_sequences():
    m = make_classifier("rnn", 3, 4, 2, seed=0)
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((t, 3)).astype(np.float32) for t in (5, 2, 7)]
    batch = predict_proba(m, seqs)
    for s, p in zip(seqs, batch):
        assert np.allclose(predict_proba(m, [s])[0], p, atol=1e-6)


def test_given_weights_are_trained_as_they_are_and_random_init_redraws(toy_arrays):
    feat, ts, Xt, Xd, yt, yd = toy_arrays
    rnn = torch.nn.RNN(feat.n_features, 6, batch_first=True, bidirectional=True, nonlinearity="tanh")
    readout = torch.nn.Linear(12, len(ts))
    with torch.no_grad():
        for p in rnn.parameters():
            p.fill_(0.01)
    m = SequenceClassifier(rnn, readout)
    h = train_classifier(m, Xt, yt, Xd, yd, budget_s=None, max_epochs=0)  # evaluates the start only
    assert h.stop_reason == "max_epochs" and len(h.time) == 1
    assert torch.all(m.rnn.weight_hh_l0 == 0.01)
    train_classifier(m, Xt, yt, Xd, yd, random_init=True, budget_s=None, max_epochs=0, seed=4)
    w1 = m.rnn.weight_hh_l0.detach().clone()
    assert not torch.all(w1 == 0.01)
    train_classifier(m, Xt, yt, Xd, yd, random_init=True, budget_s=None, max_epochs=0, seed=4)
    assert torch.equal(w1, m.rnn.weight_hh_l0)  # seeded
    # the convex read-out step improves the start
    before = accuracy(m, Xd, yd)
    fit_readout(m, Xt, yt)
    assert accuracy(m, Xd, yd) >= before


def test_bias_free_rnn_and_readout_as_exported(toy, toy_arrays, tmp_path):
    """The layout of spectral_rnn.torch_export's tanh export: nn.RNN(bias=False), Linear(bias=False)."""
    dev_s = toy[2]
    feat, ts, Xt, Xd, yt, yd = toy_arrays
    rnn = torch.nn.RNN(feat.n_features, 5, nonlinearity="tanh", bias=False, batch_first=True, bidirectional=True)
    readout = torch.nn.Linear(10, len(ts), bias=False)
    m = SequenceClassifier(rnn, readout)
    fit_readout(m, Xt, yt)
    train_classifier((rnn, readout), Xt, yt, Xd, yd, budget_s=None, max_epochs=1)
    assert all(np.isfinite(p).all() for p in predict_proba(m, Xd))
    tagger = Tagger(feat, ts, m)
    save_tagger(tagger, tmp_path / "nb.safetensors")
    again = load_tagger(tmp_path / "nb.safetensors")
    assert again.module.rnn.bias is False and again.module.readout.bias is None
    assert np.allclose(again.predict_proba(dev_s[:3])[0], tagger.predict_proba(dev_s[:3])[0], atol=1e-6)
    m2 = make_classifier("rnn", 4, 3, 2, bias=False)
    assert not m2.rnn.bias and m2.readout.bias is not None


def test_divergence_restores_best_weights_and_halves_lr(toy_arrays, monkeypatch):
    feat, ts, Xt, Xd, yt, yd = toy_arrays
    m = make_classifier("rnn", feat.n_features, 6, len(ts), seed=0)
    calls = {"n": 0}
    orig = torch.nn.functional.cross_entropy

    def flaky(*a, **k):  # every 7th training loss is NaN
        out = orig(*a, **k)
        if torch.is_grad_enabled() and out.requires_grad:
            calls["n"] += 1
            if calls["n"] % 7 == 0:
                return out * float("nan")
        return out

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", flaky)
    h = train_classifier(m, Xt, yt, Xd, yd, budget_s=None, max_epochs=20, max_restarts=2, lr=1e-2)
    assert h.divergences == 3 and h.stop_reason == "diverged"
    assert h.lr[-1] == pytest.approx(1e-2 / 8)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert all(np.isfinite(p).all() for p in predict_proba(m, Xd))
    assert math.isfinite(h.best_dev_accuracy)


def test_input_checks():
    m = make_classifier("lstm", 3, 4, 2, seed=0)
    X = [np.zeros((2, 3), np.float32)]
    with pytest.raises(InputError, match="features"):
        train_classifier(m, [np.zeros((2, 5), np.float32)], [np.zeros(2, int)], X, [np.zeros(2, int)])
    with pytest.raises(InputError, match="labels outside"):
        train_classifier(m, X, [np.array([0, 7])], X, [np.zeros(2, int)])
    with pytest.raises(InputError, match="NaN"):
        predict_labels(m, [np.full((2, 3), np.nan, np.float32)])
    with pytest.raises(InputError):
        make_classifier("transformer", 3, 4, 2)
    # unknown gold labels count as errors
    y = [np.array([IGNORE_INDEX, IGNORE_INDEX])]
    assert accuracy(m, X, y) == 0.0


def test_tagger_file_roundtrip(trained, tmp_path):
    tagger, _ = trained
    path = tmp_path / "t.safetensors"
    save_tagger(tagger, path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    again = load_tagger(path)
    sents = [["O", "gato", "desconhecido", "dorme", "."], ["Sim"]]
    assert again.tags == tagger.tags
    for a, b in zip(tagger.predict_proba(sents), again.predict_proba(sents)):
        assert np.allclose(a, b, atol=1e-6)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "spectral-rnn-tagger" and "featurizer.vocab" in meta
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError):
        load_tagger(bad)
    with pytest.raises(InputError):
        load_tagger(tmp_path / "missing.safetensors")


def test_evaluate_reports_unseen_tags(trained):
    tagger, _ = trained
    res = tagger.evaluate([["O", "gato"]], [["DET", "NEWTAG"]])
    assert res["n_tokens"] == 2 and res["unseen_tags"] == {"NEWTAG": 1} and res["accuracy"] <= 0.5


# ------------------------------------------------------------------ command line
def conllu_text(sents, tags):
    out = []
    for i, (ws, ts) in enumerate(zip(sents, tags)):
        out.append(f"# sent_id = {i}")
        for j, (w, t) in enumerate(zip(ws, ts), 1):
            out.append(f"{j}\t{w}\t{w.lower()}\t{t}\t_\t_\t_\t_\t_\t_")
        out.append("")
    return "\n".join(out) + "\n"


def test_cli_train_eval_predict(toy, tmp_path, capsys):
    sents, tags, dev_s, dev_t = toy
    train = tmp_path / "train.conllu"
    train.write_text(conllu_text(sents, tags), encoding="utf-8")
    test_tags = [list(t) for t in dev_t]
    test_tags[0][0] = "WEIRD"
    test = tmp_path / "test.conllu"
    test.write_text(conllu_text(dev_s, test_tags), encoding="utf-8")
    model = tmp_path / "m.safetensors"
    threads = torch.get_num_threads()
    code = main(["tag", "train", str(train), "--out", str(model), "--budget", "2", "--hidden-size", "8",
                 "--dim", "8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("development accuracy ")
    assert ", 1 thread\n" in out and torch.get_num_threads() == threads  # the default, and restored after
    code = main(["tag", "eval", str(model), str(test)])
    out, err = capsys.readouterr()
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    n = sum(len(s) for s in dev_s)
    assert last.startswith("accuracy 0.") and last.endswith(f" on {n} tokens") and len(last.split()[1]) == 6
    assert "WEIRD (1)" in out
    # predict keeps everything but the UPOS column, multiword ranges and comments included
    text = ("# newdoc\n# text = do gato\n1-2\tdo\t_\t_\t_\t_\t_\t_\t_\t_\n1\tde\tde\t_\t_\t_\t_\t_\t_\t_\n"
            "2\to\to\t_\t_\tG=M\t3\tdet\t_\t_\n3\tgato\tgato\t_\t_\t_\t0\troot\t_\tSpaceAfter=No\n\n")
    src = tmp_path / "in.conllu"
    src.write_text(text, encoding="utf-8")
    dst = tmp_path / "out.conllu"
    code = main(["tag", "predict", str(model), str(src), "--out", str(dst)])
    capsys.readouterr()
    assert code == 0
    got = dst.read_text(encoding="utf-8").splitlines()
    want = text.splitlines()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        gc, wc = g.split("\t"), w.split("\t")
        if w and w[0].isdigit() and "-" not in wc[0]:
            assert gc[:3] + gc[4:] == wc[:3] + wc[4:] and gc[3] != "_"
        else:
            assert g == w


@pytest.mark.parametrize("content", ["", "hello, world\n", "1\tO\to\t_\t_\t_\t_\t_\t_\t_\n"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.conllu"
    bad.write_text(content, encoding="utf-8")
    code = main(["tag", "train", str(bad), "--out", str(tmp_path / "m.safetensors"), "--budget", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("spectral-rnn: error:")


def test_cli_usage_errors(tmp_path, capsys):
    for argv in (["tag", "train", "x.conllu", "--out", "m", "--budget", "-1"],
                 ["tag", "train", "x.conllu", "--out", "m", "--threads", "0"],
                 ["tag", "eval", str(tmp_path / "nope.safetensors"), "x.conllu"],
                 ["tag"]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1, (argv, err)


def test_fill_upos_validates():
    with pytest.raises(InputError):
        fill_upos("not conllu at all\n", lambda s: s)


def test_clock_and_first_evaluation_time(toy_arrays):
    # a fake clock that advances 0.5 s per reading: each minibatch costs exactly 0.5 s of training
    feat, ts, Xt, Xd, yt, yd = toy_arrays
    ticks = iter(np.arange(0.0, 1e6, 0.5))
    m = make_classifier("rnn", feat.n_features, 4, len(ts), seed=0)
    h = train_classifier(m, Xt, yt, Xd, yd, budget_s=3.0, eval_every_s=2.0, first_eval_s=0.5,
                         clock=lambda: float(next(ticks)), batch_size=8)
    assert h.time == [0.0, 0.5, 2.5, 3.0] and h.step == [0, 1, 5, 6] and h.stop_reason == "time_budget"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="first_eval_s"):
            train_classifier(m, Xt, yt, Xd, yd, budget_s=1.0, first_eval_s=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="eval_every_s"):
            train_classifier(m, Xt, yt, Xd, yd, budget_s=1.0, eval_every_s=bad)
    # the evaluation grid does not drift: 0.75 s minibatches, evaluations every 2 s
    ticks = iter(np.arange(0.0, 1e6, 0.75))
    h = train_classifier(m, Xt, yt, Xd, yd, budget_s=6.5, eval_every_s=2.0, clock=lambda: float(next(ticks)),
                         batch_size=8, patience=100)
    assert h.time == [0.0, 2.25, 4.5, 6.0, 6.75]


def test_readout_in_float32_ends_where_float64_does(toy_arrays):
    """The read-out's default float32 solve (the speed of the spectral start) reaches the float64 solve's loss."""
    feat, ts, Xt, Xd, yt, yd = toy_arrays
    losses, weights = [], []
    for dtype in (torch.float64, torch.float32):
        m = make_classifier("rnn", feat.n_features, 6, len(ts), seed=0)
        losses.append(fit_readout(m, Xt, yt, dtype=dtype, max_iter=200))
        weights.append(m.readout.weight.detach().double())
    assert not torch.equal(weights[0], weights[1])  # two solves in two precisions, not one
    assert abs(losses[1] - losses[0]) <= 1e-5
    assert torch.linalg.norm(weights[1] - weights[0]) <= 5e-3 * torch.linalg.norm(weights[0])
    m = make_classifier("rnn", feat.n_features, 6, len(ts), seed=0)
    with pytest.raises(InputError, match="dtype"):
        fit_readout(m, Xt, yt, dtype=torch.int64)
