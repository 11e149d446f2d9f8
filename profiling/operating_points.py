"""Named operating points (presets) picked from a validation cost-quality curve.

`quality` is the best validation accuracy; `balanced` the cheapest point within 1 point of it; `economy` the
cheapest within 5 points. Picking by tolerance below the best makes the three monotone in cost by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

from profiling.evaluation import CurvePoint

PRESET_TOLERANCE = {"quality": 0.0, "balanced": 0.01, "economy": 0.05}
PRESETS = tuple(PRESET_TOLERANCE)
DEFAULT_PRESET = "balanced"


def choose_operating_points(curve: Sequence[CurvePoint]) -> dict[str, CurvePoint]:
    """Per preset, the cheapest curve point whose accuracy is within its tolerance of the best (ties: lower lambda)."""
    if not curve:
        raise ValueError("an empty cost-quality curve has no operating points")
    best = max(p.accuracy for p in curve)
    chosen = {}
    for name, tolerance in PRESET_TOLERANCE.items():
        reaching = [p for p in curve if p.accuracy >= best - tolerance - 1e-12]
        chosen[name] = min(reaching, key=lambda p: (p.cost_per_query, p.cost_weight))
    return chosen
