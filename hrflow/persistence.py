"""Saving and loading fitted estimators: a safe file format, checkpoints and pickling.

The safe format is one file written with :func:`torch.save` that holds nothing but
tensors and JSON-safe data (str, int, float, bool, None, lists and dicts of them),
so that it is read back with ``torch.load(..., weights_only=True)``: loading a file
never runs code stored in it. It contains

- ``"format"`` (``"hrflow.estimator"``) and ``"format_version"`` (:data:`FORMAT_VERSION`),
- ``"params"``: the constructor parameters as a JSON string,
- ``"attributes"``: the fitted attributes (``mean_``, ``scale_``, ``loss_curve_``,
  ``source_``, ...) as a JSON string whose arrays point into ``"arrays"``,
- ``"arrays"``: a dict of CPU tensors,
- ``"field_state"``: the field's ``state_dict`` (CPU tensors); the field itself is
  rebuilt from the parameters, so only named fields (``field="mlp"``) can be saved,
- ``"module_states"``: the ``state_dict`` of other fitted modules, which have the
  field's architecture (``ema_field_``),
- ``"optimizer_state"``: the optimizer's ``state_dict`` (or None), so that
  ``warm_start=True`` trains a loaded model or a checkpoint further with it.

Values that are code (a custom :class:`~hrflow.fields.HierarchicalField` instance, a
callable source, unknown :class:`~hrflow.sources.Source` subclasses) cannot be stored
safely: :func:`save_estimator` refuses them with a TypeError that points to
``pickle``/``joblib``. Pickling goes through :func:`portable_state` and
:func:`restore_portable_state`, which store every tensor on the CPU so that a model
trained on a GPU loads on a machine without one.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._validation import user_stacklevel
from .sources import AffineSource, EmpiricalSource, GaussianMixtureSource, Source, StandardNormal

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "encode_value",
    "decode_value",
    "check_saveable",
    "estimator_payload",
    "write_payload",
    "read_payload",
    "restore_estimator",
    "save_estimator",
    "load_estimator",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "write_checkpoint",
    "available_device",
    "portable_state",
    "restore_portable_state",
]

#: identifies an hrflow estimator file
FORMAT_NAME = "hrflow.estimator"
#: version of the file layout; files with a larger number are refused
FORMAT_VERSION = 1
#: file name pattern of the checkpoints written during fit
CHECKPOINT_GLOB = "checkpoint-*.hrf"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.hrf$")

# fitted attributes that are stored in their own sections, not as JSON
_SPECIAL_ATTRIBUTES = ("field_", "optimizer_")


# ------------------------------------------------------------------ values
def _source_state(source: Source, arrays: dict, name: str) -> dict:
    kind = type(source)
    if kind is StandardNormal:
        return {"type": "StandardNormal", "event_shape": list(source.event_shape)}
    if kind is EmpiricalSource:
        return {"type": "EmpiricalSource", "points": encode_value(source.points, arrays, name)}
    if kind is GaussianMixtureSource:
        return {
            "type": "GaussianMixtureSource",
            "weights": encode_value(source.weights, arrays, name),
            "means": encode_value(source.means, arrays, name),
            "covariances": encode_value(source.covariances, arrays, name),
        }
    if kind is AffineSource:
        return {
            "type": "AffineSource",
            "base": _source_state(source.base, arrays, name),
            "shift": encode_value(source.shift, arrays, name),
            "scale": encode_value(source.scale, arrays, name),
        }
    from .images import ReshapedSource

    if kind is ReshapedSource:
        return {
            "type": "ReshapedSource",
            "base": _source_state(source.base, arrays, name),
            "event_shape": list(source.event_shape),
        }
    raise TypeError(
        f"{name}: a source of type {kind.__name__} cannot be stored in hrflow's safe format "
        "(only 'normal', arrays, StandardNormal, EmpiricalSource and GaussianMixtureSource "
        "can); use pickle or joblib.dump to save this estimator instead."
    )


def _source_from_state(state: dict, arrays: dict) -> Source:
    kind = state.get("type")
    if kind == "StandardNormal":
        return StandardNormal(state["event_shape"])
    if kind == "EmpiricalSource":
        return EmpiricalSource(decode_value(state["points"], arrays).numpy())
    if kind == "GaussianMixtureSource":
        weights = decode_value(state["weights"], arrays)
        src = GaussianMixtureSource(
            weights.numpy(),
            decode_value(state["means"], arrays).numpy(),
            decode_value(state["covariances"], arrays).numpy(),
        )
        src.weights = weights  # exactly the stored (already normalised) weights
        return src
    if kind == "AffineSource":
        return AffineSource(
            _source_from_state(state["base"], arrays),
            decode_value(state["shift"], arrays).numpy(),
            decode_value(state["scale"], arrays).numpy(),
        )
    if kind == "ReshapedSource":
        from .images import ReshapedSource

        return ReshapedSource(_source_from_state(state["base"], arrays), state["event_shape"])
    raise ValueError(f"unknown source type {kind!r} in the file (written by a newer hrflow?)")


def _store_array(tensor: torch.Tensor, arrays: dict) -> str:
    key = f"a{len(arrays)}"
    arrays[key] = tensor.detach().to("cpu").clone().contiguous()
    return key


def encode_value(value, arrays: dict, name: str = "value"):
    """Turn a parameter or fitted attribute into JSON-safe data plus tensors.

    Supported: None, bool, int, float, str (and their numpy scalar types), lists,
    tuples, dicts with str keys, numpy arrays (numeric, or of str), tensors,
    :class:`torch.device`, paths, :class:`numpy.random.RandomState` and the sources of
    :mod:`hrflow.sources` that hold data only. Arrays and tensors go into ``arrays``
    (a dict ``key -> CPU tensor``) and are referenced by key.

    Parameters
    ----------
    value : object
        The value to encode.
    arrays : dict
        Receives the tensors (modified in place).
    name : str, default="value"
        Name used in the error message.

    Returns
    -------
    data : JSON-safe object

    Raises
    ------
    TypeError
        For a value that cannot be stored safely (code: a callable, a module...).

    Examples
    --------
    >>> import numpy as np
    >>> arrays = {}
    >>> data = encode_value({"steps": (4, 2), "mean": np.zeros(2)}, arrays)
    >>> data["__dict__"][0]
    ['steps', {'__tuple__': [4, 2]}]
    >>> decode_value(data, arrays)["mean"]
    array([0., 0.])
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v, arrays, name) for v in value]}
    if isinstance(value, list):
        return [encode_value(v, arrays, name) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{name}: only dicts with str keys can be saved, got {value!r}")
        return {"__dict__": [[k, encode_value(v, arrays, name)] for k, v in value.items()]}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _store_array(value, arrays)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            # stored as a tensor of a dtype torch reads everywhere, cast back on load
            wide = value.astype(np.float64 if value.dtype.kind == "f" else np.int64)
            key = _store_array(torch.from_numpy(np.ascontiguousarray(wide)), arrays)
            return {"__array__": key, "dtype": value.dtype.str, "shape": list(value.shape)}
        if value.dtype.kind in "OU" and all(isinstance(v, str) for v in value.ravel()):
            return {"__str_array__": value.tolist(), "dtype": value.dtype.str}
        raise TypeError(f"{name}: an array of dtype {value.dtype} cannot be saved safely")
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, os.PathLike):
        return {"__path__": os.fspath(value)}
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state(legacy=True)
        return {"__random_state__": [kind, encode_value(keys, arrays, name), int(pos),
                                     int(has_gauss), float(cached)]}
    if isinstance(value, Source):
        return {"__source__": _source_state(value, arrays, name)}
    if isinstance(value, torch.nn.Module):
        raise TypeError(
            f"{name}: a custom {type(value).__name__} instance is code and cannot be stored in "
            "hrflow's safe format; use a named field (field='mlp') or save the estimator with "
            "pickle or joblib.dump instead."
        )
    if hasattr(value, "__array__") and not callable(value):  # a DataFrame: stored as its array
        return encode_value(np.asarray(value), arrays, name)
    if callable(value):
        raise TypeError(
            f"{name}: a callable ({value!r}) is code and cannot be stored in hrflow's safe "
            "format; save the estimator with pickle or joblib.dump instead."
        )
    raise TypeError(f"{name}: a value of type {type(value).__name__} cannot be saved safely")


