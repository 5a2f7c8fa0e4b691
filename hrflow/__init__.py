"""hrflow: Hierarchical Rectified Flow generative models with a scikit-learn API.

The distribution is called ``hrflow-learn`` (the PyPI name ``hrflow`` belongs to an
unrelated project); the import name is ``hrflow``.
"""

from .estimator import HRFEstimator, TrainingDivergedError

__version__ = "0.1.0"

__all__ = ["HRFEstimator", "TrainingDivergedError", "__version__"]
