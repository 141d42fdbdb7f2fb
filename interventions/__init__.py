"""Acting on located circuits: reversible, composable edits of a :class:`~lens.model.LensModel`."""

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

__all__ = [
    "ABLATION_MODES",
    "DIRECTION_MODES",
    "SITES",
    "Edit",
    "ablate",
    "active_edits",
    "output_weights",
    "project_out_weights",
    "resolve_components",
    "scale",
    "subtract_direction",
    "undo_all",
]
