"""WordFeaturizer: shapes, unknown words, no NaN, serialisation without pickle; pad_sequences."""

import json

import numpy as np
import pytest

from spectral_rnn import InputError
from spectral_rnn.features import SHAPE_FEATURES, WordFeaturizer, pad_sequences


def toy_corpus(n=120, seed=0):
    """Sentences from a tiny grammar: DET NOUN VERB (ADP DET NOUN) PUNCT, with inflections."""
    rng = np.random.default_rng(seed)
    dets, nouns = ["o", "a", "um", "uma"], ["gato", "casa", "livro", "mesa", "carro", "porta", "menino"]
    verbs, adps = ["dorme", "corre", "come", "fala", "anda"], ["em", "de", "com"]
    sents, tags = [], []
    for _ in range(n):
        w = [rng.choice(dets).capitalize(), rng.choice(nouns), rng.choice(verbs)]
        t = ["DET", "NOUN", "VERB"]
        if rng.random() < 0.5:
            w += [rng.choice(adps), rng.choice(dets), rng.choice(nouns)]
            t += ["ADP", "DET", "NOUN"]
        w.append(".")
        t.append("PUNCT")
        sents.append([str(x) for x in w])
        tags.append(t)
    return sents, tags


def test_fit_transform_shapes_and_finite():
    sents, _ = toy_corpus()
    f = WordFeaturizer(dim=8, suffix_dim=4, min_suffix_count=2).fit(sents)
    assert f.n_features == 8 + 4 + len(SHAPE_FEATURES) == len(f.feature_names)
    X = f.transform(sents[:5])
    assert [x.shape for x in X] == [(len(s), f.n_features) for s in sents[:5]]
    assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in X)
    # word vectors have norm sqrt(dim) for vocabulary words
    assert np.allclose(np.linalg.norm(f.vectors_, axis=1), np.sqrt(8), atol=1e-4)


def test_unknown_words_back_off_to_suffix_then_mean():
    sents, _ = toy_corpus()
    f = WordFeaturizer(dim=8, suffix_dim=4, min_suffix_count=2).fit(sents)
    unk_idx = f.n_features - 1
    # "gata" unknown, shares the suffix "a"/"ta" with known words: suffix vector
    x = f.word_features("gata")
    assert x[unk_idx] == 1 and not f.is_known("gata")
    v = "gata"
    suf = next(v[-k:] for k in (3, 2, 1) if v[-k:] in f.suffixes_)
    assert np.allclose(x[:8], f.suffix_vectors_[f.suffixes_.index(suf)])
    # no known suffix at all: mean vector
    y = f.word_features("ζζζ")
    assert np.allclose(y[:8], f.mean_vector_) and np.all(y[8:12] == 0) and y[unk_idx] == 1
    # known word, case-insensitive, with shape flags
    z = f.word_features("Gato")
    assert z[unk_idx] == 0 and z[8 + 4 + SHAPE_FEATURES.index("capitalised")] == 1
    assert np.isfinite(f.transform([["XYZ-123", "!!", "é"]])[0]).all()


def test_one_word_and_long_sentences():
    sents, _ = toy_corpus()
    f = WordFeaturizer(dim=8, suffix_dim=4).fit(sents)
    long = [str(w) for w in np.random.default_rng(1).choice(["gato", "qwerty", "Zz", ",", "1999"], 300)]
    X = f.transform([["sozinho"], long])
    assert X[0].shape == (1, f.n_features) and X[1].shape == (300, f.n_features)
    assert all(np.isfinite(x).all() for x in X)


def test_state_roundtrip_is_json_and_arrays():
    sents, _ = toy_corpus()
    f = WordFeaturizer(dim=8, suffix_dim=4, random_state=3).fit(sents)
    arrays, meta = f.to_state()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in arrays.values())
    assert all(isinstance(v, str) for v in meta.values())
    json.loads(meta["config"]), json.loads(meta["vocab"])
    g = WordFeaturizer.from_state({k: v.copy() for k, v in arrays.items()}, dict(meta))
    test = [["O", "gato", "desconhecido", "."]]
    assert np.array_equal(f.transform(test)[0], g.transform(test)[0])
    with pytest.raises(InputError):
        WordFeaturizer.from_state({"vectors": arrays["vectors"]}, meta)


def test_bad_input():
    with pytest.raises(InputError):
        WordFeaturizer().transform([["a"]])  # not fitted
    with pytest.raises(InputError):
        WordFeaturizer().fit("not a list of sentences")
    with pytest.raises(InputError):
        WordFeaturizer().fit([["ok"], []])
    with pytest.raises(InputError):
        WordFeaturizer(dim=4, suffix_dim=8)


def test_tiny_data_does_not_crash():
    f = WordFeaturizer(dim=16, suffix_dim=8).fit([["Olá"]])
    x = f.transform([["Olá", "mundo"]])[0]
    assert x.shape == (2, f.n_features) and np.isfinite(x).all()


def test_pad_sequences():
    seqs = [np.ones((3, 2)), np.full((1, 2), 2.0), np.zeros((5, 2))]
    X, L = pad_sequences(seqs)
    assert X.shape == (3, 5, 2) and list(L) == [3, 1, 5] and X.dtype == np.float32
    assert X[1, 0, 0] == 2 and np.all(X[1, 1:] == 0)
    Y, L2 = pad_sequences([np.array([1, 2]), np.array([3])], dtype=np.int64, value=-100)
    assert Y.tolist() == [[1, 2], [3, -100]] and list(L2) == [2, 1]
    with pytest.raises(InputError):
        pad_sequences([])
    with pytest.raises(InputError):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])
