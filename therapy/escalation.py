"""Escalation to a clinician at once (docs/clinical-rules.md): never acted on automatically.

- Crisis: SBP >= 180 mmHg or DBP >= 120 mmHg, confirmed by two estimates within 30 min of each
  other; the patient is told to seek care.
- Confirmed low SBP: SBP < 100 mmHg on two estimates within 30 min; any increase is held.
- Red-flag symptoms: chest pain, fainting, severe headache, shortness of breath, neurological
  symptoms; the patient is told to seek care.
- Symptoms of low blood pressure (dizziness, light-headedness on standing, fainting): reviewed
  by a clinician; titration proposes a step down for them, never released on its own.
- Reported side effects.

- A crisis- or low-level cuff reading that the patient does not repeat within 5 min escalates on its
  own (crisis: seek care), as the portal asks them to measure again after a minute.

Pure: values in, a list of `Escalation` out; `now` is passed in. Only events in the look-back
(`now - look_back_days`, `now` + 5 min] count: a device clock running a few minutes fast must not
hide a crisis.
Flagged estimates count too: a flag says an estimate may not support an automatic release, not
that a dangerous reading may be ignored. Cuff readings are passed in the same shape
(`EstimateEvidence.from_cuff`) and confirm or are confirmed like any reading.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence

from therapy.domain import (
    HYPOTENSION_SYMPTOMS,
    RED_FLAG_SYMPTOMS,
    Escalation,
    EscalationKind,
    EstimateEvidence,
    SideEffectReport,
    SymptomReport,
)

CRISIS_SBP_MMHG = 180.0
CRISIS_DBP_MMHG = 120.0
LOW_SBP_MMHG = 100.0
CONFIRMATION_WINDOW = dt.timedelta(minutes=30)
DEFAULT_LOOK_BACK_DAYS = 7.0
# A crisis- or low-level CUFF reading asks the patient to measure again after a minute; a repeat is
# looked for this long after it, and once this wait is over without one the reading escalates on
# its own (a patient who does not repeat is not left without advice).
REPEAT_WINDOW = dt.timedelta(minutes=10)
REPEAT_WAIT = dt.timedelta(minutes=5)
# Device clocks run a little fast: evidence stamped up to this far after `now` still counts.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


def is_crisis_reading(estimate: EstimateEvidence) -> bool:
    """SBP >= 180 or DBP >= 120 mmHg (ACC/AHA 2017 severe)."""
    return estimate.sbp_mmhg >= CRISIS_SBP_MMHG or estimate.dbp_mmhg >= CRISIS_DBP_MMHG


def is_low_reading(estimate: EstimateEvidence) -> bool:
    """SBP < 100 mmHg."""
    return estimate.sbp_mmhg < LOW_SBP_MMHG


def needs_escalation_check(*, sbp_mmhg: float, dbp_mmhg: float) -> bool:
    """Whether one new reading (mmHg) must be checked against the patient's recent ones now rather
    than at the next daily evaluation: crisis- or low-level, or a value that is not a finite number
    (fails closed: an unknown reading is looked at, not waved through)."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (sbp_mmhg, dbp_mmhg)):
        return True
    return sbp_mmhg >= CRISIS_SBP_MMHG or dbp_mmhg >= CRISIS_DBP_MMHG or sbp_mmhg < LOW_SBP_MMHG


def _bp(e: EstimateEvidence) -> str:
    return f"{e.sbp_mmhg:.0f}/{e.dbp_mmhg:.0f} mmHg{' (cuff)' if e.is_cuff else ''}"


def confirmed_pair(
    estimates: Iterable[EstimateEvidence],
    predicate: Callable[[EstimateEvidence], bool],
    window: dt.timedelta = CONFIRMATION_WINDOW
) -> tuple[EstimateEvidence, EstimateEvidence] | None:
    """The latest two estimates both meeting `predicate` and at most `window` apart, or None."""
    hits = sorted((e for e in estimates if predicate(e)), key=lambda e: e.recorded_at)
    for i in range(len(hits) - 1, 0, -1):
        if hits[i].recorded_at - hits[i - 1].recorded_at <= window:
            return hits[i - 1], hits[i]
    return None


def _ids(*estimates: EstimateEvidence) -> tuple[int, ...]:
    return tuple(e.estimate_id for e in estimates if e.estimate_id is not None)


def _cuff_ids(*readings: EstimateEvidence) -> tuple[int, ...]:
    return tuple(e.cuff_reading_id for e in readings if e.cuff_reading_id is not None)


def _report_ids(report: SymptomReport | SideEffectReport) -> tuple[int, ...]:
    return (report.report_id,) if report.report_id is not None else ()


def _in_look_back(at: dt.datetime, now: dt.datetime, look_back: dt.timedelta) -> bool:
    return now - look_back < at <= now + FUTURE_TOLERANCE


