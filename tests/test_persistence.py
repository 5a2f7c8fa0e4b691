"""Saving, loading, checkpointing and pickling of HRFEstimator (hrflow.persistence).

Round trips are checked for exact equality: the same ``sample`` with the same seed
and the same ``score_samples`` bit for bit, the same parameters and fitted arrays,
and a warm-start fit of the loaded model equal to the same warm-start fit of the
original (which needs the optimizer state). The safe file is read with
``torch.load(weights_only=True)`` and must hold tensors and JSON-safe data only.
A model "trained on CUDA" is simulated on a CPU-only machine by marking its
``device_`` as ``cuda:0``: loading must warn and fall back to the CPU.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import torch

import hrflow.estimator as estimator_module
from hrflow import HRFEstimator, persistence
from hrflow.fields import HierarchicalMLP
from hrflow.sources import GaussianMixtureSource

TINY = dict(
    n_iter=30, batch_size=32, hidden_size=16, n_layers=2, embedding_dim=8, n_draws=2, ode_steps=3,
    steps=(3, 2), device="cpu", random_state=0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    return np.column_stack([rng.normal(3.0, 2.0, 120), rng.normal(-1.0, 0.5, 120)])


def _weights(est):
    return {k: v.detach().cpu().clone() for k, v in est.field_.state_dict().items()}


def _assert_same_model(a, b, X):
    np.testing.assert_array_equal(a.sample(7, random_state=3), b.sample(7, random_state=3))
    np.testing.assert_array_equal(a.score_samples(X[:9]), b.score_samples(X[:9]))
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _assert_same_attributes(a, b):
    names = {k for k in vars(a) if k.endswith("_") and not k.startswith("_")}
    assert names == {k for k in vars(b) if k.endswith("_") and not k.startswith("_")}
    for name in ("mean_", "scale_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.loss_curve_ == b.loss_curve_
    assert (a.n_iter_, a.steps_, a.n_features_in_, a.device_) == (
        b.n_iter_, b.steps_, b.n_features_in_, b.device_)


def _walk(obj):
    """Every leaf of a nested dict/list/tuple."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


# =================================================================== save / load
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_save_load_round_trip_is_exact(X, tmp_path, depth):
    est = HRFEstimator(depth=depth, **{**TINY, "steps": (2,) * depth}).fit(X)
    path = est.save(tmp_path / "model.hrf")
    loaded = HRFEstimator.load(path)
    assert loaded is not est and type(loaded) is HRFEstimator
    assert loaded.get_params() == est.get_params()
    _assert_same_attributes(loaded, est)
    _assert_same_model(loaded, est, X)
    assert not loaded.field_.training


def test_file_is_tensors_and_json_only(X, tmp_path):
    est = HRFEstimator(**TINY).fit(X)
    path = est.save(tmp_path / "model.hrf")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == persistence.FORMAT_NAME
    assert payload["format_version"] == persistence.FORMAT_VERSION
    allowed = (torch.Tensor, str, int, float, bool, type(None))
    assert all(isinstance(leaf, allowed) for leaf in _walk(payload))
    params = json.loads(payload["params"])
    assert params["hidden_size"] == 16 and params["steps"] == {"__tuple__": [3, 2]}
    assert payload["optimizer_state"] is not None


def test_round_trip_with_sources_dtypes_and_random_state_objects(X, tmp_path):
    gm = GaussianMixtureSource([0.3, 0.7], [[3.0, -1.0], [1.0, 0.0]],
                               [np.eye(2) * 0.5, np.diag([1.0, 0.2])])
    cases = [
        dict(source=X[:40] + 0.1, dtype="float64"),
        dict(source=gm, depth=1, steps=(4,), random_state=np.random.RandomState(5)),
        dict(standardize=False, lr_schedule="constant", time_sampler=("uniform", "u_shaped")),
    ]
    for i, kw in enumerate(cases):
        est = HRFEstimator(**{**TINY, **kw}).fit(X)
        loaded = HRFEstimator.load(est.save(tmp_path / f"m{i}.hrf"))
        _assert_same_attributes(loaded, est)
        _assert_same_model(loaded, est, X)
        assert type(loaded.source_) is type(est.source_)
        if isinstance(est.random_state, np.random.RandomState):  # comes back in the same state
            assert loaded.random_state.randint(2**30) == est.random_state.randint(2**30)


