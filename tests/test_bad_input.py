"""Bad input, tried systematically on every public method of HRFEstimator.

Every case either works (finite outputs of the right shape) or raises ValueError
/ TypeError whose message names the offending argument; no other exception
type escapes and no NaN is returned. The table covers NaN, +-inf, empty arrays,
one sample, 1-D/3-D/5-D arrays, wrong n_features, object/string/complex/bool
dtypes, sparse matrices (refused with a TypeError: HRF needs dense data), pandas
DataFrames (accepted, ``feature_names_in_`` recorded, other names at score time
handled exactly as scikit-learn's KernelDensity handles them), huge values,
non-contiguous arrays (the same scores as a contiguous copy bit for bit; the same
fit up to the rounding of numpy's column sums), and bad
``steps``/``n_samples``/``random_state``/density keyword types. A hypothesis
fuzz test draws shapes, dtypes and values and checks the same contract.

The one documented exception to the ValueError/TypeError rule: ``load`` of a
path that does not exist raises FileNotFoundError, like ``open``.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hrflow import HRFEstimator

TINY = dict(n_iter=3, batch_size=16, hidden_size=8, n_layers=1, embedding_dim=4, n_draws=1,
            ode_steps=2, steps=(2, 2), device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(40, 2)) * [2.0, 0.5] + [1.0, -3.0]


@pytest.fixture(scope="module")
def fitted(X):
    return HRFEstimator(**TINY).fit(X)


def _finite(result):
    if isinstance(result, HRFEstimator):  # fit: the model must give finite answers
        result = np.concatenate([result.sample(3, random_state=0).ravel(),
                                 result.score_samples(result.sample(2, random_state=1))])
    arr = np.asarray(result, dtype=np.float64)
    return bool(np.all(np.isfinite(arr)))


def _call(method, est, X):
    if method == "fit":
        return HRFEstimator(**TINY).fit(X)
    return getattr(est, method)(X)


X_METHODS = ["fit", "score_samples", "score", "log_density"]

# name -> (builder of X from the clean data, expectation); an expectation is "ok", or
# (exception type, regex the message must match), or a dict per method.
_ERR_NAN = (ValueError, r"\bX\b.*NaN")
_ERR_INF = (ValueError, r"\bX\b.*infinity")
BAD_X = {
    "nan": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), _ERR_NAN),
    "+inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), _ERR_INF),
    "-inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 0, -np.inf, X), _ERR_INF),
    "empty": (lambda X: X[:0], (ValueError, r"'X'.*0 sample")),
    "no_features": (lambda X: X[:, :0], (ValueError, r"'X'.*0 feature")),
    "one_sample": (lambda X: X[:1], {"fit": (ValueError, r"'X'.*1 sample"), "other": "ok"}),
    "two_samples": (lambda X: X[:2], "ok"),
    "1d": (lambda X: X[:, 0], (ValueError, r"'X'.*1D array")),
    "3d": (lambda X: X.reshape(10, 4, 2), (ValueError, r"'X'.*dim 3")),
    "5d": (lambda X: X.reshape(10, 2, 2, 2, 1), (ValueError, r"'X'.*dim 5")),
    "scalar": (lambda X: 3.0, (ValueError, r"'X'.*scalar")),
    "none": (lambda X: None, (ValueError, r"'X'")),
    "wrong_n_features": (lambda X: np.hstack([X, X[:, :1]]),
                         {"fit": "ok", "other": (ValueError, r"\bX\b has 3 features.*expecting 2")}),
    "object_numbers": (lambda X: X.astype(object), "ok"),
    "object_strings": (lambda X: np.array([["a", "b"]] * 5, dtype=object), (ValueError, r"'X'.*string")),
    "str_dtype": (lambda X: X.astype(str), "ok"),  # numeric strings convert, like in scikit-learn
    "letters": (lambda X: np.array([["a", "b"]] * 5), (ValueError, r"'X'.*string")),
    "object_dicts": (lambda X: np.array([[{"a": 1}, 2.0]] * 5, dtype=object), (TypeError, r"'X'")),
    "complex": (lambda X: X + 1j, (ValueError, r"'X'.*Complex")),
    "bool": (lambda X: X > 0, "ok"),
    "int8": (lambda X: (X * 10).astype(np.int8), "ok"),
    "float16": (lambda X: X.astype(np.float16), "ok"),
    "float32": (lambda X: X.astype(np.float32), "ok"),
    "list": (lambda X: X.tolist(), "ok"),
    "csr": (lambda X: sp.csr_matrix(X), (TypeError, r"Sparse data was passed for X.*dense")),
    "csc": (lambda X: sp.csc_matrix(X), (TypeError, r"Sparse data was passed for X.*dense")),
    "coo_array": (lambda X: sp.coo_array(X), (TypeError, r"Sparse data was passed for X.*dense")),
    "huge_1e300": (lambda X: X * 1e300, {"fit": "ok", "other": (ValueError, r"\bX\b.*too far")}),
    "near_max": (lambda X: X * 1e307, {"fit": (ValueError, r"\bX\b.*too large"),
                                       "other": (ValueError, r"\bX\b.*too far")}),
    "huge_1e30_float32": (lambda X: X * 1e30, {"fit": "ok", "other": (ValueError, r"\bX\b.*too far")}),
    "tiny_1e-300": (lambda X: X * 1e-300, "ok"),
    "subnormal": (lambda X: X * 1e-310, "ok"),
    "constant": (lambda X: np.ones_like(X), "ok"),
    "fortran_order": (lambda X: np.asfortranarray(X), "ok"),
    "strided": (lambda X: np.repeat(X, 2, axis=0)[::2], "ok"),
    "negative_stride": (lambda X: X[::-1][::-1], "ok"),
    "readonly": (lambda X: _readonly(X), "ok"),
}


def _readonly(X):
    X = X.copy()
    X.flags.writeable = False
    return X


def _expected(expectation, method):
    if isinstance(expectation, dict):
        return expectation.get(method, expectation.get("other"))
    return expectation


@pytest.mark.parametrize("method", X_METHODS)
@pytest.mark.parametrize("case", list(BAD_X))
def test_bad_X_table(X, fitted, method, case):
    build, expectation = BAD_X[case]
    expected = _expected(expectation, method)
    bad = build(X)
    if expected == "ok":
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent overflow either
            result = _call(method, fitted, bad)
        assert _finite(result), f"{method}({case}) returned non-finite values"
        if method == "score_samples":
            assert result.shape == (np.asarray(bad).shape[0] if np.ndim(bad) else 1,)
    else:
        exc, match = expected
        with pytest.raises((ValueError, TypeError)) as info:
            _call(method, fitted, bad)
        assert type(info.value) is exc or isinstance(info.value, exc), repr(info.value)
        assert re.search(match, str(info.value), re.S), str(info.value)


@pytest.mark.parametrize("layout", ["fortran_order", "strided", "negative_stride", "readonly"])
def test_non_contiguous_inputs_give_identical_results(X, fitted, layout):
    bad = BAD_X[layout][0](X)
    np.testing.assert_array_equal(fitted.score_samples(bad), fitted.score_samples(np.array(X)))
    a = HRFEstimator(**TINY).fit(bad)
    b = HRFEstimator(**TINY).fit(np.ascontiguousarray(X))
    # numpy sums a Fortran-ordered column in another order: mean_ may differ in the last bit
    np.testing.assert_allclose(a.mean_, b.mean_, rtol=1e-14)
    np.testing.assert_allclose(a.sample(5, random_state=0), b.sample(5, random_state=0), rtol=1e-12)


# ================================================================= pandas
def test_dataframes_are_accepted_and_names_checked_like_sklearn(X):
    pd = pytest.importorskip("pandas")
    from sklearn.neighbors import KernelDensity

    df = pd.DataFrame(X, columns=["a", "b"])
    est = HRFEstimator(**TINY).fit(df)
    kde = KernelDensity().fit(df)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b"])
    assert np.all(np.isfinite(est.score_samples(df)))
    assert np.isfinite(est.score(df))

    def outcome(fn, data):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fn(data)
                error = None
            except Exception as exc:  # compared with KernelDensity's below
                error = (type(exc), str(exc).split("\n")[0])
        return error, sorted({(w.category, str(w.message).split(",")[0]) for w in caught})

    renamed = pd.DataFrame(X, columns=["c", "d"])
    for data in (renamed, X, df[["b", "a"]]):
        ours = outcome(est.score_samples, data)
        theirs = outcome(kde.score_samples, data)
        if theirs[0] is None:
            assert ours[0] is None
        else:  # the same error type and scikit-learn's message (we prefix "Invalid 'X'")
            assert ours[0][0] is theirs[0][0] and theirs[0][1] in ours[0][1]
        assert [c for c, _ in ours[1]] == [c for c, _ in theirs[1]]
        assert [m.replace("HRFEstimator", "E") for _, m in ours[1]] == [
            m.replace("KernelDensity", "E") for _, m in theirs[1]]
    # fitted on an array, scored with a DataFrame: the same warning as scikit-learn
    plain = HRFEstimator(**TINY).fit(X)
    with pytest.warns(UserWarning, match="X has feature names, but HRFEstimator was fitted without"):
        plain.score_samples(df)
    assert not hasattr(plain, "feature_names_in_")


def test_dataframe_with_mixed_dtypes_and_categoricals(X):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": X[:, 0], "b": (X[:, 1] * 10).astype(int)})
    assert np.all(np.isfinite(HRFEstimator(**TINY).fit(df).score_samples(df)))
    df["c"] = pd.Categorical(["u", "v"] * (len(df) // 2))
    with pytest.raises(ValueError, match="'X'|X"):
        HRFEstimator(**TINY).fit(df)


# ========================================================= other arguments
SAMPLE_CASES = [
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=-3), ValueError, "n_samples"),
    (dict(n_samples=2.0), TypeError, "n_samples"),
    (dict(n_samples="2"), TypeError, "n_samples"),
    (dict(n_samples=None), TypeError, "n_samples"),
    (dict(n_samples=True), TypeError, "n_samples"),
    (dict(n_samples=np.int64(3)), None, None),
    (dict(n_samples=2, steps="ab"), TypeError, "steps"),
    (dict(n_samples=2, steps=(2.0, 2)), TypeError, "steps"),
    (dict(n_samples=2, steps=(-1, 2)), ValueError, "steps"),
    (dict(n_samples=2, steps=(0, 2)), ValueError, "steps"),
    (dict(n_samples=2, steps=(2,)), ValueError, "steps"),
    (dict(n_samples=2, steps=(2, 2, 2)), ValueError, "steps"),
    (dict(n_samples=2, steps=[]), ValueError, "steps"),
    (dict(n_samples=2, steps=[3, np.int32(2)]), None, None),
    (dict(n_samples=2, steps=np.array([3, 2])), None, None),
    (dict(n_samples=2, steps={3, 2}), TypeError, "steps"),  # unordered: which level is which?
    (dict(n_samples=2, steps={3: "a", 2: "b"}), TypeError, "steps"),
    (dict(n_samples=2, steps="32"), TypeError, "steps"),
    (dict(n_samples=2, random_state="seed"), ValueError, "random_state"),
    (dict(n_samples=2, random_state=1.5), ValueError, "random_state"),
    (dict(n_samples=2, random_state=True), ValueError, "random_state"),
    (dict(n_samples=2, random_state=-1), ValueError, "random_state"),
    (dict(n_samples=2, random_state=np.random.RandomState(0)), None, None),
    (dict(n_samples=2, random_state=np.int64(7)), None, None),
    (dict(n_samples=2, return_path="yes"), TypeError, "return_path"),
]


@pytest.mark.parametrize("kwargs, exc, name", SAMPLE_CASES)
def test_sample_arguments(fitted, kwargs, exc, name):
    if exc is None:
        out = fitted.sample(**kwargs)
        assert out.shape == (int(kwargs["n_samples"]), 2) and np.all(np.isfinite(out))
        return
    with pytest.raises(exc, match=name):
        fitted.sample(**kwargs)


def test_sample_too_large_for_memory_fails_before_any_work(fitted, monkeypatch):
    import hrflow.estimator as estimator_module

    def no_work(*args, **kwargs):
        raise AssertionError("sampled before checking the output size")

    monkeypatch.setattr(estimator_module, "nested_euler", no_work)
    monkeypatch.setattr(estimator_module, "np", _NoAllocNumpy())
    for name, call in (("n_samples", lambda: fitted.sample(10**13)),
                       ("n_samples", lambda: fitted.sample_pairs(10**13)),
                       ("n_samples", lambda: fitted.sample(10**12, return_path=True)),
                       ("n_pairs", lambda: fitted.reflow(n_pairs=10**13))):
        with pytest.raises(ValueError, match=name + r"=10+\b.*memory"):
            call()


class _NoAllocNumpy:
    """numpy without large allocations: a test double for the estimator module's ``np``."""

    def __getattr__(self, name):
        real = getattr(np, name)
        if name in ("empty", "zeros", "ones", "full", "concatenate"):
            def refuse(*args, **kwargs):
                raise AssertionError(f"np.{name} called before checking the output size")
            return refuse
        return real