def decode_value(data, arrays: dict):
    """Inverse of :func:`encode_value`.

    Parameters
    ----------
    data : JSON-safe object
        Output of :func:`encode_value` (after a JSON round trip).
    arrays : dict
        The tensors referenced by ``data``.

    Returns
    -------
    value : object

    Examples
    --------
    >>> decode_value({"__tuple__": [1, 2]}, {})
    (1, 2)
    """
    if isinstance(data, list):
        return [decode_value(v, arrays) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tuple__" in data:
        return tuple(decode_value(v, arrays) for v in data["__tuple__"])
    if "__dict__" in data:
        return {k: decode_value(v, arrays) for k, v in data["__dict__"]}
    if "__tensor__" in data:
        return arrays[data["__tensor__"]].clone()
    if "__array__" in data:
        arr = arrays[data["__array__"]].numpy().astype(np.dtype(data["dtype"]))
        return arr.reshape(data["shape"])
    if "__str_array__" in data:
        return np.asarray(data["__str_array__"], dtype=np.dtype(data["dtype"]))
    if "__device__" in data:
        return torch.device(data["__device__"])
    if "__path__" in data:
        return Path(data["__path__"])
    if "__random_state__" in data:
        kind, keys, pos, has_gauss, cached = data["__random_state__"]
        rs = np.random.RandomState()
        rs.set_state((kind, decode_value(keys, arrays).astype(np.uint32), pos, has_gauss, cached))
        return rs
    if "__source__" in data:
        return _source_from_state(data["__source__"], arrays)
    raise ValueError(f"unknown entry {sorted(data)} in the file (written by a newer hrflow?)")


# ---------------------------------------------------------------- payloads
def check_saveable(params: dict) -> None:
    """Raise TypeError if the parameters cannot be stored in the safe format.

    Parameters
    ----------
    params : dict
        ``estimator.get_params(deep=False)``.

    Examples
    --------
    >>> check_saveable({"field": "mlp", "source": "normal"})
    >>> check_saveable({"source": print})
    Traceback (most recent call last):
    ...
    TypeError: parameter 'source': a callable (<built-in function print>) is code ...
    """
    for key, value in params.items():
        encode_value(value, {}, f"parameter {key!r}")


def _cpu_tree(obj):
    """Copy of a nested dict/list/tuple with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return type(obj)((k, _cpu_tree(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_tree(v) for v in obj)
    return obj


def estimator_payload(estimator) -> dict:
    """Everything the safe format stores about a fitted estimator.

    Parameters
    ----------
    estimator : HRFEstimator
        A fitted estimator with a named field (``field="mlp"``).

    Returns
    -------
    payload : dict
        Tensors and JSON-safe data only (see the module docstring).

    Raises
    ------
    TypeError
        If a parameter or attribute cannot be stored safely.

    Examples
    --------
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> payload = estimator_payload(est)
    >>> payload["format"], payload["format_version"], payload["class"]
    ('hrflow.estimator', 1, 'HRFEstimator')

    Parameters and fitted attributes are JSON strings whose arrays point into
    ``"arrays"``; the modules and the optimizer are stored as CPU ``state_dict``:

    >>> import json
    >>> json.loads(payload["params"])["hidden_size"]
    8
    >>> json.loads(payload["attributes"])["n_iter_"]
    2
    >>> all(t.device.type == "cpu" for t in payload["arrays"].values())
    True
    >>> all(t.device.type == "cpu" for t in payload["field_state"].values())
    True
    >>> payload["field_event_shape"], payload["optimizer_state"] is not None
    ([2], True)
    """
    params = estimator.get_params(deep=False)
    arrays: dict = {}
    params_json = json.dumps(
        {k: encode_value(v, arrays, f"parameter {k!r}") for k, v in params.items()}
    )
    fitted = {
        k: v for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_") and k not in _SPECIAL_ATTRIBUTES
    }
    # other fitted modules (an EMA of the field) have the field's architecture
    modules = {k: v for k, v in fitted.items() if isinstance(v, torch.nn.Module)}
    attributes = {
        k: encode_value(v, arrays, f"attribute {k!r}") for k, v in fitted.items() if k not in modules
    }
    field = estimator.field_
    opt = getattr(estimator, "optimizer_", None)
    from . import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "hrflow_version": __version__,
        "class": type(estimator).__name__,
        "params": params_json,
        "attributes": json.dumps(attributes),
        "arrays": arrays,
        "field_state": _cpu_tree(dict(field.state_dict())),
        "field_event_shape": list(field.event_shape),
        "module_states": {k: _cpu_tree(dict(m.state_dict())) for k, m in modules.items()},
        "optimizer_state": None if opt is None else _cpu_tree(opt.state_dict()),
    }


def _check_path(path, name="path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The '{name}' argument must be a str or os.PathLike. Got {path!r} instead.")
    return Path(path)


def write_payload(payload: dict, path) -> Path:
    """Write a payload atomically (a temporary file, then a rename).

    Parameters
    ----------
    payload : dict
        Output of :func:`estimator_payload`.
    path : str or os.PathLike
        Destination file; its folder must exist.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` is a folder, or its folder does not exist.
    TypeError
        If ``path`` is not a str or os.PathLike.

    Examples
    --------
    A minimal payload (the marker and the version) with one tensor:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
    ...            "arrays": {"a0": torch.arange(3.0)}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_payload(payload, Path(tmp) / "model.hrf")
    ...     files = sorted(p.name for p in Path(tmp).iterdir())
    ...     back = read_payload(path)
    >>> path.name, files
    ('model.hrf', ['model.hrf'])
    >>> back["arrays"]["a0"].tolist()
    [0.0, 1.0, 2.0]
    """
    path = _check_path(path)
    if path.is_dir():
        raise ValueError(f"The 'path' argument {str(path)!r} is a directory; give a file name.")
    if not path.parent.is_dir():
        raise ValueError(
            f"The 'path' argument {str(path)!r} is in a folder that does not exist; give a file "
            "in an existing folder."
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_payload(path) -> dict:
    """Read and check a payload with ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_estimator`, or a checkpoint folder (its newest
        checkpoint is read).

    Returns
    -------
    payload : dict

    Raises
    ------
    ValueError
        If the file is not an hrflow estimator file, has an invalid format version
        (not an int of at least 1), or comes from a newer format.
    FileNotFoundError
        If there is no such file (or no checkpoint in the folder).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "arrays": {}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     back = read_payload(write_payload(payload, Path(tmp) / "model.hrf"))
    >>> back["format"], back["format_version"]
    ('hrflow.estimator', 1)

    A file without the marker, or from a newer format, is refused:

    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save({"weights": torch.zeros(2)}, Path(tmp) / "other.pt")
    ...     read_payload(Path(tmp) / "other.pt")
    Traceback (most recent call last):
    ...
    ValueError: '...other.pt' is not an hrflow estimator file (no 'hrflow.estimator' marker).
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     newer = dict(payload, format_version=FORMAT_VERSION + 1)
    ...     read_payload(write_payload(newer, Path(tmp) / "new.hrf"))
    Traceback (most recent call last):
    ...
    ValueError: '...new.hrf' was written by a newer hrflow (file format version ...
    """
    path = _check_path(path)
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"no hrflow checkpoint ({CHECKPOINT_GLOB}) in folder {str(path)!r}")
        path = newest
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        raise ValueError(
            f"{str(path)!r} is not an hrflow estimator file (or it is damaged): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(path)!r} is not an hrflow estimator file (no '{FORMAT_NAME}' marker).")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{str(path)!r} has an invalid format version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by a newer hrflow (file format version {version}, "
            f"hrflow {payload.get('hrflow_version', '?')}); this hrflow reads versions up to "
            f"{FORMAT_VERSION}. Upgrade hrflow to load it."
        )
    return payload


def available_device(device) -> torch.device:
    """The stored device if it is usable here, else the CPU (with a warning).

    Parameters
    ----------
    device : str or torch.device
        Device a model was trained on.

    Returns
    -------
    device : torch.device

    Examples
    --------
    >>> available_device("cpu")
    device(type='cpu')
    """
    dev = torch.device(device)
    usable = dev.type == "cpu" or (
        dev.type == "cuda" and torch.cuda.is_available()
        and (dev.index or 0) < torch.cuda.device_count()
    ) or (dev.type == "mps" and torch.backends.mps.is_available())
    if usable:
        return dev
    warnings.warn(
        f"the model was trained on {dev}, which is not available here; it is loaded on the CPU. "
        "Pass device=... to load, or set_params(device='cpu') before a warm-start fit.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return torch.device("cpu")


def restore_estimator(cls, payload: dict, device=None):
    """Rebuild a fitted estimator from a payload.

    Parameters
    ----------
    cls : type
        The estimator class (``HRFEstimator``).
    payload : dict
        Output of :func:`read_payload`.
    device : str, torch.device or None, default=None
        Where to put the field; None: the device it was trained on if available
        here, else the CPU (with a warning).

    Returns
    -------
    estimator : cls

    Raises
    ------
    ValueError
        If the payload holds another class, or is not a valid estimator file:
        a section is missing, the parameters are not valid JSON or do not fit
        the stored weights (names, shapes), or a weight is NaN or infinite.
        The original error is chained.
    ValueError or TypeError
        If ``device`` is not a valid, available device.

    Examples
    --------
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> restored = restore_estimator(HRFEstimator, estimator_payload(est))
    >>> restored is est, restored.get_params() == est.get_params()
    (False, True)
    >>> restored.n_iter_, restored.device_, type(restored.optimizer_).__name__
    (2, device(type='cpu'), 'AdamW')

    The restored model samples exactly as the original:

    >>> np.array_equal(restored.sample(4, random_state=0), est.sample(4, random_state=0))
    True
    """
    from ._device import resolve_device

    if payload.get("class") != cls.__name__:
        raise ValueError(f"the file holds a {payload.get('class')!r}, not a {cls.__name__!r}.")
    dev = None if device is None else resolve_device(device)  # checked before the file's parts
    try:
        arrays = payload["arrays"]
        params = {k: decode_value(v, arrays) for k, v in json.loads(payload["params"]).items()}
        est = cls(**params)
        attributes = {
            k: decode_value(v, arrays) for k, v in json.loads(payload["attributes"]).items()
        }
        if dev is None:
            dev = available_device(attributes.get("device_", torch.device("cpu")))
        attributes["device_"] = dev
        for key, value in attributes.items():
            setattr(est, key, value)

        state = payload["field_state"]
        module_states = payload.get("module_states", {})
        for name, weights in [("field_state", state), *module_states.items()]:
            _check_finite_weights(weights, name)
        with torch.random.fork_rng(devices=[]):  # building initialises weights: keep global RNG
            torch.manual_seed(0)
            field = est._build_field(int(est.n_features_in_))
        if list(field.event_shape) != list(payload["field_event_shape"]):
            raise ValueError(
                f"the rebuilt field has event shape {field.event_shape}, the file "
                f"{tuple(payload['field_event_shape'])}."
            )
        floats = [v.dtype for v in state.values() if v.is_floating_point()]
        if floats:
            field = field.to(dtype=floats[0])
        field.load_state_dict(state)
        est.field_ = field.to(dev).eval()
        for key, module_state in module_states.items():
            module = copy.deepcopy(est.field_)
            module.load_state_dict(module_state)
            setattr(est, key, module.eval())
        est.optimizer_ = None
        if payload.get("optimizer_state") is not None:
            opt = est._build_optimizer(est.field_)
            opt.load_state_dict(payload["optimizer_state"])
            est.optimizer_ = opt
    except torch.cuda.OutOfMemoryError:  # a RuntimeError, but not the file's fault
        raise
    except (KeyError, IndexError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        # missing sections, bad JSON, unknown or mismatched parameters, wrong tensor shapes
        raise ValueError(
            "the file is not a valid hrflow estimator file (it is damaged, or its parameters "
            f"and weights do not match): {type(exc).__name__}: {exc}"
        ) from exc
    return est


def _check_finite_weights(state: dict, name: str) -> None:
    """Raise ValueError if a floating tensor of the ``state_dict`` ``state`` is not finite."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"the stored weights {name!r} hold NaN or infinite values (in {bad}).")


def save_estimator(estimator, path) -> Path:
    """Save a fitted estimator in the safe format (see the module docstring).

    Parameters
    ----------
    estimator : HRFEstimator
        A fitted estimator.
    path : str or os.PathLike
        Destination file (conventionally ``*.hrf``).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` is a folder, or its folder does not exist.
    TypeError
        If ``path`` is not a str or os.PathLike, or a parameter or attribute
        cannot be stored safely.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_estimator(est, Path(tmp) / "model.hrf")
    ...     payload = read_payload(path)
    >>> path.name, payload["class"]
    ('model.hrf', 'HRFEstimator')

    Values that are code cannot be stored safely:

    >>> _ = est.set_params(source=lambda n, rng: rng.normal(size=(n, 2)))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_estimator(est, Path(tmp) / "model.hrf")
    Traceback (most recent call last):
    ...
    TypeError: parameter 'source': a callable (...) is code and cannot be stored ...
    """
    path = _check_path(path)
    return write_payload(estimator_payload(estimator), path)


def load_estimator(cls, path, device=None):
    """Load an estimator written by :func:`save_estimator` (or a checkpoint).

    Parameters
    ----------
    cls : type
        The estimator class.
    path : str or os.PathLike
        A file, or a checkpoint folder (its newest checkpoint is loaded).
    device : str, torch.device or None, default=None
        See :func:`restore_estimator`.

    Returns
    -------
    estimator : cls

    Raises
    ------
    ValueError
        If the file is not a valid hrflow estimator file (see :func:`read_payload`
        and :func:`restore_estimator`), or ``device`` is not a valid device.
    FileNotFoundError
        If there is no such file (or no checkpoint in the folder).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     loaded = load_estimator(HRFEstimator, save_estimator(est, Path(tmp) / "model.hrf"))
    >>> type(loaded).__name__, loaded.n_features_in_, loaded.device_
    ('HRFEstimator', 2, device(type='cpu'))
    >>> loaded.get_params() == est.get_params()
    True
    >>> np.array_equal(loaded.sample(4, random_state=0), est.sample(4, random_state=0))
    True
    """
    return restore_estimator(cls, read_payload(path), device=device)


# ------------------------------------------------------------- checkpoints
def checkpoint_path(directory, n_iter: int) -> Path:
    """File name of the checkpoint taken after ``n_iter`` iterations.

    Examples
    --------
    >>> checkpoint_path("ckpt", 250).name
    'checkpoint-000000250.hrf'
    """
    return Path(directory) / f"checkpoint-{int(n_iter):09d}.hrf"


def list_checkpoints(directory) -> list[Path]:
    """Checkpoints in ``directory``, oldest first (by modification time, then name).

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    paths : list of pathlib.Path

    Examples
    --------
    Empty stand-in files, with their modification times set by hand: the order
    is by time, not by iteration count, and other files are ignored.

    >>> import os
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for n_iter, seconds in [(300, 1_000), (100, 2_000), (200, 3_000)]:
    ...         path = checkpoint_path(tmp, n_iter)
    ...         path.touch()
    ...         os.utime(path, ns=(seconds * 10**9, seconds * 10**9))
    ...     open(os.path.join(tmp, "notes.txt"), "w").close()
    ...     names = [p.name for p in list_checkpoints(tmp)]
    >>> names
    ['checkpoint-000000300.hrf', 'checkpoint-000000100.hrf', 'checkpoint-000000200.hrf']
    >>> list_checkpoints("no-such-folder")
    []
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _CHECKPOINT_RE.match(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def latest_checkpoint(directory) -> Path | None:
    """The newest checkpoint in ``directory``, or None.

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    path : pathlib.Path or None

    Examples
    --------
    The newest by modification time (set by hand on empty stand-in files):

    >>> import os
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print(latest_checkpoint(tmp))
    ...     for n_iter, seconds in [(100, 1_000), (200, 2_000)]:
    ...         path = checkpoint_path(tmp, n_iter)
    ...         path.touch()
    ...         os.utime(path, ns=(seconds * 10**9, seconds * 10**9))
    ...     print(latest_checkpoint(tmp).name)
    None
    checkpoint-000000200.hrf
    """
    found = list_checkpoints(directory)
    return found[-1] if found else None


def write_checkpoint(estimator, directory, keep: int = 1) -> Path:
    """Save ``estimator`` as a checkpoint and delete all but the ``keep`` newest.

    The checkpoint is an ordinary safe-format file (with the optimizer state):
    ``HRFEstimator.load(directory)`` loads the newest one, and
    ``.set_params(warm_start=True).fit(X)`` trains it for ``n_iter`` more
    iterations: a new training call (fresh learning-rate schedule, new batches),
    not the rest of the interrupted one.

    Parameters
    ----------
    estimator : HRFEstimator
        The estimator being fitted (its fitted attributes describe the model so far).
    directory : str or os.PathLike
        Existing folder.
    keep : int, default=1
        Number of checkpoints kept in the folder.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     checkpoint_path(tmp, 1).touch()  # an older checkpoint (empty stand-in)
    ...     path = write_checkpoint(est, tmp, keep=1)
    ...     names = [p.name for p in list_checkpoints(tmp)]
    ...     resumed = load_estimator(HRFEstimator, tmp)  # the newest checkpoint
    >>> path.name, names
    ('checkpoint-000000002.hrf', ['checkpoint-000000002.hrf'])
    >>> resumed.n_iter_, type(resumed.optimizer_).__name__
    (2, 'AdamW')
    """
    path = save_estimator(estimator, checkpoint_path(directory, estimator.n_iter_))
    # the newest by time, even if it overwrote an older file of the same name or another
    # file's time lies ahead of this clock (a shared filesystem): never the one deleted
    others = [p for p in list_checkpoints(directory) if p != path]
    newest = max([time.time_ns()] + [p.stat().st_mtime_ns + 1 for p in others])
    os.utime(path, ns=(newest, newest))
    for old in others[:max(len(others) - (keep - 1), 0)]:
        old.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------- pickling
def _cpu_module_copy(module: torch.nn.Module) -> torch.nn.Module:
    """Deep copy of a module with every parameter and buffer on the CPU.

    The tensors are moved one by one (through ``deepcopy``'s memo), so a GPU module
    is not duplicated on the GPU first. CPU tensors are shared, not copied.
    """
    memo: dict = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().to("cpu"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().to("cpu")
    return copy.deepcopy(module, memo)


_OPTIMIZER_KEY = "__hrflow_optimizer_state__"


def portable_state(state: dict) -> dict:
    """A pickle-ready copy of an estimator's ``__dict__`` with every tensor on the CPU.

    Modules become CPU copies: the fitted ones (``field_``, ``ema_field_``) and a
    network passed as the ``field`` parameter alike; ``optimizer_`` becomes its CPU
    ``state_dict`` (rebuilt by :func:`restore_portable_state`), top-level tensors
    move to the CPU.

    Parameters
    ----------
    state : dict
        ``estimator.__dict__`` (not modified).

    Returns
    -------
    state : dict

    Examples
    --------
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> state = portable_state(vars(est))
    >>> state["field_"] is est.field_, next(state["field_"].parameters()).device
    (False, device(type='cpu'))
    >>> sorted(state["optimizer_"]) == ["__hrflow_optimizer_state__"]
    True

    The estimator itself is not changed:

    >>> type(est.optimizer_).__name__
    'AdamW'
    """
    out = dict(state)
    if isinstance(out.get("optimizer_"), torch.optim.Optimizer):
        out["optimizer_"] = {_OPTIMIZER_KEY: _cpu_tree(out["optimizer_"].state_dict())}
    copies: dict = {}  # one copy per module: the field parameter and its record in _fit_params

    def cpu(module):
        if id(module) not in copies:
            copies[id(module)] = _cpu_module_copy(module)
        return copies[id(module)]

    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.detach().to("cpu")
        elif isinstance(value, torch.nn.Module):  # field_, ema_field_, a field= parameter
            out[key] = cpu(value)
        elif key == "_fit_params" and isinstance(value, dict):  # the parameters fit saw
            out[key] = {k: cpu(v) if isinstance(v, torch.nn.Module) else v for k, v in value.items()}
    return out


def restore_portable_state(estimator) -> None:
    """Finish unpickling: pick a usable device, move the modules there, rebuild the optimizer.

    Parameters
    ----------
    estimator : HRFEstimator
        Whose ``__dict__`` was just restored from :func:`portable_state`'s output.

    Examples
    --------
    What unpickling an estimator does, step by step:

    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(8, 2))
    >>> est = HRFEstimator(depth=1, n_iter=2, batch_size=16, hidden_size=8, device="cpu",
    ...                    random_state=0).fit(X)
    >>> clone = HRFEstimator.__new__(HRFEstimator)
    >>> clone.__dict__.update(portable_state(vars(est)))
    >>> type(clone.optimizer_).__name__
    'dict'
    >>> restore_portable_state(clone)
    >>> clone.device_, type(clone.optimizer_).__name__
    (device(type='cpu'), 'AdamW')
    >>> expected = est.sample(4, random_state=0)
    >>> np.array_equal(clone.sample(4, random_state=0), expected)
    True

    :mod:`pickle` (``pickle.loads(pickle.dumps(est))``) and :func:`copy.deepcopy`
    go through the same two functions, in ``__getstate__`` and ``__setstate__``:

    >>> import copy
    >>> again = copy.deepcopy(est)
    >>> type(again.optimizer_).__name__, np.array_equal(again.sample(4, random_state=0), expected)
    ('AdamW', True)
    """
    if "device_" in vars(estimator):
        estimator.device_ = available_device(estimator.device_)
    for key, value in vars(estimator).items():
        if isinstance(value, torch.nn.Module) and key.endswith("_"):
            value.to(estimator.device_)
    field = getattr(estimator, "field_", None)
    opt = getattr(estimator, "optimizer_", None)
    if isinstance(opt, dict) and _OPTIMIZER_KEY in opt:
        rebuilt = estimator._build_optimizer(field)
        rebuilt.load_state_dict(opt[_OPTIMIZER_KEY])
        estimator.optimizer_ = rebuilt