def test_pandas_feature_names_survive(X, tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["height", "weight"])
    est = HRFEstimator(**TINY).fit(df)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    np.testing.assert_array_equal(loaded.feature_names_in_, ["height", "weight"])
    np.testing.assert_array_equal(loaded.score_samples(df[:5]), est.score_samples(df[:5]))


def test_ema_weights_survive(X, tmp_path):
    est = HRFEstimator(**TINY, ema_decay=0.9).fit(X)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    assert loaded.ema_field_ is not None
    for a, b in zip(loaded.ema_field_.parameters(), est.ema_field_.parameters()):
        assert torch.equal(a, b)
    _assert_same_model(loaded, est, X)


def test_warm_start_after_load_continues_like_the_original(X, tmp_path):
    est = HRFEstimator(**TINY).fit(X)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    for e in (est, loaded):
        e.set_params(warm_start=True, n_iter=10).fit(X)
    assert loaded.n_iter_ == est.n_iter_ == 40
    assert loaded.loss_curve_ == est.loss_curve_
    _assert_same_model(loaded, est, X)


def test_load_does_not_touch_the_global_torch_rng(X, tmp_path):
    path = HRFEstimator(**TINY).fit(X).save(tmp_path / "m.hrf")
    state = torch.random.get_rng_state()
    HRFEstimator.load(path)
    assert torch.equal(state, torch.random.get_rng_state())


def test_load_on_an_explicit_device(X, tmp_path):
    est = HRFEstimator(**TINY).fit(X)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"), device="cpu")
    assert loaded.device_ == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        HRFEstimator.load(tmp_path / "m.hrf", device="no-such-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a machine without CUDA")
def test_cuda_trained_file_loads_on_cpu_with_a_warning(X, tmp_path):
    est = HRFEstimator(**TINY).fit(X)
    est.device_ = torch.device("cuda", 0)  # as if trained on a GPU
    path = est.save(tmp_path / "m.hrf")
    with pytest.warns(UserWarning, match="cuda:0.*not available.*CPU"):
        loaded = HRFEstimator.load(path)
    assert loaded.device_ == torch.device("cpu")
    est.device_ = torch.device("cpu")
    _assert_same_model(loaded, est, X)