def test_sample_size_limit_is_the_machine_memory(fitted, monkeypatch):
    import hrflow.estimator as estimator_module

    # 2 features of 8 bytes: 100 samples take 1600 bytes
    monkeypatch.setattr(estimator_module, "_physical_memory", lambda: 1600)
    assert fitted.sample(100, random_state=0).shape == (100, 2)
    with pytest.raises(ValueError, match=r"n_samples=101\b"):
        fitted.sample(101)
    with pytest.raises(ValueError, match=r"n_samples=100\b"):  # X and X0
        fitted.sample_pairs(100)
    with pytest.raises(ValueError, match=r"n_samples=30\b"):  # X and 3 path states
        fitted.sample(30, steps=(2, 2), return_path=True)
    # unknown memory size: only the numpy limit on array sizes applies
    monkeypatch.setattr(estimator_module, "_physical_memory", lambda: None)
    assert fitted.sample(3, random_state=0).shape == (3, 2)
    with pytest.raises(ValueError, match=r"n_samples=\d+"):
        fitted.sample(2**62)


def test_large_chunked_sample_still_works(X):
    est = HRFEstimator(**{**TINY, "chunk_size": 700}).fit(X)
    S = est.sample(5000, random_state=0)
    assert S.shape == (5000, 2) and np.all(np.isfinite(S))
    np.testing.assert_array_equal(S[:700], est.sample(700, random_state=0))


