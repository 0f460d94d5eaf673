"""The model registry: gated, audited promotion; one-step rollback; shadow mode; files verified by hash."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import Pipeline

from clinops.base.audit import SYSTEM
from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from monitoring.bp import feature_deltas, learning, registry
from monitoring.models import BPModelVersion, ModelStatus
from tests.factories import make_clinician

pytestmark = pytest.mark.django_db


def report(model_mae: float, *, carry_forward_mae: float = 5.0, population_mae: float = 15.0,
           me: float = 0.5, sd: float = 6.0, coverage: float = 90.0) -> dict:
    """An evaluation report as monitoring.bp.accuracy.evaluate writes it (only the numbers the gates read)."""
    per_target = {
        "model": {"mae_mmhg": model_mae, "mean_error_mmhg": me, "sd_error_mmhg": sd, "coverage_pct": coverage},
        "carry_forward": {"mae_mmhg": carry_forward_mae},
        "population_mean": {"mae_mmhg": population_mae},
    }
    return {"sbp": per_target, "dbp": per_target, "nominal_coverage_pct": 90.0}


def fitted(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, len(feature_deltas.FEATURES))), rng.normal(size=(40, 2))
    estimator = (next(iter(learning.carry_forward_estimator().values())) if kind == "baseline"
                 else MultiOutputRegressor(Pipeline([("regress", Ridge())])))
    return learning.estimator_to_bytes(estimator.fit(X, y))


def register(version: str, *, test_mae: float, kind: str = "learned", **validation) -> BPModelVersion:
    return registry.model_version_register(
        actor=SYSTEM, version=version, artifact=fitted(kind), trained_by="test", code_version="abc",
        data_fingerprint={"sha256": "f" * 64}, features=list(feature_deltas.FEATURES),
        hyperparameters={"estimator": learning.CARRY_FORWARD if kind == "baseline" else "ridge"},
        metrics={"test": report(test_mae), "validation": report(test_mae, **validation)},
        interval_level=0.9, interval_sbp_mmhg=12.0, interval_dbp_mmhg=8.0,
    )


def test_a_model_worse_than_the_carry_forward_baseline_cannot_be_promoted():
    worse = register("worse", test_mae=5.5)
    with pytest.raises(ApplicationError, match="does not beat the carry-forward baseline"):
        registry.model_version_promote(actor=SYSTEM, model=worse)
    worse.refresh_from_db()
    assert worse.status == ModelStatus.CANDIDATE
    assert not AuditEvent.objects.filter(action="bp_model.promote").exists()


@pytest.mark.parametrize("validation, words", [
    ({"sd": 9.0}, "SD of error"), ({"me": 6.0}, "mean error"), ({"coverage": 80.0}, "coverage"),
])
def test_a_model_outside_the_validation_thresholds_cannot_be_promoted(validation, words):
    model = register("off", test_mae=4.0, **validation)
    with pytest.raises(ApplicationError, match=words):
        registry.model_version_promote(actor=SYSTEM, model=model)


def test_promotion_is_audited_with_the_approver_and_rollback_restores_the_previous_model():
    approver = make_clinician().user
    first, second = register("first", test_mae=4.0), register("second", test_mae=3.5)
    registry.model_version_promote(actor=approver, model=first)
    registry.model_version_promote(actor=approver, model=second)
    first.refresh_from_db()
    assert (first.status, registry.model_active()) == (ModelStatus.RETIRED, second)
    second.refresh_from_db()
    assert second.approved_by == approver and second.previous_active == first
    event = AuditEvent.objects.filter(action="bp_model.promote").last()
    assert event.actor_user == approver and event.detail["replaced"] == "first"
    registry.model_version_rollback(actor=approver)
    assert registry.model_active() == first
    assert AuditEvent.objects.filter(action="bp_model.rollback").get().detail["from"] == "second"


def test_the_carry_forward_baseline_is_promoted_on_its_own_gates():
    baseline = register("baseline", test_mae=5.0, kind="baseline")
    assert registry.model_version_gates(baseline) == (True, [])
    registry.model_version_promote(actor=SYSTEM, model=baseline)
    assert registry.model_active() == baseline


def test_a_tampered_model_file_is_refused():
    model = register("tampered", test_mae=4.0)
    blob = bytearray(bytes(model.artifact))
    blob[-10] ^= 0xFF
    BPModelVersion.objects.filter(pk=model.pk).update(artifact=bytes(blob))
    model.refresh_from_db()
    with pytest.raises(registry.ModelFileTampered):
        registry.model_load(model)
    with pytest.raises(ApplicationError, match="refused"):
        registry.model_version_promote(actor=SYSTEM, model=model)
    assert registry.model_active() is None


def test_a_verified_model_loads_and_predicts():
    model = register("fine", test_mae=4.0)
    estimator = registry.model_load(model)
    assert estimator.predict(np.zeros((1, len(feature_deltas.FEATURES)))).shape == (1, 2)


def test_shadow_mode_is_audited_and_never_applies_to_the_active_model():
    active, candidate = register("active", test_mae=4.0), register("candidate", test_mae=4.5)
    registry.model_version_promote(actor=SYSTEM, model=active)
    registry.model_version_set_shadow(actor=SYSTEM, model=candidate, shadow=True)
    assert registry.model_shadows() == [candidate]
    with pytest.raises(ApplicationError):
        registry.model_version_set_shadow(actor=SYSTEM, model=active, shadow=True)
    assert AuditEvent.objects.filter(action="bp_model.shadow_on").count() == 1


def test_the_admin_promotes_through_the_gates_and_records_the_approver(client):
    from tests.factories import make_admin

    operator = make_admin()
    client.force_login(operator)
    worse, better = register("worse", test_mae=5.5), register("better", test_mae=4.0)
    url = "/admin/monitoring/bpmodelversion/"
    response = client.post(url, {"action": "promote", "_selected_action": [worse.pk]}, follow=True)
    assert "does not beat the carry-forward baseline" in response.content.decode()
    assert registry.model_active() is None
    client.post(url, {"action": "promote", "_selected_action": [better.pk]}, follow=True)
    better.refresh_from_db()
    assert registry.model_active() == better and better.approved_by == operator
    assert client.get(f"{url}{better.pk}/change/").status_code == 200


def test_a_model_without_a_finite_interval_cannot_be_registered():
    with pytest.raises(ApplicationError, match="finite"):
        registry.model_version_register(
            actor=SYSTEM, version="no-interval", artifact=fitted("learned"), trained_by="test", code_version="",
            data_fingerprint={}, features=list(feature_deltas.FEATURES), hyperparameters={}, metrics={},
            interval_level=0.9, interval_sbp_mmhg=float("inf"), interval_dbp_mmhg=8.0,
        )


def test_a_rollback_keeps_who_approved_the_model():
    approver, operator = make_clinician().user, make_clinician().user
    first, second = register("first", test_mae=4.0), register("second", test_mae=3.5)
    registry.model_version_promote(actor=approver, model=first)
    registry.model_version_promote(actor=approver, model=second)
    registry.model_version_rollback(actor=operator)
    first.refresh_from_db()
    assert first.approved_by == approver
    assert AuditEvent.objects.filter(action="bp_model.rollback").get().actor_user == operator
