"""hrflow: Hierarchical Rectified Flow generative models with a scikit-learn API."""

__version__ = "0.1.0"