LOG_DENSITY_CASES = [
    (dict(algorithm="x"), ValueError, "algorithm"),
    (dict(algorithm=5), ValueError, "algorithm"),
    (dict(algorithm=True), ValueError, "algorithm"),
    (dict(algorithm="4"), None, None),
    (dict(algorithm=4, t=2.0), ValueError, r"\bt\b"),
    (dict(algorithm=4, t=0.0), ValueError, r"\bt\b"),
    (dict(algorithm=4, t=float("nan")), ValueError, r"\bt\b"),
    (dict(algorithm=4, t="a"), TypeError, r"\bt\b"),
    (dict(algorithm=3, t=1.5), ValueError, r"\bt\b"),  # unused by algorithm 3, still checked
    (dict(algorithm=3, t="a"), TypeError, r"\bt\b"),
    (dict(algorithm=3, t=float("nan")), ValueError, r"\bt\b"),
    (dict(n_draws=0), ValueError, "n_draws"),
    (dict(n_draws=1.5), ValueError, "n_draws"),
    (dict(n_draws="a"), ValueError, "n_draws"),
    (dict(combine="x"), ValueError, "combine"),
    (dict(divergence="x"), ValueError, "divergence"),
    (dict(solver="x"), ValueError, "solver"),
    (dict(n_steps=0), ValueError, "n_steps"),
    (dict(n_steps=1.5), TypeError, "n_steps"),
    (dict(random_state="x"), ValueError, "random_state"),
    (dict(dequantize=True), ValueError, "dequantize"),
    (dict(dequantize="yes"), TypeError, "dequantize"),
    (dict(algorithm=4, n_draws_marginal=3), None, None),
    (dict(n_draws_marginal=0), ValueError, "n_draws_marginal"),  # checked for algorithm 3 too
    (dict(draws="per_row"), None, None),
    (dict(draws="x"), ValueError, "draws"),
    (dict(draws=1), ValueError, "draws"),
    (dict(algorithm=4, n_draws_marginal=1.5), (ValueError, TypeError), "n_draws_marginal"),
]


