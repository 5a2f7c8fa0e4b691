"""hrflow: Hierarchical Rectified Flow generative models with a scikit-learn API.

The distribution is called ``hrflow-learn`` (the PyPI name ``hrflow`` belongs to an
unrelated project); the import name is ``hrflow``.
"""

from ._compat import check_torch_numpy as _check_torch_numpy

_check_torch_numpy()

from .estimator import HRFEstimator, TrainingDivergedError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["HRFEstimator", "TrainingDivergedError", "__version__"]
