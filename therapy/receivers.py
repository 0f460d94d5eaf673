"""What therapy does when monitoring stores new evidence: the handler monitoring hands it to
(monitoring/handoff.py), registered in TherapyConfig.ready. New estimates: a broker error asking
for an urgent evaluation reaches the worker's task, which retries. A new cuff reading: its
evaluations are sent once the reading commits (enqueue_on_commit), where a broker error is logged
and the reading stands; the patient's daily evaluation then sees it."""
from __future__ import annotations

from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError

from clinops.base.tasks import enqueue_on_commit
from monitoring.models import BPEstimate, CuffReading
from therapy.domain import EstimateEvidence
from therapy.escalation import REPEAT_WAIT, is_crisis_reading, is_low_reading, needs_escalation_check
from therapy.evidence import CuffEvidence
from therapy.tasks import REPORT_EVALUATION_QUEUE, evaluate_patient, request_evaluation


def escalation_check_of_new_estimates(estimates: list[BPEstimate]) -> None:
    """The escalation check of each new live estimate, in O(1) from the estimate itself: a crisis- or
    low-level reading (mmHg) asks for its patient's evaluation at once, on the windows' fast queue
    (the evaluation confirms it against the minutes before and raises the urgent item). Anything
    else waits for the patient's daily titration (therapy.tasks.evaluate_due_patients). A broker
    error for one patient does not stop the others; it is raised at the end, so the task retries."""
    patients = {e.patient_id for e in estimates
                if not e.shadow and needs_escalation_check(sbp_mmhg=e.sbp_mmhg, dbp_mmhg=e.dbp_mmhg)}
    failed = None
    for patient_id in sorted(patients):
        try:
            request_evaluation(patient_id, urgent=True)
        except (BrokerOperationalError, RedisError) as exc:  # the other patients are still checked
            failed = exc
    if failed is not None:
        raise failed


def evaluation_after_cuff_reading(reading: CuffReading) -> None:
    """Evaluate the patient once the new reading commits (a crisis reading must not wait; a complete
    series may decide). Once the wait for a repeat is over, an unrepeated crisis or low reading
    escalates on its own: evaluate again then (therapy.escalation's rule)."""
    enqueue_on_commit(evaluate_patient, reading.patient_id, queue=REPORT_EVALUATION_QUEUE)
    reading_as = EstimateEvidence.from_cuff(CuffEvidence(measured_at=reading.measured_at, sbp_mmhg=reading.sbp_mmhg,
                                                         dbp_mmhg=reading.dbp_mmhg))
    if is_crisis_reading(reading_as) or is_low_reading(reading_as):
        enqueue_on_commit(evaluate_patient, reading.patient_id, queue=REPORT_EVALUATION_QUEUE,
                          countdown=REPEAT_WAIT.total_seconds() + 30)


class TherapyHearsOfNewEvidence:
    """monitoring.handoff.NewEvidenceHandler: the escalation check of new estimates, and the
    evaluation a new cuff reading asks for."""

    def estimates_stored(self, estimates: list[BPEstimate]) -> None:
        escalation_check_of_new_estimates(estimates)

    def cuff_reading_stored(self, reading: CuffReading) -> None:
        evaluation_after_cuff_reading(reading)