@pytest.mark.parametrize("kwargs, exc, name", LOG_DENSITY_CASES)
def test_log_density_keywords(fitted, X, kwargs, exc, name):
    if exc is None:
        assert np.all(np.isfinite(fitted.log_density(X[:3], **kwargs)))
        return
    with pytest.raises(exc, match=name):
        fitted.log_density(X[:3], **kwargs)


def test_save_and_load_arguments(fitted, tmp_path):
    with pytest.raises(TypeError, match="'path'"):
        fitted.save(123)
    with pytest.raises(ValueError, match="'path'.*directory"):
        fitted.save(tmp_path)
    with pytest.raises(TypeError, match="'path'"):
        HRFEstimator.load(None)
    (tmp_path / "junk.hrf").write_bytes(b"\x00\x01junk")
    with pytest.raises(ValueError, match="not an hrflow estimator file"):
        HRFEstimator.load(tmp_path / "junk.hrf")
    with pytest.raises(FileNotFoundError):  # the documented exception: like open()
        HRFEstimator.load(tmp_path / "missing.hrf")
    path = fitted.save(tmp_path / "ok.hrf")
    with pytest.raises((ValueError, TypeError), match="device"):
        HRFEstimator.load(path, device=3.5)


def test_unfitted_methods_raise_not_fitted(X, tmp_path):
    from sklearn.exceptions import NotFittedError

    est = HRFEstimator(**TINY)
    for call in (lambda: est.sample(2), lambda: est.score_samples(X), lambda: est.score(X),
                 lambda: est.log_density(X), lambda: est.save(tmp_path / "m.hrf")):
        with pytest.raises(NotFittedError):  # a ValueError (and AttributeError) subclass
            call()


