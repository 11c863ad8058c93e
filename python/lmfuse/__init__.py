"""lmfuse: BERT-family sentence encoders fused with classical machine learning.

``Encoder`` returns embeddings as numpy arrays; ``TextClassifier`` is a scikit-learn
estimator over lmfuse's feature blocks and heads; ``EntityTagger`` finds named entities;
``RelationClassifier`` classifies the relation between two marked entities; ``SearchIndex``
builds, searches and scores search indexes; ``load``,
``load_tagger`` and ``load_relations`` read the bundles the CLI writes.
The work runs in lmfuse's Rust library (the same pipelines as the ``lmfuse`` CLI and
``lmfuse serve``), with the GIL released. Reference: docs/python.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import _native

__version__ = _native.__version__
__all__ = [
    "Encoder",
    "TextClassifier",
    "EntityTagger",
    "RelationClassifier",
    "SearchIndex",
    "load",
    "convert_bundle",
    "load_tagger",
    "load_relations",
    "stratified_folds",
    "compare",
    "finetune",
    "select",
    "learning_curves",
    "Results",
    "DEFAULT_MODEL",
]

#: The default model's name: ``Encoder(model=DEFAULT_MODEL)``.
DEFAULT_MODEL = _native.DEFAULT_MODEL_NAME


def _has_default_model(models_dir: Path) -> bool:
    return (models_dir / DEFAULT_MODEL / "config.json").is_file()


def _locate_default_model() -> None:
    """Points ``LMFUSE_MODELS_DIR`` at the models/ folder of the lmfuse checkout when the
    library's own places (``$LMFUSE_MODELS_DIR``, ``./models``) lack the default model: the
    checkout whose ``.venv`` runs Python, else the one the package was built from."""
    if os.environ.get(_native.MODELS_DIR_ENV) or _has_default_model(Path("models")):
        return
    for root in (Path(sys.prefix).parent, Path(_native.SOURCE_ROOT)):
        if _has_default_model(root / "models"):
            os.environ[_native.MODELS_DIR_ENV] = str((root / "models").resolve())
            return


_locate_default_model()


def _model_arg(model):
    """The library's model argument: ``None`` for the default model."""
    if model is None:
        model = os.environ.get("LMFUSE_MODEL") or None
    if model is None or model == DEFAULT_MODEL:
        return None
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    if not isinstance(model, str):
        raise ValueError(f"model must be a folder, a Hugging Face id or None, not {model!r}")
    return model


def _cache_args(cache):
    """(use the cache, its folder or None) from ``cache``: True, False or a folder."""
    if cache is True or cache is False:
        return cache, None
    if isinstance(cache, (str, os.PathLike)):
        return True, os.fspath(cache)
    raise ValueError(f"cache must be True, False or a folder, not {cache!r}")


def _check_precision(precision):
    """Raises ValueError unless ``precision`` is a string (the library checks its value) or None."""
    if precision is not None and not isinstance(precision, str):
        raise ValueError(f"precision must be 'f32', 'bf16', 'int8' or None, not {precision!r}")


def _encoder_settings(
    model,
    pooling,
    max_length,
    normalize,
    batch_tokens,
    prefix=None,
    long_text="truncate",
    precision=None,
):
    """The encoder settings as the library takes them (named as the CLI's flags)."""
    if prefix is not None and not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string or None, not {prefix!r}")
    _check_precision(precision)
    return {
        "prefix": prefix,
        "long_text": long_text,
        "precision": precision,
        "model": _model_arg(model),
        "pooling": pooling,
        "max_length": max_length,
        "normalize": normalize,
        "batch_tokens": batch_tokens,
    }


def _texts(texts, name="X"):
    """``texts`` as a list of str: a list, tuple, numpy array or pandas Series of strings."""
    if isinstance(texts, (str, bytes)):
        raise ValueError(f"{name} must be a list of strings, not a single string")
    if hasattr(texts, "ndim") and texts.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, not of shape {texts.shape}")
    try:
        values = list(texts)
    except TypeError:
        raise ValueError(f"{name} must be a list of strings, not {type(texts).__name__}") from None
    for i, t in enumerate(values):
        if not isinstance(t, str):
            what = "None" if t is None else f"{t!r} ({type(t).__name__})"
            raise ValueError(f"{name}[{i}] is {what}: every text must be a string")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{name}[{i}] holds an unpaired surrogate ({t[e.start]!r}) at character "
                f"{e.start}: every text must be valid Unicode"
            ) from None
    return [str(t) for t in values]


def _label_string(value, i):
    """A label as lmfuse writes it (numbers in their JSON form)."""
    if value is None:
        raise ValueError(f"y[{i}] is None: every example needs a label")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"y[{i}] is {value}: every example needs a label")
        return repr(float(value))
    return str(value)


def _labels(y, n):
    """(label strings, string → original value) for ``n`` texts."""
    if isinstance(y, str) or not hasattr(y, "__len__"):
        raise ValueError("y must be a list of labels, one per text")
    values = list(y)
    if len(values) != n:
        raise ValueError(f"{len(values)} labels for {n} texts: y needs one label per text")
    strings, back = [], {}
    for i, v in enumerate(values):
        s = _label_string(v, i)
        if s in back and back[s] != v:
            raise ValueError(f"labels {back[s]!r} and {v!r} are both written {s!r}")
        back.setdefault(s, v)
        strings.append(s)
    return strings, back