# ================================================================ refusals
def test_save_refuses_code_and_points_to_pickle(X, tmp_path):
    field = HierarchicalMLP(2, 2, hidden_size=8, n_layers=1, embedding_dim=4)
    est = HRFEstimator(**{**TINY, "field": field}).fit(X)
    with pytest.raises(TypeError, match="'field'.*pickle"):
        est.save(tmp_path / "a.hrf")

    def draw(n, rng):
        return rng.normal(size=(n, 2))

    est = HRFEstimator(**{**TINY, "source": draw}).fit(X)
    with pytest.raises(TypeError, match="'source'.*callable.*pickle"):
        est.save(tmp_path / "b.hrf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_save_needs_a_fitted_model(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        HRFEstimator().save(tmp_path / "m.hrf")


def test_newer_format_version_is_refused(X, tmp_path):
    path = HRFEstimator(**TINY).fit(X).save(tmp_path / "m.hrf")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = persistence.FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer hrflow.*format version 2.*Upgrade"):
        HRFEstimator.load(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("content", ["text", "bytes", "foreign_torch", "pickle"])
def test_non_hrflow_files_are_refused(tmp_path, content):
    path = tmp_path / "x.hrf"
    if content == "text":
        path.write_text("hello")
    elif content == "bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif content == "foreign_torch":
        torch.save({"weight": torch.zeros(3)}, path)
    else:  # a pickle with code in it must not be executed
        path.write_bytes(pickle.dumps(HRFEstimator()))
    with pytest.raises(ValueError, match="not an hrflow estimator file") as info:
        HRFEstimator.load(path)
    if content in ("text", "bytes"):  # torch's own message alone can be a bare number
        assert re.search(r"damaged\): [A-Za-z]+(Error|Exception)\b", str(info.value))


def test_load_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        HRFEstimator.load(tmp_path / "missing.hrf")
    with pytest.raises(FileNotFoundError, match="no hrflow checkpoint"):
        HRFEstimator.load(tmp_path)  # an empty folder
    with pytest.raises(TypeError, match="'path'"):
        HRFEstimator.load(123)


@pytest.fixture(scope="module")
def payload(X, tmp_path_factory):
    est = HRFEstimator(**TINY, ema_decay=0.9).fit(X)
    return torch.load(est.save(tmp_path_factory.mktemp("p") / "m.hrf"), weights_only=True)


def _edit_params(**changes):
    def edit(payload):
        payload["params"] = json.dumps({**json.loads(payload["params"]), **changes})
    return edit


def _nan_weight(section):
    def edit(payload):
        states = payload[section] if section == "field_state" else payload[section]["ema_field_"]
        name = next(k for k, v in states.items() if v.is_floating_point())
        states[name] = torch.full_like(states[name], float("nan"))
    return edit


@pytest.mark.parametrize("edit, cause", [
    (lambda p: p.pop("field_state"), KeyError),
    (lambda p: p.pop("params"), KeyError),
    (lambda p: p.pop("arrays"), KeyError),
    (lambda p: p.update(params="{not json"), json.JSONDecodeError),
    (lambda p: p.update(attributes="[1, 2]"), AttributeError),
    (_edit_params(hidden_size=32), RuntimeError),  # does not match the stored weights
    (_edit_params(no_such_parameter=1), TypeError),
    (lambda p: p["field_state"].update(first_bias=torch.zeros(1)), RuntimeError),
    (_nan_weight("field_state"), ValueError),
    (_nan_weight("module_states"), ValueError),
], ids=["no_field_state", "no_params", "no_arrays", "bad_json", "attributes_not_a_dict",
        "params_vs_weights", "unknown_parameter", "wrong_tensor_shape", "nan_weight",
        "nan_ema_weight"])
def test_damaged_files_are_refused_with_a_value_error(payload, tmp_path, edit, cause):
    damaged = copy.deepcopy(payload)
    edit(damaged)
    torch.save(damaged, tmp_path / "x.hrf")
    with pytest.raises(ValueError, match="not a valid hrflow estimator file") as info:
        HRFEstimator.load(tmp_path / "x.hrf")
    assert type(info.value.__cause__) is cause


@pytest.mark.parametrize("version", [True, 0, "1", None])
def test_format_version_must_be_a_positive_int(payload, tmp_path, version):
    torch.save({**payload, "format_version": version}, tmp_path / "x.hrf")
    with pytest.raises(ValueError, match="invalid format version"):
        HRFEstimator.load(tmp_path / "x.hrf")


def test_save_into_a_missing_folder_names_path(X, tmp_path):
    est = HRFEstimator(**{**TINY, "n_iter": 2}).fit(X)
    with pytest.raises(ValueError, match="'path'.*folder that does not exist"):
        est.save(tmp_path / "no" / "such" / "m.hrf")
    assert not list(tmp_path.iterdir())


# =============================================================== checkpoints
def test_checkpoints_every_n_iterations_keep_the_newest(X, tmp_path):
    est = HRFEstimator(**{**TINY, "n_iter": 35}, checkpoint_dir=tmp_path, checkpoint_every=10,
                       checkpoint_keep=2).fit(X)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-000000030.hrf", "checkpoint-000000035.hrf"]
    newest = HRFEstimator.load(tmp_path)  # a folder loads its newest checkpoint
    assert newest.n_iter_ == 35 and newest.loss_curve_ == est.loss_curve_
    _assert_same_model(newest, est, X)
    at_30 = HRFEstimator.load(tmp_path / "checkpoint-000000030.hrf")
    assert at_30.n_iter_ == 30 and at_30.loss_curve_ == est.loss_curve_[:30]


@pytest.mark.parametrize("keep", [1, 2])
def test_a_checkpoint_from_the_future_never_displaces_the_one_just_written(X, tmp_path, keep):
    # clock skew on a shared filesystem: an old checkpoint whose time lies ahead of ours
    import os

    from hrflow.persistence import checkpoint_path, latest_checkpoint, write_checkpoint

    stale = checkpoint_path(tmp_path, 999)
    stale.touch()
    future = (2**33) * 10**9  # year 2242
    os.utime(stale, ns=(future, future))
    est = HRFEstimator(**{**TINY, "n_iter": 2}).fit(X)
    path = write_checkpoint(est, tmp_path, keep=keep)
    assert path.exists() and latest_checkpoint(tmp_path) == path
    assert stale.exists() == (keep == 2)


def test_checkpoint_resumes_with_warm_start(X, tmp_path):
    HRFEstimator(**TINY, checkpoint_dir=tmp_path, checkpoint_every=10).fit(X)
    resumed = HRFEstimator.load(tmp_path).set_params(warm_start=True, n_iter=12)
    before = _weights(resumed)
    resumed.fit(X)
    assert resumed.n_iter_ == 42 and len(resumed.loss_curve_) == 42
    assert any(not torch.equal(before[k], v) for k, v in _weights(resumed).items())
    assert persistence.latest_checkpoint(tmp_path).name == "checkpoint-000000042.hrf"


def test_resuming_a_checkpoint_is_a_new_training_call(X, tmp_path):
    # as documented (checkpoint_dir): the warm start does not finish the first fit's
    # cosine but starts a schedule of its own, at the full rate
    HRFEstimator(**TINY, checkpoint_dir=tmp_path, checkpoint_every=10, checkpoint_keep=5).fit(X)
    resumed = HRFEstimator.load(tmp_path / "checkpoint-000000010.hrf")
    rates = []
    resumed.optimizer_.register_step_pre_hook(
        lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    resumed.set_params(warm_start=True, n_iter=4).fit(X)
    assert rates[0] == resumed.learning_rate and rates[-1] < rates[0]
    assert resumed.n_iter_ == 14


def test_keyboard_interrupt_writes_a_checkpoint_and_leaves_a_fitted_model(X, tmp_path, failing_loss):
    failing_loss(12, "interrupt")
    est = HRFEstimator(**TINY, checkpoint_dir=tmp_path, checkpoint_every=5)
    with pytest.warns(RuntimeWarning, match="interrupted after 12 of 30"):
        est.fit(X)
    assert est.__sklearn_is_fitted__() and est.n_iter_ == 12
    loaded = HRFEstimator.load(tmp_path)
    assert loaded.n_iter_ == 12
    _assert_same_model(loaded, est, X)


def test_checkpoints_hold_finite_weights_when_training_diverges(X, tmp_path, failing_loss):
    failing_loss(17, "nan")
    with pytest.raises(estimator_module.TrainingDivergedError):
        HRFEstimator(**TINY, checkpoint_dir=tmp_path, checkpoint_every=5).fit(X)
    loaded = HRFEstimator.load(tmp_path)
    assert loaded.n_iter_ == 15
    assert all(torch.isfinite(p).all() for p in loaded.field_.parameters())


@pytest.mark.parametrize("kw, exc, match", [
    (dict(checkpoint_every=5), ValueError, "'checkpoint_every'.*checkpoint_dir"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(checkpoint_keep=0), ValueError, "checkpoint_keep"),
    (dict(checkpoint_dir=3), ValueError, "checkpoint_dir"),
    (dict(checkpoint_dir="FILE"), ValueError, "'checkpoint_dir'.*folder"),
    (dict(checkpoint_dir="DIR", source=lambda n, rng: rng.normal(size=(n, 2))), TypeError,
     "callable"),
])
def test_bad_checkpoint_parameters_fail_before_training(X, tmp_path, kw, exc, match):
    (tmp_path / "FILE").write_text("")
    kw = {k: (str(tmp_path / v) if k == "checkpoint_dir" and isinstance(v, str) else v)
          for k, v in kw.items()}
    est = HRFEstimator(**TINY, **kw)
    with pytest.raises(exc, match=match):
        est.fit(X)
    assert not hasattr(est, "field_")


# ================================================================== pickling
@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_keeps_the_optimizer_state(X, tmp_path, dump):
    est = HRFEstimator(**TINY).fit(X)
    if dump == "pickle":
        copy_ = pickle.loads(pickle.dumps(est))
    else:
        joblib.dump(est, tmp_path / "m.joblib")
        copy_ = joblib.load(tmp_path / "m.joblib")
    _assert_same_model(copy_, est, X)
    for e in (est, copy_):
        e.set_params(warm_start=True, n_iter=10).fit(X)
    assert copy_.loss_curve_ == est.loss_curve_
    _assert_same_model(copy_, est, X)


def test_a_pickle_without_a_later_parameter_takes_its_default(X):
    est = HRFEstimator(**TINY).fit(X)
    state = est.__getstate__()
    del state["density_draws"]  # as in a pickle written before the parameter existed
    old = HRFEstimator.__new__(HRFEstimator)
    old.__setstate__(state)
    assert old.get_params() == est.get_params()
    np.testing.assert_array_equal(old.score_samples(X[:4]), est.score_samples(X[:4]))


def test_pickled_state_holds_cpu_tensors_only(X):
    est = HRFEstimator(**TINY, ema_decay=0.9).fit(X)
    state = est.__getstate__()
    assert state["field_"] is not est.field_
    assert isinstance(state["optimizer_"], dict)
    for module in (state["field_"], state["ema_field_"]):
        assert all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])
    # the estimator itself is untouched
    assert isinstance(est.optimizer_, torch.optim.Optimizer)


def test_a_network_given_as_the_field_parameter_is_pickled_on_the_cpu(X):
    """A user's field instance (pickle is the way to save one) crosses as a CPU copy too."""
    net = HierarchicalMLP(2, 2, hidden_size=8, n_layers=1, embedding_dim=4)
    est = HRFEstimator(**{**TINY, "field": net}).fit(X)
    state = est.__getstate__()
    assert state["field"] is not net  # a CPU copy, as for field_ (a GPU net would stay put)
    assert all(t.device.type == "cpu" for t in state["field"].parameters())
    assert est.field is net  # the estimator keeps the user's object
    copy_ = pickle.loads(pickle.dumps(est))
    _assert_same_model(copy_, est, X)
    # one copy serves the parameter and the record of what fit saw: warm start goes on
    for twin in (copy_, copy.deepcopy(est)):
        assert twin.field is twin._fit_params["field"]
        assert twin.set_params(warm_start=True).fit(X).n_iter_ == 2 * TINY["n_iter"]


def test_a_pickled_oracle_field_keeps_only_its_cpu_parameters():
    """The oracle caches its parameters per device; a GPU copy must not enter a pickle."""
    from hrflow.analytic import paper_mixture

    field = paper_mixture("1to2").field(2)
    field._params_on("meta")  # stands in for a GPU the field was used on
    for twin in (pickle.loads(pickle.dumps(field)), copy.deepcopy(field)):
        assert list(twin._params) == [torch.device("cpu")]
        z, t = torch.zeros(3, 1), torch.zeros(3)
        torch.testing.assert_close(twin([z, z], [t, t]), field([z, z], [t, t]))
    assert torch.device("meta") in field._params  # the original keeps its cache


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a machine without CUDA")
def test_cuda_trained_pickle_loads_on_cpu_with_a_warning(X):
    est = HRFEstimator(**TINY).fit(X)
    est.device_ = torch.device("cuda", 0)  # as if trained on a GPU
    blob = pickle.dumps(est)
    est.device_ = torch.device("cpu")
    with pytest.warns(UserWarning, match="cuda:0.*not available.*CPU"):
        copy_ = pickle.loads(blob)
    assert copy_.device_ == torch.device("cpu")
    _assert_same_model(copy_, est, X)
    # warm start continues on the CPU (the device parameter was "cpu" all along)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy_.set_params(warm_start=True, n_iter=3).fit(X)


# ============================================ attributes of other features
def test_tune_results_and_steps_survive(X, tmp_path):
    est = HRFEstimator(**TINY).fit(X)
    mean_gap = lambda A, B: float(np.sum((A.mean(0) - B.mean(0)) ** 2))  # noqa: E731
    est.tune_steps(X[:40], nfe=4, criterion=mean_gap, random_state=0)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    assert loaded.steps_ == est.steps_
    assert loaded.tune_results_["steps"] == est.tune_results_["steps"]
    for key in ("nfe", "score", "rank"):
        np.testing.assert_array_equal(loaded.tune_results_[key], est.tune_results_[key])
        assert loaded.tune_results_[key].dtype == est.tune_results_[key].dtype


def test_image_model_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 4, size=(12, 1, 4, 4))
    est = HRFEstimator(field="unet", n_bins=4, depth=2, n_iter=2, batch_size=4, unet_channels=4,
                       unet_channel_mult=(1,), embedding_dim=8, ode_steps=2, n_draws=1, steps=(2, 2),
                       device="cpu", random_state=0).fit(images)
    loaded = HRFEstimator.load(est.save(tmp_path / "u.hrf"))
    assert loaded.image_shape_ == est.image_shape_ == (1, 4, 4)
    np.testing.assert_array_equal(loaded.sample(3, random_state=1), est.sample(3, random_state=1))
    np.testing.assert_array_equal(loaded.score_samples(images[:3]), est.score_samples(images[:3]))