# ================================================================== fuzzing
_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.bool_, np.complex128, object, str]
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e300, -1e300, 1e-300, 1e30, 1.7e308, np.nan, np.inf]),
)


@st.composite
def arrays(draw):
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 3]))
    shape = tuple(draw(st.integers(0, 5)) for _ in range(ndim))
    if ndim == 2 and draw(st.booleans()):
        shape = (shape[0], 2)  # often the right number of features
    size = int(np.prod(shape)) if shape else 1
    values = np.array(draw(st.lists(_VALUES, min_size=size, max_size=size)), dtype=np.float64)
    dtype = draw(st.sampled_from(_DTYPES))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = values.reshape(shape).astype(dtype)
    return arr


@settings(max_examples=40, deadline=None)
@given(arr=arrays(), method=st.sampled_from(X_METHODS))
def test_fuzz_X_works_or_raises_value_or_type_error(fitted, arr, method):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's own conversion warnings are fine
            result = _call(method, fitted, arr)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert _finite(result), f"{method} returned non-finite values for {arr!r}"


@settings(max_examples=40, deadline=None)
@given(
    n_samples=st.one_of(st.integers(-2, 4), st.floats(), st.text(max_size=2), st.none(), st.booleans()),
    steps=st.one_of(st.none(), st.integers(-1, 3), st.lists(st.one_of(st.integers(-1, 3), st.floats()),
                                                            max_size=3), st.text(max_size=2)),
    random_state=st.one_of(st.none(), st.integers(-2, 2**32), st.floats(), st.text(max_size=2)),
)
def test_fuzz_sample_arguments(fitted, n_samples, steps, random_state):
    try:
        out = fitted.sample(n_samples, steps=steps, random_state=random_state)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert out.shape == (n_samples, 2) and np.all(np.isfinite(out))


INT_PARAMS = ["hidden_size", "n_layers", "batch_size", "n_iter", "warmup_iter", "chunk_size",
              "n_draws", "ode_steps", "checkpoint_keep", "coupling_group_size", "depth"]


@pytest.mark.parametrize("name", INT_PARAMS)
def test_bool_is_not_an_int_parameter(X, name):
    # scikit-learn's Interval(Integral) lets True through as 1; the estimator does not
    with pytest.raises(TypeError, match=rf"'{name}'.*(not a bool|Got True)"):
        HRFEstimator(**{**TINY, name: True}).fit(X)


@pytest.mark.parametrize("source, exc, match", [
    (np.full((5, 2), np.nan), ValueError, r"source.*NaN"),
    (np.full((5, 2), np.inf), ValueError, r"source.*infinity"),
    (np.zeros((5, 3)), ValueError, r"'source'.*2 features.*\(5, 3\)"),
    (np.zeros(5), ValueError, r"'source'.*2D array"),
    (np.zeros((0, 2)), ValueError, r"'source'.*0 sample"),
    ([["a", "b"]], ValueError, r"'source'"),
    (np.full((5, 2), 1e30), ValueError, r"source has values too far"),
    (lambda n, rng: np.zeros((n, 3)), ValueError, r"source callable.*shape"),
    (lambda n, rng: np.full((n, 2), 1e300), ValueError, r"source has values too far"),
    (lambda n, rng: np.full((n, 2), np.nan), ValueError, r"source callable.*NaN"),
])
def test_bad_source_is_refused_before_training(X, source, exc, match):
    with pytest.raises(exc, match=match):
        HRFEstimator(**{**TINY, "source": source}).fit(X)


