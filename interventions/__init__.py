"""Acting on located circuits: reversible edits, steering, generation with a probe monitor and rollback,
and the evaluation harness (:mod:`interventions.evaluate`, imported on demand)."""

from interventions.edits import (
    ABLATION_MODES,
    DIRECTION_MODES,
    SITES,
    Edit,
    ablate,
    active_edits,
    output_weights,
    project_out_weights,
    resolve_components,
    scale,
    subtract_direction,
    undo_all,
)
from interventions.generate import generate
from interventions.policy import Generation, RollbackEvent, RollbackPolicy
from interventions.sampling import Sampling
from interventions.steering import (
    Steer,
    load_vector,
    mean_diff_vector,
    probe_vector,
    save_vector,
    steering,
    value_vector,
)

__all__ = [
    "ABLATION_MODES",
    "DIRECTION_MODES",
    "SITES",
    "Edit",
    "Generation",
    "RollbackEvent",
    "RollbackPolicy",
    "Sampling",
    "Steer",
    "ablate",
    "active_edits",
    "generate",
    "load_vector",
    "mean_diff_vector",
    "output_weights",
    "probe_vector",
    "project_out_weights",
    "resolve_components",
    "save_vector",
    "scale",
    "steering",
    "subtract_direction",
    "undo_all",
    "value_vector",
]