def test_a_loaded_field_is_in_eval_mode_like_the_fitted_one(tmp_path):
    """Dropout stays off after load (``sample`` does not switch modes itself)."""
    images = np.random.default_rng(0).integers(0, 4, size=(20, 16)).astype(float)
    est = HRFEstimator(depth=1, field="unet", n_bins=4, unet_channels=8, unet_dropout=0.5,
                       embedding_dim=8, n_iter=2, batch_size=8, steps=(3,), dtype="float64",
                       image_shape=(1, 4, 4), random_state=0, device="cpu").fit(images)
    assert not est.field_.training
    loaded = HRFEstimator.load(est.save(tmp_path / "model.hrf"))
    assert not loaded.field_.training
    np.testing.assert_array_equal(loaded.sample(5, random_state=1), est.sample(5, random_state=1))


def test_a_loaded_mixture_source_keeps_its_weights_bit_for_bit(tmp_path):
    """Weights such as [1, 4, 1] change in the last bit if normalised a second time on load."""
    src = GaussianMixtureSource([1.0, 4.0, 1.0], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                                np.tile(np.eye(2), (3, 1, 1)))
    X = np.random.default_rng(0).normal(size=(20, 2))
    est = HRFEstimator(depth=1, n_iter=3, batch_size=16, hidden_size=8, n_layers=1, embedding_dim=4,
                       n_draws=1, ode_steps=2, steps=(2,), source=src, device="cpu",
                       random_state=0).fit(X)
    loaded = HRFEstimator.load(est.save(tmp_path / "model.hrf"))
    assert torch.equal(loaded.source_.base.weights, est.source_.base.weights)
    np.testing.assert_array_equal(loaded.score_samples(X[:3]), est.score_samples(X[:3]))

