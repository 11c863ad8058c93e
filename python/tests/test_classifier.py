"""lmfuse.TextClassifier as a scikit-learn estimator: fit/predict on the repo's reviews,
clone, GridSearchCV over C, Pipeline, labels of any type, side columns, and bad input."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import lmfuse
from lmfuse_testing import ROOT, require, reviews


@pytest.fixture(scope="module")
def data():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    return reviews()


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return lmfuse.TextClassifier(features="tfidf,emb").fit(X, y)


def test_fit_predict_proba_score(data, fitted):
    X, y = data
    assert list(fitted.classes_) == sorted(set(y))
    proba = fitted.predict_proba(X[:10])
    assert proba.shape == (10, len(fitted.classes_)) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert list(fitted.predict(X[:10])) == list(fitted.classes_[proba.argmax(axis=1)])
    assert fitted.score(X, y) > 0.9
    # C was chosen on a dev slice, as `lmfuse train` chooses it.
    assert fitted.report_["selected"]["param"] == "c"
    assert fitted.report_["data"]["dev"] == 30 and fitted.report_["data"]["test"] == 0
    assert fitted.predict_proba([]).shape == (0, 2)


def test_decision_function_where_the_head_has_one(data, fitted):
    X, _ = data
    scores = fitted.decision_function(X[:10])
    assert scores.shape == (10,)
    assert list(fitted.predict(X[:10])) == list(fitted.classes_[(scores > 0).astype(int)])
    knn = lmfuse.TextClassifier(head="knn")
    assert not hasattr(knn, "decision_function")
    assert hasattr(lmfuse.TextClassifier(head="svm"), "decision_function")


def test_clone_and_params_follow_sklearn(fitted):
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    assert not hasattr(twin, "classes_")
    twin.set_params(C=3.0, head="svm")
    assert twin.get_params()["C"] == 3.0 and twin.head == "svm"


def test_cross_val_score_and_grid_search_over_c(data):
    X, y = data
    scores = cross_val_score(lmfuse.TextClassifier(C=1.0), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    search = GridSearchCV(lmfuse.TextClassifier(), {"C": [0.1, 10.0]}, cv=3).fit(X, y)
    assert search.best_params_["C"] in (0.1, 10.0)
    assert search.best_estimator_.C == search.best_params_["C"]
    assert search.score(X, y) > 0.85


def test_in_a_pipeline(data):
    X, y = data
    pipe = make_pipeline(FunctionTransformer(lambda xs: [x.lower() for x in xs]), lmfuse.TextClassifier(C=1.0))
    pipe.fit(X, y)
    assert pipe.score(X, y) > 0.9


def test_number_labels_come_back_as_numbers(data):
    X, y = data
    ints = np.array([1 if label == "positive" else 0 for label in y])
    clf = lmfuse.TextClassifier(C=1.0).fit(X, ints)
    assert clf.classes_.tolist() == [0, 1] and clf.classes_.dtype.kind == "i"
    assert set(clf.predict(X[:20]).tolist()) <= {0, 1}
    assert clf.score(X, ints) > 0.9


def side_frame(n=80, seed=0):
    """Texts that say nothing; the label follows the number `price` and the `shop` category."""
    rng = np.random.default_rng(seed)
    price = rng.normal(size=n)
    shop = rng.choice(["north", "south"], size=n)
    label = np.where(price + (shop == "north") * 0.2 > 0.1, "dear", "cheap")
    texts = [f"an item, number {i % 7}" for i in range(n)]
    return pd.DataFrame({"review": texts, "price": price, "shop": shop, "label": label})


def test_a_dataframe_with_text_and_tabular_columns_trains(data):
    df = side_frame()
    clf = lmfuse.TextClassifier(
        features="emb,tab", text_col="review", feature_cols=["price", "shop"], C=10.0
    )
    clf.fit(df[["review", "price", "shop"]], df["label"])
    assert clf.feature_cols_ == ["price", "shop"]
    assert clf.score(df, df["label"]) > 0.9
    # The texts alone cannot tell the labels apart: the side columns did.
    text_only = lmfuse.TextClassifier(text_col="review", C=10.0).fit(df, df["label"])
    assert text_only.score(df, df["label"]) < clf.score(df, df["label"])
    with pytest.raises(ValueError, match="DataFrame"):
        clf.predict(df["review"])


def test_bad_input_raises_a_clear_value_error(data):
    X, y = data
    clf = lmfuse.TextClassifier(C=1.0)
    with pytest.raises(ValueError, match=r"X\[1\] is None"):
        clf.fit([X[0], None, X[2]], y[:3])
    with pytest.raises(ValueError, match="299 labels for 300 texts"):
        clf.fit(X, y[:-1])
    df = side_frame(20)
    df.loc[4, "price"] = np.nan
    tab = lmfuse.TextClassifier(text_col="review", features="emb,tab", feature_cols=["price"])
    with pytest.raises(ValueError, match=r"feature column 'price' holds nan at row 4"):
        tab.fit(df, df["label"])
    with pytest.raises(ValueError, match="X has no column 'weight'"):
        lmfuse.TextClassifier(text_col="review", features="emb,tab", feature_cols=["weight"]).fit(
            df, df["label"]
        )
    with pytest.raises(ValueError, match="head='forest'"):
        lmfuse.TextClassifier(head="forest").fit(X, y)
    with pytest.raises(ValueError, match="long_text=\"slide\".*truncate or windows"):
        lmfuse.TextClassifier(long_text="slide").fit(X, y)
    with pytest.raises(ValueError, match="C applies to the logreg and svm heads"):
        lmfuse.TextClassifier(head="knn", C=1.0).fit(X, y)
    with pytest.raises(ValueError, match="at least two classes"):
        clf.fit(X[:5], ["a"] * 5)
    with pytest.raises(ValueError, match="feature_cols and the 'tab' block go together"):
        lmfuse.TextClassifier(feature_cols=["price"]).fit(df, df["label"])


def test_a_failed_fit_keeps_the_previous_fit(data):
    X, y = data
    clf = lmfuse.TextClassifier(C=1.0).fit(X, y)
    before = clf.predict_proba(X[:5])
    with pytest.raises(ValueError):
        clf.fit(X, y[:10])
    assert np.array_equal(clf.predict_proba(X[:5]), before)


def test_unfitted_and_pickling(data, fitted):
    import pickle

    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        lmfuse.TextClassifier().predict(["x"])
    assert pickle.loads(pickle.dumps(lmfuse.TextClassifier(C=2.0))).C == 2.0
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(fitted)


def test_odd_texts_predict_without_error(fitted):
    odd = ["", "   ", "😀" * 2000, "a\nb\tc", "ÅÄÖ 中文 عربي"]
    proba = fitted.predict_proba(odd)
    assert proba.shape == (5, 2) and np.isfinite(proba).all()
    assert fitted.decision_function(odd).shape == (5,)
    assert fitted.predict(np.array(odd, dtype=object)).shape == (5,)
