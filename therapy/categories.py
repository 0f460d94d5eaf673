"""Blood-pressure categories (ACC/AHA 2017, mmHg), for showing a reading in words and colour.

Pure. The category of a pair is the higher of the two pressures' categories. Unknown, NaN or
infinite values have no category (None): nothing is shown as normal that was not measured.
"""
from __future__ import annotations

import enum
import math


class BpCategory(str, enum.Enum):
    NORMAL = "normal"
    ELEVATED = "elevated"
    STAGE_1 = "stage 1 hypertension"
    STAGE_2 = "stage 2 hypertension"
    SEVERE = "severe (hypertensive crisis range)"


# What a patient reads beside the category.
CATEGORY_ADVICE = {
    BpCategory.NORMAL: "in the normal range",
    BpCategory.ELEVATED: "a little above normal",
    BpCategory.STAGE_1: "high (stage 1)",
    BpCategory.STAGE_2: "high (stage 2)",
    BpCategory.SEVERE: "very high: repeat it after a minute of rest; if it stays this high, seek care now",
}


def bp_category(sbp_mmhg: float | None, dbp_mmhg: float | None) -> BpCategory | None:
    """The ACC/AHA 2017 category of one reading or mean: normal < 120 and < 80; elevated 120-129
    and < 80; stage 1 130-139 or 80-89; stage 2 >= 140 or >= 90; severe >= 180 or >= 120."""
    if sbp_mmhg is None or dbp_mmhg is None or not (math.isfinite(sbp_mmhg) and math.isfinite(dbp_mmhg)):
        return None
    if sbp_mmhg >= 180 or dbp_mmhg >= 120:
        return BpCategory.SEVERE
    if sbp_mmhg >= 140 or dbp_mmhg >= 90:
        return BpCategory.STAGE_2
    if sbp_mmhg >= 130 or dbp_mmhg >= 80:
        return BpCategory.STAGE_1
    if sbp_mmhg >= 120:
        return BpCategory.ELEVATED
    return BpCategory.NORMAL