def _cell(value, column, row):
    """A side-column value for the library: None (missing), a float or a str."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"feature column {column!r} holds {value} at row {row}: fill or drop it "
                "(None marks a missing value)"
            )
        return value
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            raise ValueError(
                f"feature column {column!r} holds {value} at row {row}: fill or drop it "
                "(None marks a missing value)"
            )
    except ImportError:
        pass
    return str(value)


def _is_frame(X):
    return hasattr(X, "columns") and hasattr(X, "iloc")


def _split_frame(X, text_col, feature_cols):
    """(texts, side columns) of ``X``: a DataFrame, or texts when no side column is read."""
    feature_cols = list(feature_cols)
    if not _is_frame(X):
        if feature_cols:
            raise ValueError(
                f"the feature columns {feature_cols} need X as a pandas DataFrame with "
                f"{text_col!r} and those columns"
            )
        return _texts(X), []
    names = [str(c) for c in X.columns]
    for col in [text_col, *feature_cols]:
        if col not in names:
            raise ValueError(f"X has no column {col!r} (columns: {', '.join(names)})")
    texts = _texts(X[text_col], name=f"X[{text_col!r}]")
    columns = [
        (col, [_cell(v, col, i) for i, v in enumerate(X[col].tolist())]) for col in feature_cols
    ]
    return texts, columns


class Encoder:
    """A sentence encoder: ``Encoder(model).encode(texts)`` → float32 array, n × dim.

    ``model``: ``"all-MiniLM-L6-v2"`` (the default model), an installed model's name such as
    ``"multilingual-e5-small"``, a local model folder or a Hugging Face id; ``None``:
    ``$LMFUSE_MODEL``, else the default model. ``cache``: True (the CLI's cache:
    ``$LMFUSE_CACHE_DIR``, else ``~/.cache/lmfuse``), False (none) or a folder. ``prefix``: text
    put before every input (``"query: "`` for e5 models); None: the model's default prompt.
    ``precision``: ``"f32"``, ``"bf16"`` (the linear layers in bfloat16, f32 sums) or ``"int8"``
    (the linear layers in 8-bit integers); None: as the model's weights are stored (int8 for a folder made by ``lmfuse models convert``).
    """

    def __init__(self, model=DEFAULT_MODEL, cache=True, prefix=None, precision=None):
        use_cache, cache_dir = _cache_args(cache)
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string or None, not {prefix!r}")
        _check_precision(precision)
        self._native = _native.NativeEncoder(
            _model_arg(model), use_cache, cache_dir, prefix, precision
        )

    @property
    def dim(self):
        """Vector dimension."""
        return self._native.dim

    @property
    def model(self):
        """The model as the library names it (the default's name, a folder or a hub id)."""
        return self._native.reference

    @property
    def max_seq_length(self):
        """Maximum tokens per text (longer texts are truncated)."""
        return self._native.max_seq_length

    def encode(self, texts, batch_size=None, normalize=True):
        """Embeddings of ``texts`` (float32, one row per text, in order; equal to
        ``lmfuse embed``'s). ``batch_size``: room for that many full-length texts in a
        forward batch (texts are packed by tokens); None: the library's budget (2048
        tokens). ``normalize``: L2-normalise each vector. The GIL is released meanwhile."""
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
        ):
            raise ValueError(f"batch_size must be a positive integer or None, not {batch_size!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        size = None if batch_size is None else int(batch_size)
        return self._native.encode(_texts(texts, name="texts"), size, bool(normalize))

    def __repr__(self):
        return f"Encoder(model={self.model!r})"


_HEADS = ("logreg", "svm", "nb", "knn", "rf", "gbdt", "mlp", "shared")
_LINEAR_HEADS = ("logreg", "svm")


def _feature_string(features):
    if isinstance(features, str):
        return features
    if isinstance(features, (list, tuple)) and all(isinstance(f, str) for f in features):
        return ",".join(features)
    raise ValueError(f"features must be a string such as 'tfidf,emb' or a list, not {features!r}")


class TextClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn text classifier: lmfuse's feature blocks and classical heads.

    ``fit`` trains as ``lmfuse train`` does (see docs/python.md for every parameter): with
    ``C=None`` (and for heads with a grid: nb, knn, mlp, shared) the setting is chosen on a
    stratified 10% dev slice of the rows and the head fit on the rest; with a number ``C``
    (logreg, svm) the head is fit on every row.
    """

    def __init__(
        self,
        features="emb",
        head="logreg",
        C=None,
        model=None,
        text_col="text",
        feature_cols=(),
        class_weight="uniform",
        emb_weight=1.0,
        seed=13,
        c_grid=None,
        pooling=None,
        max_length=None,
        normalize=None,
        batch_tokens=None,
        prefix=None,
        long_text="truncate",
        precision=None,
        stop_words="none",
        oos=None,
        oos_label="oos",
        oos_k=10,
        oos_objective="accuracy",
        cache=True,
        augment=None,
        thesaurus=None,
        augment_cmd=None,
        augment_filter=None,
        self_train_rounds=3,
        pseudo_threshold=0.0,
        pseudo_growth=1.0,
    ):
        self.features = features
        self.head = head
        self.C = C
        self.model = model
        self.text_col = text_col
        self.feature_cols = feature_cols
        self.class_weight = class_weight
        self.emb_weight = emb_weight
        self.seed = seed
        self.c_grid = c_grid
        self.pooling = pooling
        self.max_length = max_length
        self.normalize = normalize
        self.batch_tokens = batch_tokens
        self.prefix = prefix
        self.long_text = long_text
        self.precision = precision
        self.stop_words = stop_words
        self.oos = oos
        self.oos_label = oos_label
        self.oos_k = oos_k
        self.oos_objective = oos_objective
        self.cache = cache
        self.augment = augment
        self.thesaurus = thesaurus
        self.augment_cmd = augment_cmd
        self.augment_filter = augment_filter
        self.self_train_rounds = self_train_rounds
        self.pseudo_threshold = pseudo_threshold
        self.pseudo_growth = pseudo_growth

    def _settings(self):
        """The parameters, checked, as the library takes them."""
        features = _feature_string(self.features)
        blocks = [b.strip() for b in features.split(",")]
        if self.head not in _HEADS:
            raise ValueError(f"head={self.head!r}: expected one of {', '.join(_HEADS)}")
        if isinstance(self.feature_cols, str):
            raise ValueError("feature_cols must be a list of column names, not a string")
        feature_cols = [str(c) for c in self.feature_cols]
        if bool(feature_cols) != ("tab" in blocks):
            raise ValueError(
                "feature_cols and the 'tab' block go together: name the side columns in "
                "feature_cols and add 'tab' to features (e.g. features='emb,tab')"
            )
        if self.C is not None:
            if self.head not in _LINEAR_HEADS:
                raise ValueError(f"C applies to the logreg and svm heads, not to {self.head!r}")
            if isinstance(self.C, bool) or not isinstance(self.C, numbers.Real):
                raise ValueError(f"C must be a positive number or None, not {self.C!r}")
            if not (math.isfinite(self.C) and self.C > 0):
                raise ValueError(f"C must be a positive number, not {self.C}")
        if not (isinstance(self.emb_weight, numbers.Real) and self.emb_weight > 0):
            raise ValueError(f"emb_weight must be a positive number, not {self.emb_weight!r}")
        if self.class_weight not in ("uniform", "balanced"):
            raise ValueError(
                f"class_weight={self.class_weight!r}: expected 'uniform' or 'balanced'"
            )
        use_cache, cache_dir = _cache_args(self.cache)
        return {
            "features": features,
            "head": self.head,
            "c": None if self.C is None else float(self.C),
            "c_grid": None if self.c_grid is None else [float(c) for c in self.c_grid],
            "class_weight": self.class_weight,
            "emb_weight": float(self.emb_weight),
            "seed": int(self.seed),
            "oos": self.oos,
            "oos_label": str(self.oos_label),
            "oos_k": int(self.oos_k),
            "oos_objective": str(self.oos_objective),
            "use_cache": use_cache,
            "cache_dir": cache_dir,
            "stop_words": str(self.stop_words),
            "augment": None if self.augment is None else str(self.augment),
            "thesaurus": _path(self.thesaurus, "thesaurus"),
            "augment_cmd": None if self.augment_cmd is None else str(self.augment_cmd),
            "augment_filter": None if self.augment_filter is None else float(self.augment_filter),
            "self_train_rounds": int(self.self_train_rounds),
            "pseudo_threshold": float(self.pseudo_threshold),
            "pseudo_growth": float(self.pseudo_growth),
        }, feature_cols

    def fit(self, X, y, unlabeled=None):
        """Trains on X (strings, or a DataFrame with ``text_col`` and ``feature_cols``) and
        labels y; returns self. With ``unlabeled`` (strings), self-trains on them as
        ``lmfuse train --unlabeled`` does (``self_train_rounds``, ``pseudo_threshold``,
        ``pseudo_growth``; ``report_["self_training"]`` lists the rounds). The fit replaces any
        earlier one only when it succeeds."""
        settings, feature_cols = self._settings()
        if unlabeled is not None:
            if isinstance(unlabeled, str):
                raise ValueError("unlabeled must be a list of texts, not a string")
            unlabeled = [str(t) for t in unlabeled]
        texts, columns = _split_frame(X, self.text_col, feature_cols)
        strings, back = _labels(y, len(texts))
        encoder = _encoder_settings(
            self.model,
            self.pooling,
            self.max_length,
            self.normalize,
            self.batch_tokens,
            self.prefix,
            self.long_text,
            self.precision,
        )
        fitted = _native.fit(texts, strings, columns, settings, encoder, unlabeled)
        self._set_fitted(fitted, back)
        return self

    def _set_fitted(self, fitted, back=None):
        info = json.loads(fitted.info())
        labels = info["labels"]
        self._fitted = fitted
        self._info = info
        self.classes_ = np.asarray([back[s] for s in labels] if back else labels)
        self.feature_cols_ = list(info["feature_cols"])
        self.report_ = info["report"]

    def _rows(self, X):
        check_is_fitted(self, "_fitted")
        return _split_frame(X, self.text_col, self.feature_cols_)

    def predict_proba(self, X):
        """Class probabilities, n × classes (float32), columns in the order of ``classes_``."""
        texts, columns = self._rows(X)
        return self._fitted.predict_proba(texts, columns)

    def predict(self, X):
        """The most probable class of each text."""
        check_is_fitted(self, "_fitted")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _has_decision_function(self):
        if hasattr(self, "_fitted"):
            return self._info["decision_function"]
        return self.head in _LINEAR_HEADS

    @available_if(_has_decision_function)
    def decision_function(self, X):
        """The linear head's scores X·W + b (logreg: logits, svm: margins), n × classes; for
        two classes, as scikit-learn, one score per text: the second class's minus the
        first's. Only the logreg and svm heads have one."""
        texts, columns = self._rows(X)
        scores = self._fitted.decision_function(texts, columns)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def save(self, path):
        """Writes the bundle to folder ``path`` atomically (as ``lmfuse train --out``): it
        serves from ``lmfuse serve`` and works with ``lmfuse predict`` and ``eval``."""
        check_is_fitted(self, "_fitted")
        self._fitted.save(os.fspath(path))
        return self

    def __getstate__(self):
        if hasattr(self, "_fitted"):
            raise TypeError(
                "a fitted TextClassifier does not pickle (lmfuse never uses pickle): "
                "save(path) writes a bundle and lmfuse.load(path) reads it"
            )
        return super().__getstate__()


def _sequences(X, y=None, name="X"):
    """Token lists (and tag lists of the same lengths) as lists of strings."""
    if isinstance(X, str) or not hasattr(X, "__iter__"):
        raise ValueError(f"{name} must be a list of sentences, each a list of token strings")
    tokens = []
    for i, sentence in enumerate(X):
        if isinstance(sentence, str) or not hasattr(sentence, "__iter__"):
            raise ValueError(f"{name}[{i}] must be a list of token strings, not {type(sentence).__name__}")
        row = list(sentence)
        bad = next((t for t in row if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{i}] holds {bad!r}: tokens must be strings")
        tokens.append(row)
    if y is None:
        return tokens
    tags = [list(map(str, t)) for t in y]
    return tokens, tags


class _BundleSaving:
    """``save`` and the pickling guard of estimators whose fitted model is a native bundle
    (``_fitted``), read back by ``lmfuse.<_loader>``."""

    _loader = "load"

    def save(self, path):
        """Writes the bundle to folder ``path`` atomically (as the CLI's ``--out``)."""
        check_is_fitted(self, "_fitted")
        self._fitted.save(os.fspath(path))
        return self

    def __getstate__(self):
        if hasattr(self, "_fitted"):
            raise TypeError(
                f"a fitted {type(self).__name__} does not pickle: save(path) writes a bundle "
                f"and lmfuse.{self._loader}(path) reads it"
            )
        return super().__getstate__()


class EntityTagger(_BundleSaving, BaseEstimator):
    """A named-entity tagger: lmfuse's linear-chain CRF over hand-made features (``"hand"``),
    the encoder's word vectors (``"emb"``) or both (``"hand,emb"``), as ``lmfuse ner train``.
    With ``finetune="softmax"`` or ``"crf"`` the encoder is first fine-tuned for tagging
    (``epochs``, ``lr``, ``head_lr``, ``batch_size``, ``seed``; the epoch chosen on
    ``X_dev``/``y_dev``, which it needs): with ``features="emb"`` the tuned tagger is the model,
    with ``"hand,emb"`` the CRF reads the hand-made features and the tagger's cross-fitted
    per-tag scores.

    ``fit(X, y)`` takes sentences as token lists and their tags (IO, BIO or BIOES, converted to
    BIO); with several ``c2`` values, ``X_dev``/``y_dev`` choose among them. ``predict`` gives
    BIO tags; ``find`` the entities of raw texts as character spans; ``score`` the strict
    entity micro F1 (seqeval's). See docs/ner.md.
    """

    def __init__(
        self,
        features="hand",
        model=None,
        c2=0.1,
        max_iter=100,
        min_freq=1,
        window=2,
        affixes=3,
        bigrams=True,
        tag_scheme=None,
        repair_bio=False,
        max_length=None,
        finetune=None,
        epochs=3,
        lr=5e-5,
        head_lr=1e-3,
        batch_size=16,
        seed=13,
    ):
        self.features = features
        self.model = model
        self.c2 = c2
        self.max_iter = max_iter
        self.min_freq = min_freq
        self.window = window
        self.affixes = affixes
        self.bigrams = bigrams
        self.tag_scheme = tag_scheme
        self.repair_bio = repair_bio
        self.max_length = max_length
        self.finetune = finetune
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.batch_size = batch_size
        self.seed = seed

    def _settings(self):
        blocks = [b.strip() for b in _feature_string(self.features).split(",")]
        unknown = [b for b in blocks if b not in ("hand", "emb")]
        if unknown or not blocks:
            raise ValueError(f"features={self.features!r}: use 'hand', 'emb' or 'hand,emb'")
        grid = [self.c2] if isinstance(self.c2, numbers.Real) else list(self.c2)
        if not grid or any(
            isinstance(c, bool) or not isinstance(c, numbers.Real) or not (math.isfinite(c) and c >= 0)
            for c in grid
        ):
            raise ValueError(f"c2 must be a number >= 0 or a list of them, not {self.c2!r}")
        if self.finetune not in (None, "softmax", "crf"):
            raise ValueError(f"finetune={self.finetune!r}: use None, 'softmax' or 'crf'")
        if self.finetune is not None and "emb" not in blocks:
            raise ValueError("finetune needs the encoder: features='emb' or 'hand,emb'")
        return {
            "hand": "hand" in blocks,
            "emb": "emb" in blocks,
            "c2": [float(c) for c in grid],
            "max_iter": int(self.max_iter),
            "min_freq": int(self.min_freq),
            "window": int(self.window),
            "affixes": int(self.affixes),
            "bigrams": bool(self.bigrams),
            "tag_scheme": self.tag_scheme,
            "repair": bool(self.repair_bio),
            "finetune": self.finetune,
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "head_lr": float(self.head_lr),
            "seed": int(self.seed),
        }

    def fit(self, X, y, X_dev=None, y_dev=None):
        """Trains on sentences X (token lists) and tags y; returns self."""
        settings = self._settings()
        train = _sequences(X, y)
        dev = None if X_dev is None else _sequences(X_dev, y_dev, "X_dev")
        encoder = _encoder_settings(self.model, None, self.max_length, None, None, None, "truncate")
        self._set_fitted(_native.ner_fit(train, dev, settings, encoder))
        return self

    def _set_fitted(self, fitted):
        info = json.loads(fitted.info())
        self._fitted = fitted
        self.types_ = list(info["types"])
        self.report_ = info["report"]

    def predict(self, X):
        """BIO tags of each sentence (token lists)."""
        check_is_fitted(self, "_fitted")
        return self._fitted.tag(_sequences(X))

    def find(self, texts):
        """The entities of each raw text: a list of {"start", "end", "label", "text", "score"}
        dicts per text, offsets in characters (Python ``str`` indices)."""
        check_is_fitted(self, "_fitted")
        return json.loads(self._fitted.find(_texts(texts, "texts")))

    def evaluate(self, X, y):
        """Strict entity scores (seqeval's): micro, macro, weighted and per type."""
        check_is_fitted(self, "_fitted")
        tokens, tags = _sequences(X, y)
        return json.loads(self._fitted.evaluate(tokens, tags))

    def score(self, X, y):
        """Strict entity micro F1 on sentences X with tags y."""
        return self.evaluate(X, y)["micro"]["f1"]

    _loader = "load_tagger"


def convert_bundle(path, out, precision):
    """Copies the classifier bundle in folder ``path`` to ``out`` with its encoders recorded in
    ``precision`` (``"f32"``, ``"bf16"`` or ``"int8"``), so that ``load``, ``lmfuse predict``
    and ``lmfuse serve`` run it so by default; nothing is retrained. In int8 a fine-tuned
    encoder inside the bundle is stored converted. As ``lmfuse models convert --bundle``;
    returns its report as a dict (``dir``, ``precision``, ``encoders``, ``stored_converted``)."""
    if not isinstance(precision, str):
        raise ValueError(f"precision must be 'f32', 'bf16' or 'int8', not {precision!r}")
    path = _bundle_dir(path)
    return json.loads(_native.convert_bundle(path, os.fspath(out), precision))


def load_tagger(path):
    """An ``EntityTagger`` from an NER bundle folder (``lmfuse ner train --out``)."""
    path = _bundle_dir(path)
    tagger = EntityTagger()
    tagger._set_fitted(_native.ner_load(path))
    return tagger


def _relation_lines(X, y=None, name="X"):
    """Examples as JSON Lines text: each a string with ``<e1>``/``<e2>`` markers, or a dict
    ``{"text", "e1", "e2"}`` whose spans are ``(start, end)`` pairs or ``{"start", "end"}``
    dicts (character offsets, end exclusive)."""
    if isinstance(X, (str, bytes)):
        raise ValueError(f"{name} must be a list of examples, not a single string")
    X = list(X)
    if y is not None:
        y = list(y)
        if len(y) != len(X):
            raise ValueError(f"{name} has {len(X)} examples but y has {len(y)} labels")
    lines = []
    for i, x in enumerate(X):
        if isinstance(x, str):
            row = {"text": x}
        elif isinstance(x, dict) and {"text", "e1", "e2"} <= set(x):
            row = {"text": x["text"]}
            for key in ("e1", "e2"):
                span = x[key]
                if isinstance(span, dict):
                    row[key] = span
                elif isinstance(span, (tuple, list)) and len(span) == 2:
                    row[key] = {"start": span[0], "end": span[1]}
                else:
                    raise ValueError(f"{name}[{i}]: {key} must be (start, end) or a dict, not {span!r}")
        else:
            raise ValueError(
                f"{name}[{i}]: an example is a string with <e1>/<e2> markers or a dict with "
                f"text, e1 and e2, not {type(x).__name__}"
            )
        if y is not None:
            if not isinstance(y[i], str):
                raise ValueError(f"y[{i}] must be a string label, not {y[i]!r}")
            row["label"] = y[i]
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + "\n"


class RelationClassifier(_BundleSaving, BaseEstimator):
    """A classifier of the relation between two entities of a text, as ``lmfuse relation
    train``: logistic regression on the frozen encoder's states of the first token and the two
    entity markers (``c`` chosen on dev), or with ``finetune=True`` the encoder fine-tuned with
    marker tokens added (``epochs``, ``lr``, ``head_lr``, ``batch_size``, ``seed``; the epoch
    chosen on dev). Dev is ``X_dev``/``y_dev`` or ``dev_fraction`` of the training examples.

    Examples are strings with ``<e1>…</e1>`` and ``<e2>…</e2>`` markers (SemEval-2010 Task 8)
    or dicts ``{"text", "e1": (start, end), "e2": (start, end)}`` in characters. ``score`` is
    the official SemEval macro-F1 (direction counted, ``other`` excluded). See
    docs/relation.md.
    """

    def __init__(
        self,
        model=None,
        c=(0.001, 0.003, 0.01, 0.03, 0.1),
        other="Other",
        dev_fraction=0.1,
        max_length=None,
        finetune=False,
        epochs=3,
        lr=5e-5,
        head_lr=1e-3,
        batch_size=16,
        seed=13,
    ):
        self.model = model
        self.c = c
        self.other = other
        self.dev_fraction = dev_fraction
        self.max_length = max_length
        self.finetune = finetune
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.batch_size = batch_size
        self.seed = seed

    def _settings(self):
        grid = [self.c] if isinstance(self.c, numbers.Real) else list(self.c)
        if not grid or any(
            isinstance(c, bool) or not isinstance(c, numbers.Real) or not (math.isfinite(c) and c > 0)
            for c in grid
        ):
            raise ValueError(f"c must be a number > 0 or a list of them, not {self.c!r}")
        return {
            "c": [float(c) for c in grid],
            "other": str(self.other),
            "dev_fraction": float(self.dev_fraction),
            "finetune": bool(self.finetune),
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "head_lr": float(self.head_lr),
            "seed": int(self.seed),
        }

    def fit(self, X, y, X_dev=None, y_dev=None):
        """Trains on examples X with relation labels y; returns self."""
        settings = self._settings()
        train = _relation_lines(X, y)
        dev = None if X_dev is None else _relation_lines(X_dev, y_dev, "X_dev")
        encoder = _encoder_settings(self.model, None, self.max_length, None, None, None, "truncate")
        self._set_fitted(_native.relation_fit(train, dev, settings, encoder))
        return self

    def _set_fitted(self, fitted):
        info = json.loads(fitted.info())
        self._fitted = fitted
        self.classes_ = list(info["labels"])
        self.report_ = info["report"]

    def predict_proba(self, X):
        """Class probabilities, ``len(X) × len(classes_)``."""
        check_is_fitted(self, "_fitted")
        flat = self._fitted.predict_proba(_relation_lines(X))
        return np.asarray(flat, dtype=np.float32).reshape(-1, len(self.classes_))

    def predict(self, X):
        """The most probable relation of each example."""
        proba = self.predict_proba(X)
        return [self.classes_[i] for i in proba.argmax(axis=1)]

    def evaluate(self, X, y):
        """The official SemEval macro-F1, micro scores, accuracy and per-relation counts."""
        check_is_fitted(self, "_fitted")
        return json.loads(self._fitted.evaluate(_relation_lines(X, y)))

    def score(self, X, y):
        """The official SemEval-2010 Task 8 macro-F1 on examples X with labels y."""
        return self.evaluate(X, y)["official_macro_f1"]

    _loader = "load_relations"


def load_relations(path):
    """A ``RelationClassifier`` from a relation bundle folder (``lmfuse relation train``)."""
    path = _bundle_dir(path)
    clf = RelationClassifier()
    clf._set_fitted(_native.relation_load(path))
    return clf


@contextlib.contextmanager
def _corpus_file(corpus, folder):
    """The path of ``corpus`` as a file (JSONL, CSV, TSV or Parquet with id, title and text):
    itself, or, for an iterable of such dicts, a temporary JSON Lines file in ``folder``,
    removed afterwards."""
    if isinstance(corpus, (str, os.PathLike)):
        yield os.fspath(corpus)
        return
    with tempfile.TemporaryDirectory(prefix=".lmfuse-corpus-", dir=folder) as tmp:
        path = os.path.join(tmp, "corpus.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for i, doc in enumerate(corpus):
                if not isinstance(doc, dict):
                    raise ValueError(f"document {i} must be a dict with id, title and text")
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        yield path


class SearchIndex:
    """A search index folder (``lmfuse index build``): BM25 and dense vectors over documents
    cut into passages, searched by ``bm25``, ``dense``, ``hybrid`` (reciprocal-rank fusion),
    ``weighted`` or ``learned`` (the index's trained ranker), optionally reranked by a
    cross-encoder. ``SearchIndex.build`` makes one; ``SearchIndex(path)`` opens one."""

    MODES = ("bm25", "dense", "hybrid", "weighted", "learned")

    def __init__(self, path, cache_dir=None):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"index folder {self.path} does not exist")
        self._cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._native = _native.index_open(self.path, self._cache_dir)

    @classmethod
    def build(cls, path, corpus, model=None, bm25_only=False, ann="auto", cache_dir=None):
        """Builds (or rebuilds, as a new generation) the index ``path`` over ``corpus`` (a
        file, or an iterable of ``{"id", "title", "text"}`` dicts) with vectors of ``model``
        (default: the default model) unless ``bm25_only``; ``ann``: when to keep an HNSW
        graph, ``"auto"`` (from 100,000 passages), ``"on"`` or ``"off"``."""
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        cache = None if cache_dir is None else os.fspath(cache_dir)
        with _corpus_file(corpus, parent) as file:
            summary = json.loads(_native.index_build(path, file, model, bool(bm25_only), ann, cache))
        index = cls(path, cache_dir)
        index.summary_ = summary
        return index

    def _update(self, add=None, delete=()):
        with contextlib.ExitStack() as stack:
            file = None if add is None else stack.enter_context(_corpus_file(add, self.path))
            summary = json.loads(_native.index_update(self.path, file, list(delete), self._cache_dir))
        self._native = _native.index_open(self.path, self._cache_dir)
        return summary

    def add(self, corpus):
        """Adds documents (a file or dicts); a document whose id is there replaces it."""
        return self._update(add=corpus)

    def delete(self, ids):
        """Deletes the documents with these ids (a list, or one id)."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise ValueError(f"ids must be strings, not {ids!r}")
        return self._update(delete=ids)

    def info(self):
        """The index's manifest: documents, passages, the encoder it records, ..."""
        return json.loads(self._native.info())

    def rerank_with(self, model, depth=100):
        """Reranks every later search's best ``depth`` documents with the cross-encoder
        ``model`` (a folder or Hugging Face id); ``None`` stops reranking."""
        self._native.set_reranker(None if model is None else os.fspath(model), int(depth))
        return self

    def search(self, query, mode="hybrid", k=10, rrf_k=60.0, dense_weight=0.5):
        """The ``k`` best documents of a query as dicts ``{"rank", "id", "score", "title"}``;
        a list of such lists for a list of queries."""
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        hits = json.loads(
            self._native.search(queries, mode, int(k), (float(rrf_k), float(dense_weight)))
        )
        return hits[0] if single else hits

    def evaluate(self, queries, qrels, modes=None, depth=100, rrf_k=60.0, dense_weight=0.5):
        """nDCG@10, MRR@10, Recall@100 and MAP of each mode on judged queries (BEIR
        ``queries.jsonl`` and ``qrels/*.tsv``), as ``lmfuse search eval --json`` reports."""
        if modes is None:
            modes = ["bm25"] if self.info()["spec"].get("dense") is None else ["bm25", "dense", "hybrid"]
        report = self._native.evaluate(
            (os.fspath(queries), os.fspath(qrels)), _names(modes, "modes"), int(depth),
            (float(rrf_k), float(dense_weight)),
        )
        return json.loads(report)


def _params_of(card):
    """TextClassifier parameters that describe a single classifier's card."""
    if card.get("task") != "text-classification":
        return {}
    blocks = card.get("features", [])
    names = []
    if any(b.startswith("tfidf") for b in blocks):
        names.append("tfidf")
    names += [b for b in ("emb", "tab") if b in blocks]
    head = card.get("head", {})
    kind = head.get("kind", "logreg")
    if kind == "mlp" and head.get("params", {}).get("projection", 0) > 0:
        kind = "shared"
    encoder = card.get("encoder", {})
    reference = encoder.get("reference")
    params = {"features": ",".join(names), "head": kind}
    if reference and reference != DEFAULT_MODEL and not encoder.get("in_bundle"):
        params["model"] = reference
    weight = card.get("block_weights", {}).get("emb", 1.0)
    if weight != 1.0:
        params["emb_weight"] = weight
    return params


def _bundle_dir(path):
    """``path`` as a string, checked to be an existing folder."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"bundle folder {path} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not an lmfuse bundle: it is not a folder")
    return path


def load(path, cache=True, text_col="text", precision=None):
    """The bundle in folder ``path`` (from ``TextClassifier.save`` or any lmfuse command:
    a classifier or an ensemble) as a fitted TextClassifier; ``classes_`` are the label
    strings the bundle stores. ``precision``: ``"f32"``, ``"bf16"`` or ``"int8"`` to run its
    encoders in instead of the one the bundle records (no retraining: the weights are rounded or
    quantised at load)."""
    path = _bundle_dir(path)
    use_cache, cache_dir = _cache_args(cache)
    _check_precision(precision)
    fitted = _native.load(path, use_cache, cache_dir, precision)
    info = json.loads(fitted.info())
    params = _params_of(info["card"])
    clf = TextClassifier(
        text_col=text_col,
        feature_cols=tuple(info["feature_cols"]),
        cache=cache,
        precision=precision,
        **params,
    )
    clf._set_fitted(fitted)
    return clf


def stratified_folds(y, n_folds=5, seed=13):
    """The fold (0 … n_folds-1) of each label, as ``lmfuse compare --folds`` and ``lmfuse
    tune`` assign them: ``sklearn.model_selection.PredefinedSplit(stratified_folds(y))``
    cross-validates on the CLI's folds."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral):
        raise ValueError(f"n_folds must be an integer, not {n_folds!r}")
    strings, _ = _labels(y, len(y) if hasattr(y, "__len__") else -1)
    return np.asarray(_native.stratified_folds(strings, int(n_folds), int(seed)), dtype=np.int64)


class Results(list):
    """The rows of a ``compare`` or ``finetune`` run, a list of flat dicts
    (``pandas.DataFrame(results)`` makes the table), and the whole JSON report, as the
    command's ``--json`` prints it, in ``report``."""

    def __init__(self, rows, report):
        super().__init__(rows)
        self.report = report


def _names(value, what):
    """A comma-separated string or a list of names, as the library takes them."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{what} must be a comma-separated string or a list of strings, not {value!r}")


def _path(value, what, required=False):
    if value is None:
        if required:
            raise ValueError(f"{what} is required")
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{what} must be a file or folder path, not {value!r}")
    return os.fspath(value)


def _data_settings(text_col, label_col, format):
    return {"format": format, "text_col": str(text_col), "label_col": str(label_col)}


def _leaderboard_rows(board):
    """One flat dict per candidate, best cross-validated accuracy first (ties: run order)."""
    winner, saved = board["winner"]["name"], board.get("saved")
    rows = []
    for c in board["candidates"]:
        row = {"name": c["name"], "kind": c["kind"], "cv_accuracy": c["cv_accuracy"],
               "cv_std": c["cv_std"]}
        for key, value in (c.get("selected") or {}).items():
            row[f"selected_{key}"] = value
        for split in ("dev", "test"):
            row[f"{split}_accuracy"] = c[split]["accuracy"]
            row[f"{split}_macro_f1"] = c[split]["macro_f1"]
        row["fit_seconds"] = c["fit_seconds"]
        row["predict_seconds"] = c["predict_seconds"]
        if "member_models" in c:
            row["member_models"] = c["member_models"]
        row["winner"] = c["name"] == winner
        row["saved"] = c["name"] == saved
        rows.append(row)
    rows.sort(key=lambda r: -r["cv_accuracy"])
    return rows


def compare(
    train,
    dev=None,
    test=None,
    *,
    folds=5,
    seed=13,
    preset="fast",
    select="best-cv",
    time_limit=None,
    calibrate=True,
    singles=None,
    members=None,
    ensembles=None,
    emb_weights=(1.0,),
    oof_members="bagged",
    c_grid=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100),
    out=None,
    save_candidate=None,
    finetune=False,
    finetune_shared=False,
    finetune_shared_alpha=(3.0,),
    finetuned_members=False,
    finetune_epochs=3,
    finetune_lr=3e-5,
    stop_words="none",
    model=None,
    pooling=None,
    max_length=None,
    normalize=None,
    batch_tokens=None,
    prefix=None,
    text_col="text",
    label_col="label",
    format=None,
    cache=True,
):
    """Runs ``lmfuse compare`` on data files (arguments named as its flags, with its
    defaults): ranks single heads, feature fusion and ensembles by cross-validation on
    ``train`` and saves the winner (or ``save_candidate``) to ``out`` when given.
    ``preset`` (``fast``, ``medium``, ``best``) sets the candidates, which ``singles``,
    ``members``, ``ensembles`` and the fine-tuning flags change; ``time_limit`` is a budget
    in seconds; ``select`` (``best-cv``, ``one-se``) picks the winner; ``calibrate`` scales the
    saved model's probabilities by a temperature fit out of fold. Returns ``Results``:
    one dict per candidate, best first; ``.report`` holds the leaderboard."""
    use_cache, cache_dir = _cache_args(cache)
    settings = {
        "train": _path(train, "train", required=True),
        "dev": _path(dev, "dev"),
        "test": _path(test, "test"),
        "folds": int(folds),
        "seed": int(seed),
        "c_grid": [float(c) for c in c_grid],
        "out": _path(out, "out"),
        "preset": str(preset),
        "select": str(select),
        "time_limit": None if time_limit is None else float(time_limit),
        "calibrate": bool(calibrate),
        "singles": None if singles is None else _names(singles, "singles"),
        "members": None if members is None else _names(members, "members"),
        "ensembles": None if ensembles is None else _names(ensembles, "ensembles"),
        "emb_weights": [float(w) for w in emb_weights],
        "oof_members": oof_members,
        "finetune": bool(finetune),
        "finetune_shared": bool(finetune_shared),
        "finetune_shared_alpha": [float(a) for a in finetune_shared_alpha],
        "finetuned_members": bool(finetuned_members),
        "save_candidate": save_candidate,
        "finetune_epochs": int(finetune_epochs),
        "finetune_lr": float(finetune_lr),
        "use_cache": use_cache,
        "cache_dir": cache_dir,
        "stop_words": str(stop_words),
    }
    encoder = _encoder_settings(model, pooling, max_length, normalize, batch_tokens, prefix)
    data = _data_settings(text_col, label_col, format)
    board = json.loads(_native.compare(settings, encoder, data))
    return Results(_leaderboard_rows(board), board)


def select(
    pool,
    bundle,
    budget,
    *,
    strategy="margin",
    labelled=None,
    seed=0,
    cache=True,
):
    """Runs ``lmfuse select``: chooses ``budget`` texts of ``pool`` (a list of strings) to
    label next with the bundle at ``bundle``. ``strategy``: ``random``, ``least-confidence``,
    ``margin``, ``entropy``, ``kcenter`` (diversity of the bundle encoder's embeddings) or
    ``hybrid`` (the most diverse of the 10 x budget least sure); ``labelled``: texts labelled
    already, which diversity keeps away from. Returns one dict per chosen text, in the order
    chosen: ``rank``, ``row`` (its index in ``pool``), ``text``, ``uncertainty``."""
    use_cache, cache_dir = _cache_args(cache)
    chosen = _native.select(
        _path(bundle, "bundle", required=True),
        [str(t) for t in pool],
        [str(t) for t in (labelled or [])],
        str(strategy),
        int(budget),
        int(seed),
        use_cache,
        cache_dir,
    )
    return json.loads(chosen)


def learning_curves(
    train,
    test,
    *,
    budget=1000,
    initial=20,
    step=50,
    strategies=("random", "margin", "entropy", "kcenter", "hybrid"),
    seeds=5,
    c=10.0,
    model=None,
    pooling=None,
    max_length=None,
    normalize=None,
    batch_tokens=None,
    prefix=None,
    text_col="text",
    label_col="label",
    format=None,
    cache=True,
):
    """Runs ``lmfuse select --simulate``: active learning on ``train`` with its labels hidden
    until bought (``initial`` at random, then rounds of ``step`` chosen by each strategy, up
    to ``budget``), a logistic regression (``c``) on the encoder's embeddings scored on
    ``test`` after each round, ``seeds`` runs per strategy. Returns the report: per strategy
    the mean and std accuracy per number of labels, the labels it needs to reach random
    sampling's final accuracy, and every run."""
    use_cache, cache_dir = _cache_args(cache)
    settings = {
        "strategies": [str(s) for s in strategies],
        "seeds": list(range(int(seeds))),
        "initial": int(initial),
        "step": int(step),
        "budget": int(budget),
        "c": float(c),
        "use_cache": use_cache,
        "cache_dir": cache_dir,
    }
    encoder = _encoder_settings(model, pooling, max_length, normalize, batch_tokens, prefix)
    data = _data_settings(text_col, label_col, format)
    report = _native.learning_curves(
        _path(train, "train", required=True), _path(test, "test", required=True), settings,
        encoder, data,
    )
    return json.loads(report)


def finetune(
    train,
    out,
    dev=None,
    test=None,
    *,
    model=None,
    pooling=None,
    max_length=None,
    normalize=None,
    batch_tokens=None,
    prefix=None,
    text_col="text",
    label_col="label",
    format=None,
    **options,
):
    """Runs ``lmfuse finetune`` on data files: fine-tunes the encoder with a head (linear,
    ``shared_head=True`` or ``contrastive=True``), early stopping on dev, and saves the bundle
    (fine-tuned encoder inside) to ``out``. ``options`` are its other flags with underscores
    (``epochs=1``, ``lr=5e-5``, ``lora=True``, ...); the rest keep the CLI's defaults.
    Returns ``Results``: one dict per evaluation on dev; ``.report`` holds the report."""
    settings = {key: value for key, value in options.items() if value is not None}
    if "run_dir" in settings:
        settings["run_dir"] = _path(settings["run_dir"], "run_dir")
    encoder = _encoder_settings(model, pooling, max_length, normalize, batch_tokens, prefix)
    data = _data_settings(text_col, label_col, format)
    report = json.loads(
        _native.finetune(
            _path(train, "train", required=True),
            _path(dev, "dev"),
            _path(test, "test"),
            _path(out, "out", required=True),
            settings,
            encoder,
            data,
        )
    )
    rows = [dict(t) for t in report.get("trials", []) if isinstance(t, dict)]
    return Results(rows, report)
