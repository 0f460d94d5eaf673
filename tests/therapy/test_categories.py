import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from therapy.categories import BpCategory, bp_category


@pytest.mark.parametrize(("sbp", "dbp", "expected"), [
    (119, 79, BpCategory.NORMAL), (120, 79, BpCategory.ELEVATED), (129, 79, BpCategory.ELEVATED),
    (125, 80, BpCategory.STAGE_1), (130, 70, BpCategory.STAGE_1), (139, 89, BpCategory.STAGE_1),
    (140, 70, BpCategory.STAGE_2), (118, 90, BpCategory.STAGE_2), (179, 119, BpCategory.STAGE_2),
    (180, 70, BpCategory.SEVERE), (150, 120, BpCategory.SEVERE),
])
def test_the_acc_aha_2017_boundaries(sbp, dbp, expected):
    assert bp_category(sbp, dbp) is expected


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_an_unknown_value_has_no_category(bad):
    assert bp_category(bad, 80) is None and bp_category(130, bad) is None


@given(st.floats(40, 300), st.floats(20, 200), st.floats(0, 50))
def test_a_higher_pressure_never_has_a_lower_category(sbp, dbp, more):
    order = list(BpCategory)
    assert order.index(bp_category(sbp + more, dbp)) >= order.index(bp_category(sbp, dbp))
    assert order.index(bp_category(sbp, dbp + more)) >= order.index(bp_category(sbp, dbp))
