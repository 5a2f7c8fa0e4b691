"""Neural fields with the hierarchical call signature, and a name registry."""

from __future__ import annotations

from .base import HierarchicalField
from .embedding import SinusoidalEmbedding
from .mlp import HierarchicalMLP
from .unet import HierarchicalUNet, n_parameters

__all__ = [
    "HierarchicalField",
    "HierarchicalMLP",
    "HierarchicalUNet",
    "SinusoidalEmbedding",
    "FIELDS",
    "n_parameters",
]

#: name -> field class; the estimator's ``field`` parameter picks from here
FIELDS: dict[str, type[HierarchicalField]] = {"mlp": HierarchicalMLP, "unet": HierarchicalUNet}
