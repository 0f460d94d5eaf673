"""Plans: set from a template by the care team, changed only as new versions, each with its reason."""
import pytest

from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from tests.factories import make_admin, make_clinician, make_team
from therapy import plans, services
from therapy.domain import Direction, ExclusionKind
from therapy.models import PlanVersion
from therapy.selectors import plan_current

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinician(team):
    return make_clinician(team=team).user


def test_a_care_team_clinician_sets_a_plan_from_a_template(patient, clinician):
    plan = services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="new diagnosis, stage 2")
    assert (plan.version, plan.current_rung, plan.target_sbp_mmhg, plan.target_dbp_mmhg) == (1, 0, 135.0, 85.0)
    ladder = plans.ladder_of(plan)
    assert ladder.describe(0) == "lisinopril 10 mg once daily"
    assert ladder.describe(ladder.top) == ("lisinopril 40 mg once daily + amlodipine 10 mg once daily"
                                           " + hydrochlorothiazide 25 mg once daily")
    # Nothing is automatic until the clinician allows it.
    assert plans.bounds_of(plan).auto_directions == frozenset()
    event = AuditEvent.objects.filter(action="plan.create").get()
    assert event.actor_user == clinician and event.detail["reason"] == "new diagnosis, stage 2"


def test_a_change_is_a_new_version_and_the_old_one_stays(patient, clinician):
    first = services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start")
    second = services.plan_change(actor=clinician, patient=patient, reason="diabetic: high risk",
                                  target_sbp_mmhg=130.0, target_dbp_mmhg=80.0, auto_step_up=True, max_auto_rung=2)
    first.refresh_from_db()
    assert (first.version, first.target_sbp_mmhg, first.auto_step_up) == (1, 135.0, False)
    assert (second.version, second.target_sbp_mmhg, second.ladder) == (2, 130.0, first.ladder)
    assert plans.bounds_of(second).auto_directions == frozenset({Direction.UP})
    assert plan_current(patient) == second
    event = AuditEvent.objects.filter(action="plan.change").get()
    assert event.detail["changed"] == ["auto_step_up", "max_auto_rung", "target_dbp_mmhg", "target_sbp_mmhg"]
    assert event.detail["reason"] == "diabetic: high risk"


def test_an_exclusion_is_part_of_the_plan(patient, clinician):
    services.plan_create(actor=clinician, patient=patient, template="arb-ccb-thiazide", reason="start")
    plan = services.plan_change(actor=clinician, patient=patient, reason="ECG shows AF",
                                exclusions=[{"kind": "irregular rhythm", "detail": "atrial fibrillation"}])
    [exclusion] = plans.exclusions_of(plan)
    assert exclusion.kind is ExclusionKind.IRREGULAR_RHYTHM and exclusion.describe() == "irregular rhythm (atrial fibrillation)"


@pytest.mark.parametrize("who", ["outsider", "patient", "admin"])
def test_only_a_clinician_of_the_care_team_may_set_the_plan(patient, who):
    actor = {"outsider": lambda: make_clinician(team=make_team()).user, "patient": lambda: patient.user,
             "admin": make_admin}[who]()
    with pytest.raises(ApplicationError, match="care team") as refused:
        services.plan_create(actor=actor, patient=patient, template="ace-ccb-thiazide", reason="x")
    assert refused.value.status_code == 403
    assert not PlanVersion.objects.exists()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"reason": "  "}, "reason"),
        ({"current_rung": 9}, "current_rung"),
        ({"max_auto_rung": 7}, "max_auto_rung"),
        ({"step_down_sbp_mmhg": 140.0}, "plan"),
        ({"min_usable_window_share": 1.5}, "plan"),
        ({"exclusions": [{"kind": "left-handed"}]}, "plan"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_change_is_refused_by_field_and_stores_nothing(patient, clinician, changes, field):
    services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start")
    reason = changes.pop("reason", "adjust")
    with pytest.raises(ApplicationError) as refused:
        services.plan_change(actor=clinician, patient=patient, reason=reason, **changes)
    assert field in refused.value.extra["fields"]
    assert PlanVersion.objects.count() == 1
    assert not AuditEvent.objects.filter(action="plan.change").exists()
