"""Evaluation metrics for attributions: infidelity, max-sensitivity, the
model-parameter randomization test and pixel flipping, each computed as a few
expanded batches with explicit randomness (``generator=``) and without
modifying the model.
"""

from ._flipping import auc, pixel_flipping
from ._infidelity import infidelity
from ._randomization import model_randomization
from ._sensitivity import sensitivity_max, uniform_perturbation
from ._similarity import average_ranks, similarity

__all__ = [
    "auc",
    "average_ranks",
    "infidelity",
    "model_randomization",
    "pixel_flipping",
    "sensitivity_max",
    "similarity",
    "uniform_perturbation",
]