def test_a_dataframe_x_with_an_array_source_gives_no_feature_name_warning(X):
    pd = pytest.importorskip("pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HRFEstimator(**{**TINY, "source": X[:5] + 1.0}).fit(pd.DataFrame(X, columns=["a", "b"]))


@pytest.mark.parametrize("change, bad_X", [
    (dict(source=lambda n, rng: np.zeros((n, 3))), None),  # a bad callable, found by its probe
    (dict(), np.random.default_rng(1).normal(size=(10, 3)) * 1e307),  # X fails after validate_data
    (dict(image_shape=(1, 1, 4)), None),  # image_shape does not match X
])
def test_a_failed_refit_leaves_the_fitted_model_intact(X, change, bad_X):
    est = HRFEstimator(**TINY).fit(X)
    before = est.sample(3, random_state=0), est.score_samples(X[:3])
    est.set_params(**change)
    with pytest.raises(ValueError):
        est.fit(X if bad_X is None else bad_X)
    assert est.n_features_in_ == 2 and est.n_iter_ == TINY["n_iter"]
    np.testing.assert_array_equal(est.sample(3, random_state=0), before[0])
    np.testing.assert_array_equal(est.score_samples(X[:3]), before[1])


@pytest.mark.parametrize("change", [
    dict(depth=3), dict(hidden_size=16), dict(n_layers=2), dict(embedding_dim=8),
    dict(dtype="float64"), dict(standardize=False), dict(source=np.zeros((4, 2))), dict(field=None),
])
def test_warm_start_refuses_a_change_of_structure(X, change, tmp_path):
    if change == dict(field=None):  # a field instance in place of the name
        from hrflow.fields import HierarchicalMLP
        change = dict(field=HierarchicalMLP(2, 2, hidden_size=8, n_layers=1, embedding_dim=4))
    est = HRFEstimator(**{**TINY, "warm_start": True}).fit(X)
    reloaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    for model in (est, reloaded):
        ref = model.sample(3, random_state=0)
        name = next(iter(change))
        with pytest.raises(ValueError, match=rf"warm_start.*{name}="):
            model.set_params(**change).fit(X)
        assert model.n_iter_ == TINY["n_iter"]  # nothing trained, nothing converted
        np.testing.assert_array_equal(model.sample(3, random_state=0), ref)


def test_refit_on_an_array_after_a_dataframe_forgets_the_column_names(X):
    pd = pytest.importorskip("pandas")
    est = HRFEstimator(**TINY).fit(pd.DataFrame(X, columns=["a", "b"]))
    assert list(est.feature_names_in_) == ["a", "b"]
    est.fit(X)
    assert not hasattr(est, "feature_names_in_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "fitted with feature names" warning
        est.score_samples(X[:2])


def test_warm_start_takes_new_steps_and_other_settings(X):
    est = HRFEstimator(**{**TINY, "warm_start": True}).fit(X)
    est.set_params(steps=(3, 1), n_iter=2, learning_rate=1e-4).fit(X)
    assert est.steps_ == (3, 1) and est.n_iter_ == TINY["n_iter"] + 2
    with pytest.raises(ValueError, match="steps"):
        est.set_params(steps=(0,)).fit(X)
    assert est.steps_ == (3, 1)
    est.set_params(steps=(3, 1)).tune_steps(X, nfe=4)
    tuned = est.steps_
    est.fit(X)  # steps unchanged since the fit: the tuned split is kept
    assert est.steps_ == tuned


def test_tune_steps_names_X_val(fitted):
    for bad, match in [(np.full((3, 2), np.nan), "X_val.*NaN"), (np.zeros((0, 2)), "X_val.*0 sample"),
                       (np.zeros((3, 3)), "X_val.*3 features")]:
        with pytest.raises(ValueError, match=match):
            fitted.tune_steps(bad, nfe=4)


def test_n_draws_marginal_reaches_algorithm_4(fitted, X):
    a = fitted.log_density(X[:3], algorithm=4, n_draws_marginal=2, random_state=0)
    b = fitted.log_density(X[:3], algorithm=4, n_draws_marginal=40, random_state=0)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, fitted.log_density(X[:3], algorithm=4, n_draws_marginal=2,
                                                        random_state=0))
