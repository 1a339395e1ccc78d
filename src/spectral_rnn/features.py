"""Word features for taggers: count-based word vectors plus suffix and shape features.

:class:`WordFeaturizer` is fitted on training sentences only and turns each sentence
into a ``(T_i, d_x)`` float array; :func:`pad_sequences` turns a list of those into the
library's batch-first ``(n, T, d_x)`` array plus ``lengths``.

The feature vector of a word ``w`` (lower-cased as ``v``) is the concatenation of

1. **word vector** (``dim``, default 32): PPMI + truncated SVD. A co-occurrence
   matrix counts, for each vocabulary word, its neighbours at offsets -2, -1, +1, +2
   (each offset its own context column, so left and right context differ;
   sentence boundaries are contexts too). Context probabilities are smoothed by the
   power 0.75 (Levy, Goldberg & Dagan 2015); positive PMI, then a randomised
   truncated SVD (scikit-learn ``TruncatedSVD``); the vectors are ``U S^{1/2}``,
   normalised to unit length and scaled by ``sqrt(dim)`` (so each coordinate has
   magnitude about 1). ``method="word2vec"`` uses gensim's skip-gram instead (an
   optional dependency, kept for comparison).
2. **suffix vector** (``suffix_dim``, default 16): for each suffix of length 1 to 3
   seen on at least ``min_suffix_count`` training tokens of vocabulary words, the
   token-weighted mean of those words' vectors; the feature is the first
   ``suffix_dim`` coordinates of the vector of the *longest* known suffix of ``v``
   (zeros if none).
3. **shape** (6 flags, 0/1): capitalised, all capitals, has a digit, punctuation
   only, has a hyphen, unknown word.

Vocabulary and the rule for unknown words: the vocabulary is the lower-cased training
words seen at least ``min_count`` times (default 2). Any other word, at training time
(hapaxes) as at test time, is *unknown*: its word vector is the full suffix vector of
its longest known suffix (the mean vector of training words that end the same way),
or, when no suffix is known, the mean vector of all vocabulary words; its "unknown"
flag is 1. Treating training hapaxes as unknown lets a tagger learn what an unknown
word looks like from the training data itself.

A fitted featurizer serialises without pickle: :meth:`WordFeaturizer.to_state` gives
a dict of numpy arrays and a dict of JSON strings, :meth:`WordFeaturizer.from_state`
rebuilds it (the tagger file stores both in safetensors).
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ._checks import InputError

__all__ = ["WordFeaturizer", "pad_sequences", "SHAPE_FEATURES"]

SHAPE_FEATURES = ("capitalised", "all_caps", "has_digit", "punctuation", "has_hyphen", "unknown")
_BOS, _EOS = "<s>", "</s>"
_OFFSETS = (-2, -1, 1, 2)
_MAX_SUFFIX = 3


def _is_punct(word: str) -> bool:
    return bool(word) and all(unicodedata.category(ch)[0] in "PS" for ch in word)


def _shape(word: str, known: bool) -> list[float]:
    letters = [ch for ch in word if ch.isalpha()]
    return [
        float(bool(word) and word[0].isupper()),
        float(len(letters) > 1 and all(ch.isupper() for ch in letters)),
        float(any(ch.isdigit() for ch in word)),
        float(_is_punct(word)),
        float("-" in word),
        float(not known),
    ]


def _check_sentences(sentences, what: str = "sentences") -> list[list[str]]:
    if isinstance(sentences, (str, bytes)):
        raise InputError(f"{what} must be a list of sentences (lists of words), got a string")
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, (str, bytes)):
            raise InputError(f"{what}[{i}] must be a list of words, got a string")
        words = list(s)
        if not words:
            raise InputError(f"{what}[{i}] is an empty sentence")
        for w in words:
            if not isinstance(w, str):
                raise InputError(f"{what}[{i}] holds a {type(w).__name__}, expected word strings")
        out.append(words)
    return out


class WordFeaturizer:
    """Word vectors (PPMI + SVD) + suffix vectors + shape flags; see the module docstring.

    Parameters: ``dim`` word-vector size; ``suffix_dim`` (<= ``dim``) suffix-vector
    size; ``min_count`` smallest count of a vocabulary word; ``min_suffix_count``
    smallest token count of a kept suffix; ``window`` (2) co-occurrence half-width;
    ``method`` "ppmi" (default) or "word2vec" (needs gensim); ``random_state`` seeds
    the SVD (or Word2Vec). After :meth:`fit`: ``vocab_`` (list), ``vectors_``
    ``(len(vocab_), dim)``, ``suffixes_`` (list), ``suffix_vectors_``, ``mean_vector_``.
    ``n_features`` is ``dim + suffix_dim + 6``.
    """

    def __init__(self, dim: int = 32, suffix_dim: int = 16, min_count: int = 2, min_suffix_count: int = 5,
                 window: int = 2, method: str = "ppmi", random_state: int = 0):
        if int(dim) < 1 or int(suffix_dim) < 0 or int(suffix_dim) > int(dim):
            raise InputError(f"need dim >= 1 and 0 <= suffix_dim <= dim, got dim={dim}, suffix_dim={suffix_dim}")
        if int(min_count) < 1 or int(min_suffix_count) < 1 or int(window) < 1:
            raise InputError("min_count, min_suffix_count and window must be positive integers")
        if method not in ("ppmi", "word2vec"):
            raise InputError(f"method must be 'ppmi' or 'word2vec', got {method!r}")
        self.dim = int(dim)
        self.suffix_dim = int(suffix_dim)
        self.min_count = int(min_count)
        self.min_suffix_count = int(min_suffix_count)
        self.window = int(window)
        self.method = method
        self.random_state = int(random_state)

    # ------------------------------------------------------------------ fit
    @property
    def n_features(self) -> int:
        return self.dim + self.suffix_dim + len(SHAPE_FEATURES)

    @property
    def feature_names(self) -> list[str]:
        return ([f"word{i}" for i in range(self.dim)] + [f"suffix{i}" for i in range(self.suffix_dim)]
                + list(SHAPE_FEATURES))

    def fit(self, sentences: Sequence[Sequence[str]]) -> "WordFeaturizer":
        """Learn vocabulary, word vectors and suffix vectors from training sentences (lists of words)."""
        sents = _check_sentences(sentences)
        if not sents:
            raise InputError("no training sentences")
        lower = [[w.lower() for w in s] for s in sents]
        counts = Counter(w for s in lower for w in s)
        vocab = sorted(w for w, c in counts.items() if c >= self.min_count)
        if not vocab:  # tiny data: keep every word rather than none
            vocab = sorted(counts)
        index = {w: i for i, w in enumerate(vocab)}
        if self.method == "ppmi":
            vectors = self._ppmi_svd(lower, index)
        else:
            vectors = self._word2vec(lower, vocab)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0) * np.sqrt(self.dim)
        freq = np.array([counts[w] for w in vocab], dtype=np.float64)
        # Suffix vectors: token-weighted mean of the vectors of vocabulary words ending in the suffix.
        suf_sum: dict[str, np.ndarray] = {}
        suf_n: Counter = Counter()
        for i, w in enumerate(vocab):
            for k in range(1, min(_MAX_SUFFIX, len(w)) + 1):
                s = w[-k:]
                suf_n[s] += freq[i]
                if s in suf_sum:
                    suf_sum[s] += freq[i] * vectors[i]
                else:
                    suf_sum[s] = freq[i] * vectors[i].astype(np.float64)
        suffixes = sorted(s for s, n in suf_n.items() if n >= self.min_suffix_count)
        self.vocab_ = vocab
        self.vectors_ = vectors.astype(np.float32)
        self.suffixes_ = suffixes
        self.suffix_vectors_ = (np.stack([suf_sum[s] / suf_n[s] for s in suffixes]).astype(np.float32)
                                if suffixes else np.zeros((0, self.dim), np.float32))
        self.mean_vector_ = (freq @ vectors / freq.sum()).astype(np.float32)
        self._build_index()
        return self

    def _ppmi_svd(self, lower: list[list[str]], index: dict[str, int]) -> np.ndarray:
        import scipy.sparse as sp
        from sklearn.decomposition import TruncatedSVD

        V = len(index)
        ctx_words = {_BOS: V, _EOS: V + 1}
        n_ctx = V + 2
        rows, cols = [], []
        offsets = [o for o in range(-self.window, self.window + 1) if o != 0]
        for s in lower:
            ids = [index.get(w, -1) for w in s]
            T = len(s)
            for t, wi in enumerate(ids):
                if wi < 0:
                    continue
                for j, o in enumerate(offsets):
                    u = t + o
                    if u < 0:
                        c = ctx_words[_BOS]
                    elif u >= T:
                        c = ctx_words[_EOS]
                    else:
                        c = ids[u]
                        if c < 0:
                            continue
                    rows.append(wi)
                    cols.append(j * n_ctx + c)
        C = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(V, len(offsets) * n_ctx)).tocsr()
        C.sum_duplicates()
        total = C.sum()
        pw = np.asarray(C.sum(axis=1)).ravel() / total
        cc = np.asarray(C.sum(axis=0)).ravel() ** 0.75
        pc = cc / cc.sum()
        C = C.tocoo()
        pmi = np.log(C.data / total) - np.log(pw[C.row]) - np.log(pc[C.col])
        keep = pmi > 0
        P = sp.csr_matrix((pmi[keep], (C.row[keep], C.col[keep])), shape=C.shape)
        k = min(self.dim, max(1, min(P.shape) - 1))
        if P.nnz == 0 or min(P.shape) < 2:
            rng = np.random.default_rng(self.random_state)
            return rng.standard_normal((V, self.dim))
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=self.random_state)
        U = svd.fit_transform(P)  # = U S
        S = svd.singular_values_
        vec = U / np.sqrt(np.where(S > 0, S, 1.0))  # U S^{1/2}
        if k < self.dim:
            vec = np.hstack([vec, np.zeros((V, self.dim - k))])
        return vec

    def _word2vec(self, lower: list[list[str]], vocab: list[str]) -> np.ndarray:
        try:
            from gensim.models import Word2Vec
        except ImportError:
            raise InputError("method='word2vec' needs gensim: pip install gensim") from None
        m = Word2Vec(sentences=lower, vector_size=self.dim, window=self.window, min_count=self.min_count, sg=1,
                     negative=5, epochs=10, workers=1, seed=self.random_state)
        return np.stack([m.wv[w] if w in m.wv else np.zeros(self.dim) for w in vocab]).astype(np.float64)

    def _build_index(self) -> None:
        self._index = {w: i for i, w in enumerate(self.vocab_)}
        self._suffix_index = {s: i for i, s in enumerate(self.suffixes_)}
        self._cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ transform
    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            raise InputError("this WordFeaturizer is not fitted yet: call fit(sentences) first")

    def word_features(self, word: str) -> np.ndarray:
        """The ``(n_features,)`` float32 feature vector of one word form."""
        self._check_fitted()
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        v = word.lower()
        wi = self._index.get(v)
        suf = None
        for k in range(min(_MAX_SUFFIX, len(v)), 0, -1):
            suf = self._suffix_index.get(v[-k:])
            if suf is not None:
                break
        suf_vec = self.suffix_vectors_[suf] if suf is not None else None
        if wi is not None:
            wvec = self.vectors_[wi]
        elif suf_vec is not None:
            wvec = suf_vec
        else:
            wvec = self.mean_vector_
        svec = suf_vec[: self.suffix_dim] if suf_vec is not None else np.zeros(self.suffix_dim, np.float32)
        out = np.concatenate([wvec, svec, np.asarray(_shape(word, wi is not None), np.float32)]).astype(np.float32)
        if len(self._cache) < 200_000:
            self._cache[word] = out
        return out

    def transform(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One ``(T_i, n_features)`` float32 array per sentence."""
        self._check_fitted()
        sents = _check_sentences(sentences)
        return [np.stack([self.word_features(w) for w in s]) for s in sents]

    def fit_transform(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return self.fit(sentences).transform(sentences)

    def is_known(self, word: str) -> bool:
        self._check_fitted()
        return word.lower() in self._index

    # -------------------------------------------------------- serialisation
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """``(arrays, meta)``: float32 arrays and JSON strings, enough for :meth:`from_state` (no pickle)."""
        self._check_fitted()
        arrays = {
            "vectors": np.ascontiguousarray(self.vectors_, dtype=np.float32),
            "suffix_vectors": np.ascontiguousarray(self.suffix_vectors_, dtype=np.float32),
            "mean_vector": np.ascontiguousarray(self.mean_vector_, dtype=np.float32),
        }
        config = {"dim": self.dim, "suffix_dim": self.suffix_dim, "min_count": self.min_count,
                  "min_suffix_count": self.min_suffix_count, "window": self.window, "method": self.method,
                  "random_state": self.random_state}
        meta = {
            "config": json.dumps(config, sort_keys=True),
            "vocab": json.dumps(self.vocab_, ensure_ascii=False),
            "suffixes": json.dumps(self.suffixes_, ensure_ascii=False),
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> "WordFeaturizer":
        """Rebuild a fitted featurizer from :meth:`to_state`'s output (checks shapes; InputError if wrong)."""
        try:
            config = json.loads(meta["config"])
            vocab = json.loads(meta["vocab"])
            suffixes = json.loads(meta["suffixes"])
            self = cls(**config)
            vectors = np.asarray(arrays["vectors"], dtype=np.float32)
            suffix_vectors = np.asarray(arrays["suffix_vectors"], dtype=np.float32)
            mean_vector = np.asarray(arrays["mean_vector"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"featurizer state is incomplete or malformed: {exc}") from None
        if (vectors.shape != (len(vocab), self.dim) or suffix_vectors.shape != (len(suffixes), self.dim)
                or mean_vector.shape != (self.dim,)):
            raise InputError("featurizer state has arrays whose shapes disagree with its vocabulary")
        self.vocab_, self.vectors_ = list(vocab), vectors
        self.suffixes_, self.suffix_vectors_ = list(suffixes), suffix_vectors
        self.mean_vector_ = mean_vector
        self._build_index()
        return self


def pad_sequences(sequences: Sequence[np.ndarray], dtype=np.float32, value: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(T_i, d)`` arrays into ``X`` of shape ``(n, max T_i, d)`` and ``lengths`` ``(n,)`` int64.

    Also takes 1-D integer arrays (tag indices): then ``X`` is ``(n, max T_i)``.
    Padding holds ``value``; it is never read by the library's models.
    """
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise InputError("no sequences to pad")
    nd = seqs[0].ndim
    if nd not in (1, 2) or any(s.ndim != nd for s in seqs):
        raise InputError("sequences must all be 2-D (T_i, d) arrays, or all 1-D")
    if any(len(s) == 0 for s in seqs):
        raise InputError("a sequence is empty")
    if nd == 2 and len({s.shape[1] for s in seqs}) != 1:
        raise InputError("sequences have different feature dimensions")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    shape = (len(seqs), int(lengths.max())) + seqs[0].shape[1:]
    X = np.full(shape, value, dtype=dtype)
    for i, s in enumerate(seqs):
        X[i, : len(s)] = s
    return X, lengths
