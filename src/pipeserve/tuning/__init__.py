"""The tuner: instances, batch sizes and windows chosen for a p99 target, offline
(``pipeserve tune``, :class:`Search`) and while a pipe serves (``autotune``, :class:`Controller`,
:class:`AutoTuner`). Standard library only; docs/tuning.md explains the search and its limits.
"""

from __future__ import annotations

from .model import FIXED_PRIOR, Cost, Load, Model, Prediction
from .sample import LatencyRecorder, NodeSample, Sample, quantile
from .search import Search, Trial, better, frontier
from .space import WINDOW_STEPS_MS, Bounds, Knobs, Move, Setting, Space

__all__ = [
    "FIXED_PRIOR",
    "WINDOW_STEPS_MS",
    "Bounds",
    "Cost",
    "Knobs",
    "LatencyRecorder",
    "Load",
    "Model",
    "Move",
    "NodeSample",
    "Prediction",
    "Sample",
    "Search",
    "Setting",
    "Space",
    "Trial",
    "better",
    "frontier",
    "quantile",
]
