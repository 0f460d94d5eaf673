"""Celery tasks of the therapy engine: thin wrappers that take ids."""
from __future__ import annotations

from celery import shared_task
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from patients.models import Patient
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion

# New estimates arrive in bursts (a batch upload): evaluate a patient once per minute at most.
DEBOUNCE_S = 60


@shared_task(name="therapy.tasks.evaluate_patient", autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=2, max_retries=8, ignore_result=True)
def evaluate_patient(patient_id: int) -> None:
    """Propose and route a step for one patient (a re-run stores nothing new while nothing changed)."""
    patient_therapy_evaluate(patient_id=patient_id, now=timezone.now())


def schedule_evaluation(patient_id: int) -> bool:
    """After new estimates: evaluate the patient in DEBOUNCE_S seconds, unless already scheduled."""
    if not cache.add(f"therapy:evaluate:{patient_id}", 1, DEBOUNCE_S):
        return False
    evaluate_patient.apply_async(args=[patient_id], countdown=DEBOUNCE_S)
    return True


@shared_task(name="therapy.tasks.evaluate_all_patients", ignore_result=True)
def evaluate_all_patients() -> int:
    """Daily: every patient with a plan is evaluated (data can go stale without new estimates)."""
    patient_ids = list(PlanVersion.objects.values_list("patient_id", flat=True).distinct())
    for patient_id in Patient.objects.filter(pk__in=patient_ids).values_list("id", flat=True):
        evaluate_patient.delay(patient_id)
    return len(patient_ids)