def unrepeated_cuff_reading(
    readings: Sequence[EstimateEvidence], predicate: Callable[[EstimateEvidence], bool], *, now: dt.datetime
) -> EstimateEvidence | None:
    """The latest cuff reading meeting `predicate` that was not repeated: no other cuff reading in the
    REPEAT_WINDOW after it, and the REPEAT_WAIT for one is over at `now`."""
    cuff = sorted((r for r in readings if r.is_cuff), key=lambda r: r.recorded_at)
    for i in range(len(cuff) - 1, -1, -1):
        reading = cuff[i]
        if not predicate(reading) or now - reading.recorded_at < REPEAT_WAIT:
            continue
        repeated = any(reading.recorded_at < other.recorded_at <= reading.recorded_at + REPEAT_WINDOW
                       for other in cuff[i + 1:])
        if not repeated:
            return reading
    return None


def check_escalation(
    estimates: Sequence[EstimateEvidence],
    symptoms: Sequence[SymptomReport],
    side_effects: Sequence[SideEffectReport],
    *,
    now: dt.datetime,
    look_back_days: float = DEFAULT_LOOK_BACK_DAYS,
) -> list[Escalation]:
    """Every urgent review item among the estimates (mmHg), symptoms and side effects reported in
    the look-back (days) ending at `now`. One item for a confirmed crisis (the latest confirming
    pair), one for a confirmed low SBP, one per red-flag or low-pressure symptom report, one per
    side-effect report. Each names its reason in words."""
    look_back = dt.timedelta(days=look_back_days)
    recent = [e for e in estimates if _in_look_back(e.recorded_at, now, look_back)]
    items: list[Escalation] = []

    crisis = confirmed_pair(recent, is_crisis_reading)
    if crisis is not None:
        a, b = crisis
        minutes = (b.recorded_at - a.recorded_at).total_seconds() / 60.0
        items.append(Escalation(
            kind=EscalationKind.CRISIS,
            reason=(
                f"hypertensive crisis confirmed: {_bp(a)} and {_bp(b)} within {minutes:.0f} min "
                f"(threshold SBP >= {CRISIS_SBP_MMHG:.0f} or DBP >= {CRISIS_DBP_MMHG:.0f} mmHg); "
                "patient told to seek care now"
            ),
            at=b.recorded_at, seek_care=True, estimate_ids=_ids(a, b), cuff_reading_ids=_cuff_ids(a, b),
        ))

    else:
        single = unrepeated_cuff_reading(recent, is_crisis_reading, now=now)
        if single is not None:
            items.append(Escalation(
                kind=EscalationKind.CRISIS,
                reason=(
                    f"crisis-level cuff reading {_bp(single)} not repeated within {REPEAT_WAIT.seconds // 60} min "
                    f"(threshold SBP >= {CRISIS_SBP_MMHG:.0f} or DBP >= {CRISIS_DBP_MMHG:.0f} mmHg); "
                    "patient told to seek care now"
                ),
                at=single.recorded_at, seek_care=True, cuff_reading_ids=_cuff_ids(single),
            ))

    low = confirmed_pair(recent, is_low_reading)
    if low is None:
        single = unrepeated_cuff_reading(recent, is_low_reading, now=now)
        if single is not None:
            items.append(Escalation(
                kind=EscalationKind.CONFIRMED_LOW_SBP,
                reason=(f"low cuff reading: SBP {single.sbp_mmhg:.0f} mmHg, not repeated (below "
                        f"{LOW_SBP_MMHG:.0f} mmHg); any dose increase is held"),
                at=single.recorded_at, holds_increase=True, cuff_reading_ids=_cuff_ids(single),
            ))
    if low is not None:
        a, b = low
        minutes = (b.recorded_at - a.recorded_at).total_seconds() / 60.0
        items.append(Escalation(
            kind=EscalationKind.CONFIRMED_LOW_SBP,
            reason=(
                f"low blood pressure confirmed: SBP {a.sbp_mmhg:.0f} and {b.sbp_mmhg:.0f} mmHg within "
                f"{minutes:.0f} min (below {LOW_SBP_MMHG:.0f} mmHg); any dose increase is held"
            ),
            at=b.recorded_at, holds_increase=True, estimate_ids=_ids(a, b), cuff_reading_ids=_cuff_ids(a, b),
        ))

    for report in sorted(symptoms, key=lambda s: s.reported_at):
        if not _in_look_back(report.reported_at, now, look_back):
            continue
        if report.symptom in RED_FLAG_SYMPTOMS:
            items.append(Escalation(
                kind=EscalationKind.RED_FLAG_SYMPTOM,
                reason=f"red-flag symptom reported: {report.describe()}",
                at=report.reported_at, seek_care=True, holds_increase=True, report_ids=_report_ids(report),
            ))
        elif report.symptom in HYPOTENSION_SYMPTOMS:
            items.append(Escalation(
                kind=EscalationKind.HYPOTENSION_SYMPTOM,
                reason=f"symptom of low blood pressure reported: {report.describe()}",
                at=report.reported_at, holds_increase=True, report_ids=_report_ids(report),
            ))

    for effect in sorted(side_effects, key=lambda s: s.reported_at):
        if _in_look_back(effect.reported_at, now, look_back):
            items.append(Escalation(
                kind=EscalationKind.SIDE_EFFECT,
                reason=f"side effect reported: {effect.describe()}",
                at=effect.reported_at, report_ids=_report_ids(effect),
            ))
    return items
