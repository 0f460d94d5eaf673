"""Split-conformal prediction intervals: the half-width (mmHg) that covers the nominal share of held-out
errors. No Django inside.
"""
from __future__ import annotations

import math

import numpy as np

NOMINAL_COVERAGE = 0.90  # prediction interval level


def conformal_halfwidth(abs_residuals: np.ndarray, coverage: float = NOMINAL_COVERAGE) -> float:
    """Split-conformal half-width (mmHg): the ceil((n + 1) * coverage)-th smallest |residual| of
    held-out data, so that prediction +/- it covers a new exchangeable case with probability >=
    coverage. inf when n is too small for that level."""
    r = np.sort(np.abs(np.asarray(abs_residuals, dtype=np.float64)))
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    k = math.ceil((r.size + 1) * coverage)
    return float(r[k - 1]) if k <= r.size else math.inf
