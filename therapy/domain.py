"""Plain values shared by the therapy rules (titration, routing, escalation).

No Django, no ORM, no clock: frozen dataclasses and enums only. The models and services build
these from rows and hand them to the pure functions in `therapy.titration`, `therapy.routing`
and `therapy.escalation`.

Units and conventions
- Blood pressure in mmHg; prediction intervals as a half-width ("90 % interval +/-8 mmHg").
- Durations in days (float); times are timezone-aware datetimes (UTC is assumed for "distinct
  days").
- Shares (adherence, usable windows) are fractions 0..1 and shown to people as %.
- Rungs are numbered from 0 in code (`Ladder.rungs[0]` is the first, mildest rung) and from 1 in
  words shown to clinicians ("rung 2 of 7").
"""
from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field

from therapy.evidence import CuffEvidence, CuffSeries, HomeMonitoringProtocol, TrustBounds, WearableAgreement

# --------------------------------------------------------------------------------------------
# Medication ladders


class Frequency(str, enum.Enum):
    """How often a dose is taken."""

    ONCE_DAILY = "once daily"
    TWICE_DAILY = "twice daily"
    THREE_TIMES_DAILY = "three times daily"


@dataclass(frozen=True)
class Dose:
    """One drug at one strength: `dose_mg` milligrams per intake, `frequency` intakes."""

    drug: str
    dose_mg: float
    frequency: Frequency = Frequency.ONCE_DAILY

    def __post_init__(self) -> None:
        if not self.drug.strip():
            raise ValueError("a dose names its drug")
        if not (math.isfinite(self.dose_mg) and self.dose_mg > 0):
            raise ValueError(f"dose of {self.drug} must be a positive number of mg, got {self.dose_mg}")

    def describe(self) -> str:
        """E.g. "lisinopril 20 mg once daily" (12.5 stays 12.5, 20.0 becomes 20)."""
        mg = f"{self.dose_mg:g}"
        return f"{self.drug} {mg} mg {self.frequency.value}"


@dataclass(frozen=True)
class Rung:
    """One rung of a ladder: a complete regimen (every drug the patient takes at that rung)."""

    doses: tuple[Dose, ...]

    def __post_init__(self) -> None:
        if not self.doses:
            raise ValueError("a rung is a regimen of at least one dose")
        drugs = [d.drug.lower() for d in self.doses]
        if len(set(drugs)) != len(drugs):
            raise ValueError(f"a rung lists each drug once, got {drugs}")

    def describe(self) -> str:
        """E.g. "lisinopril 20 mg once daily + amlodipine 5 mg once daily"."""
        return " + ".join(d.describe() for d in self.doses)


Regimen = Rung  # the clinic's word for what a rung holds


@dataclass(frozen=True)
class Ladder:
    """Ordered rungs, mildest first; titration moves one rung at a time."""

    name: str
    rungs: tuple[Rung, ...]

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("a ladder has at least one rung")

    @property
    def top(self) -> int:
        """Index of the highest rung."""
        return len(self.rungs) - 1

    def has(self, index: int) -> bool:
        return 0 <= index < len(self.rungs)

    def describe(self, index: int) -> str:
        """The regimen at rung `index` (0-based), in words."""
        if not self.has(index):
            raise IndexError(f"rung {index} is not on ladder {self.name!r} (0..{self.top})")
        return self.rungs[index].describe()

    def label(self, index: int) -> str:
        """E.g. "rung 2 of 7 (lisinopril 20 mg once daily)"; 1-based for people."""
        return f"rung {index + 1} of {len(self.rungs)} ({self.describe(index)})"


def stepped_ladder(name: str, steps: tuple[tuple[str, tuple[float, ...], Frequency], ...]) -> Ladder:
    """Build a cumulative ladder: raise the first drug through its doses, then add the next drug at
    its lowest dose (keeping the earlier ones at their highest), and so on.

    `steps` = ((drug, doses in mg ascending, frequency), ...)."""
    rungs: list[Rung] = []
    held: list[Dose] = []
    for drug, doses_mg, frequency in steps:
        if not doses_mg or list(doses_mg) != sorted(doses_mg):
            raise ValueError(f"doses of {drug} must be given ascending, got {doses_mg}")
        for mg in doses_mg:
            rungs.append(Rung(doses=(*held, Dose(drug, mg, frequency))))
        held.append(Dose(drug, doses_mg[-1], frequency))
    return Ladder(name=name, rungs=tuple(rungs))


ACE_CCB_THIAZIDE = stepped_ladder(
    "ACE inhibitor, then + calcium-channel blocker, then + thiazide",
    (
        ("lisinopril", (10.0, 20.0, 40.0), Frequency.ONCE_DAILY),
        ("amlodipine", (5.0, 10.0), Frequency.ONCE_DAILY),
        ("hydrochlorothiazide", (12.5, 25.0), Frequency.ONCE_DAILY),
    ),
)
ARB_CCB_THIAZIDE = stepped_ladder(
    "ARB, then + calcium-channel blocker, then + thiazide",
    (
        ("losartan", (50.0, 100.0), Frequency.ONCE_DAILY),
        ("amlodipine", (5.0, 10.0), Frequency.ONCE_DAILY),
        ("hydrochlorothiazide", (12.5, 25.0), Frequency.ONCE_DAILY),
    ),
)
LADDER_TEMPLATES: dict[str, Ladder] = {
    "ace-ccb-thiazide": ACE_CCB_THIAZIDE,
    "arb-ccb-thiazide": ARB_CCB_THIAZIDE,
}

# --------------------------------------------------------------------------------------------
# Plan rules and autonomy bounds


class Direction(str, enum.Enum):
    UP = "up"
    DOWN = "down"


# Below this share of logged doses taken, a step up is never automatic (docs/clinical-rules.md).
ADHERENCE_FLOOR_FOR_AUTOMATIC_STEP_UP = 0.80


@dataclass(frozen=True)
class PlanRules:
    """Per-patient titration rules (defaults: docs/clinical-rules.md).

    target_*_mmhg: the home mean must be below both (135/85; 130/80 for high-risk patients).
    look_back_days: evidence window ending at `now`, days.
    min_usable_estimates / min_distinct_days: data sufficiency (>= 12 on >= 4 distinct UTC days).
    min_days_between_changes: minimum interval before another step up, days (28).
    step_down_sbp_mmhg: mean SBP below this steps down one rung (110).
    series_*: the home cuff monitoring protocol (`protocol`): 7 days, the first discarded, >= 12
    readings on >= 4 days."""

    target_sbp_mmhg: float = 135.0
    target_dbp_mmhg: float = 85.0
    look_back_days: float = 7.0
    min_usable_estimates: int = 12
    min_distinct_days: int = 4
    min_days_between_changes: float = 28.0
    step_down_sbp_mmhg: float = 110.0
    series_days: int = 7
    series_discard_first_day: bool = True
    series_min_readings: int = 12
    series_min_days: int = 4

    def __post_init__(self) -> None:
        numbers = (self.target_sbp_mmhg, self.target_dbp_mmhg, self.look_back_days, self.min_days_between_changes,
                   self.step_down_sbp_mmhg)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise ValueError("plan rules are finite numbers")
        self.protocol  # noqa: B018 - the protocol checks its own numbers
        if not (self.step_down_sbp_mmhg < self.target_sbp_mmhg):
            raise ValueError("the step-down SBP must lie below the target SBP")
        if self.target_dbp_mmhg <= 0 or self.look_back_days <= 0:
            raise ValueError("target DBP and look-back must be positive")
        if self.min_usable_estimates < 1 or self.min_distinct_days < 1:
            raise ValueError("data sufficiency needs at least one estimate on one day")
        if self.min_days_between_changes < 0:
            raise ValueError("the minimum interval between changes cannot be negative")

    @property
    def protocol(self) -> HomeMonitoringProtocol:
        return HomeMonitoringProtocol(series_days=self.series_days, discard_first_day=self.series_discard_first_day,
                                      min_readings=self.series_min_readings, min_days=self.series_min_days)


@dataclass(frozen=True)
class AutonomyBounds:
    """What a clinician lets the system release to the patient without review.

    auto_directions: directions that may auto-release; empty = none (the safe default).
    max_auto_rung: highest rung index (0-based) reachable automatically.
    max_interval_halfwidth_mmhg: widest mean prediction interval (+/- mmHg, SBP and DBP each).
    min_usable_window_share: minimum share (0..1) of recorded windows that passed quality.
    calibration_max_age_days: the cuff calibration must be at most this old, days.
    max_latest_estimate_age_days: the newest estimate must be at most this old, days (stale data).
    min_adherence_share: for a step up, share (0..1) of logged doses taken over the look-back;
        may be made stricter than 80 %, never looser.
    agreement_*: when the wearable may support an automatic change for this patient (`trust`):
        >= 5 prospective cuff pairs in 60 days, |bias| <= 5 mmHg, SD <= 8 mmHg."""

    auto_directions: frozenset[Direction] = frozenset()
    max_auto_rung: int = 0
    max_interval_halfwidth_mmhg: float = 10.0
    min_usable_window_share: float = 0.70
    calibration_max_age_days: float = 28.0
    max_latest_estimate_age_days: float = 2.0
    min_adherence_share: float = ADHERENCE_FLOOR_FOR_AUTOMATIC_STEP_UP
    agreement_period_days: float = 60.0
    agreement_min_pairs: int = 5
    agreement_max_bias_mmhg: float = 5.0
    agreement_max_sd_mmhg: float = 8.0

    def __post_init__(self) -> None:
        # An unknown bound must fail its check, never pass it: a NaN compares false with everything.
        numbers = (self.max_auto_rung, self.max_interval_halfwidth_mmhg, self.min_usable_window_share,
                   self.calibration_max_age_days, self.max_latest_estimate_age_days, self.min_adherence_share)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise ValueError("autonomy bounds are finite numbers")
        self.trust  # noqa: B018 - the trust bounds check their own numbers
        if self.min_adherence_share < ADHERENCE_FLOOR_FOR_AUTOMATIC_STEP_UP:
            raise ValueError("the adherence bound for an automatic step up cannot be below 80 %")
        if not 0.0 <= self.min_usable_window_share <= 1.0:
            raise ValueError("the usable-window share is a fraction 0..1")
        if self.max_auto_rung < 0 or self.max_interval_halfwidth_mmhg < 0 or self.calibration_max_age_days < 0:
            raise ValueError("bounds cannot be negative")

    @property
    def trust(self) -> TrustBounds:
        return TrustBounds(period_days=self.agreement_period_days, min_pairs=self.agreement_min_pairs,
                           max_abs_bias_mmhg=self.agreement_max_bias_mmhg, max_sd_mmhg=self.agreement_max_sd_mmhg)


# --------------------------------------------------------------------------------------------
# Evidence and patient state


@dataclass(frozen=True)
class EstimateEvidence:
    """One stored cuffless estimate of the active model (shadow-model estimates are never passed),
    or a cuff reading given to the escalation checks in the same shape (`cuff_reading_id` set,
    half-widths 0: see `from_cuff`).

    sbp/dbp in mmHg; *_halfwidth_mmhg: half-width of its prediction interval at `interval_level`
    (0.9 = 90 %); flags: why it may not support an automatic release (stale calibration, baseline
    model, ...), empty when it may."""

    recorded_at: dt.datetime
    sbp_mmhg: float
    dbp_mmhg: float
    sbp_halfwidth_mmhg: float
    dbp_halfwidth_mmhg: float
    interval_level: float = 0.90
    flags: tuple[str, ...] = ()
    estimate_id: int | None = None
    cuff_reading_id: int | None = None

    def __post_init__(self) -> None:
        if self.recorded_at.tzinfo is None:
            raise ValueError("estimate times must be timezone-aware")
        values = (self.sbp_mmhg, self.dbp_mmhg, self.sbp_halfwidth_mmhg, self.dbp_halfwidth_mmhg)
        if not all(math.isfinite(v) for v in values) or min(self.sbp_halfwidth_mmhg, self.dbp_halfwidth_mmhg) < 0:
            raise ValueError("an estimate has finite mmHg values and non-negative interval half-widths")
        if not 0.0 < self.interval_level < 1.0:
            raise ValueError("the interval level is a fraction, e.g. 0.9 for 90 %")

    @property
    def is_cuff(self) -> bool:
        return self.cuff_reading_id is not None

    @classmethod
    def from_cuff(cls, reading: CuffEvidence) -> EstimateEvidence:
        """A cuff reading as a reading for the escalation checks (crisis, low): a measurement, so
        its interval is the reading itself."""
        return cls(recorded_at=reading.measured_at, sbp_mmhg=reading.sbp_mmhg, dbp_mmhg=reading.dbp_mmhg,
                   sbp_halfwidth_mmhg=0.0, dbp_halfwidth_mmhg=0.0, cuff_reading_id=reading.reading_id or -1)


@dataclass(frozen=True)
class EstimateDay:
    """A patient's live estimates of one UTC day, summed as they arrived (monitoring keeps one per
    patient, day and model version): enough for the look-back's mean, its spread and its interval
    without reading each estimate again. Only a day with no crisis- or low-level estimate is ever
    passed as a sum; a day with one is read estimate by estimate, so the escalation checks see it.

    sum_*_mmhg / sum_sq_*_mmhg2: sums of the estimates' SBP/DBP (mmHg) and of their squares (mmHg^2);
    sum_*_halfwidth_mmhg: sums of the estimates' own interval half-widths (mmHg); first_at/last_at:
    the earliest and latest estimate's time; flags: every distinct flag of the day's estimates."""

    day: dt.date
    n: int
    sum_sbp_mmhg: float
    sum_dbp_mmhg: float
    sum_sq_sbp_mmhg2: float
    sum_sq_dbp_mmhg2: float
    min_sbp_mmhg: float
    max_sbp_mmhg: float
    min_dbp_mmhg: float
    max_dbp_mmhg: float
    sum_sbp_halfwidth_mmhg: float
    sum_dbp_halfwidth_mmhg: float
    min_interval_level: float
    n_flagged: int
    flags: tuple[str, ...]
    first_at: dt.datetime
    last_at: dt.datetime
    model_version: str = ""

    def __post_init__(self) -> None:
        # Fails closed: a sum that is not a finite number makes the evaluation fail (an urgent item).
        values = (self.sum_sbp_mmhg, self.sum_dbp_mmhg, self.sum_sq_sbp_mmhg2, self.sum_sq_dbp_mmhg2,
                  self.min_sbp_mmhg, self.max_sbp_mmhg, self.min_dbp_mmhg, self.max_dbp_mmhg,
                  self.sum_sbp_halfwidth_mmhg, self.sum_dbp_halfwidth_mmhg, self.min_interval_level)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"the estimates of {self.day} do not sum to finite mmHg values")
        if self.n < 1 or not 0 <= self.n_flagged <= self.n:
            raise ValueError(f"a day of estimates counts at least one estimate ({self.day}: {self.n})")
        if self.first_at.tzinfo is None or self.last_at.tzinfo is None or self.first_at > self.last_at:
            raise ValueError("a day's first and last estimate times are timezone-aware and in order")
        if not 0.0 < self.min_interval_level < 1.0:
            raise ValueError("the interval level is a fraction, e.g. 0.9 for 90 %")

    def sd_mmhg(self, target: str) -> float | None:
        """Sample standard deviation (mmHg) of the day's SBP or DBP estimates; None below 2."""
        if self.n < 2:
            return None
        total, squares = ((self.sum_sbp_mmhg, self.sum_sq_sbp_mmhg2) if target == "sbp"
                          else (self.sum_dbp_mmhg, self.sum_sq_dbp_mmhg2))
        return math.sqrt(max(0.0, (squares - total * total / self.n) / (self.n - 1)))


class Symptom(str, enum.Enum):
    CHEST_PAIN = "chest pain"
    FAINTING = "fainting"
    SEVERE_HEADACHE = "severe headache"
    SHORTNESS_OF_BREATH = "shortness of breath"
    NEUROLOGICAL = "neurological symptoms"
    DIZZINESS = "dizziness"
    LIGHTHEADED_ON_STANDING = "light-headedness on standing"
    OTHER = "other symptom"


RED_FLAG_SYMPTOMS = frozenset(
    {Symptom.CHEST_PAIN, Symptom.FAINTING, Symptom.SEVERE_HEADACHE, Symptom.SHORTNESS_OF_BREATH, Symptom.NEUROLOGICAL}
)
HYPOTENSION_SYMPTOMS = frozenset({Symptom.DIZZINESS, Symptom.LIGHTHEADED_ON_STANDING, Symptom.FAINTING})


@dataclass(frozen=True)
class SymptomReport:
    """A symptom the patient reported; report_id: the stored report, to tell one episode from another."""

    symptom: Symptom
    reported_at: dt.datetime
    detail: str = ""
    report_id: int | None = None

    def __post_init__(self) -> None:
        if self.reported_at.tzinfo is None:
            raise ValueError("report times must be timezone-aware")

    def describe(self) -> str:
        return f"{self.symptom.value} ({self.detail})" if self.detail else self.symptom.value


@dataclass(frozen=True)
class SideEffectReport:
    description: str
    reported_at: dt.datetime
    drug: str | None = None
    report_id: int | None = None

    def __post_init__(self) -> None:
        if self.reported_at.tzinfo is None:
            raise ValueError("report times must be timezone-aware")

    def describe(self) -> str:
        return f"{self.description} (on {self.drug})" if self.drug else self.description


class ExclusionKind(str, enum.Enum):
    PREGNANCY = "pregnancy"
    POSTURAL_HYPOTENSION = "postural hypotension"
    IRREGULAR_RHYTHM = "irregular rhythm"


@dataclass(frozen=True)
class Exclusion:
    """Set by a clinician; turns automatic changes off for the patient. detail: e.g. "atrial
    fibrillation"."""

    kind: ExclusionKind
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind.value} ({self.detail})" if self.detail else self.kind.value


@dataclass(frozen=True)
class PatientState:
    """Where the patient stands on the ladder and what they reported.

    current_rung: 0-based index on the plan's ladder.
    last_change_at: when the rung last changed (or the plan started); None = no change on record.
    adherence_share: share (0..1) of logged doses taken over the look-back; None = nothing logged."""

    current_rung: int
    last_change_at: dt.datetime | None = None
    adherence_share: float | None = None
    exclusions: frozenset[Exclusion] = frozenset()
    symptoms: tuple[SymptomReport, ...] = ()
    side_effects: tuple[SideEffectReport, ...] = ()


# --------------------------------------------------------------------------------------------
# Proposals, escalations, routing


class ProposalKind(str, enum.Enum):
    STEP_UP = "step_up"
    STEP_DOWN = "step_down"
    HOLD = "hold"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class EvidenceSummary:
    """The aggregate a proposal rests on, ending at `now`.

    source: which evidence decides (therapy.evidence.EvidenceSource: a complete home cuff series,
    else the wearable's estimates of the look-back, else none); mean_*_mmhg: the deciding mean (None
    without data); mean_*_halfwidth_mmhg: the interval half-width OF THAT MEAN (mmHg);
    interval_level: its level (0.9 = 90 %); n_estimates, n_distinct_days, days_covered, first_at,
    last_at, flags: the wearable's estimates in the look-back; estimate_ids: those read one by one,
    summed_days: the days taken as sums (EstimateDay), whose ids are not listed; wearable_mean_*: their
    mean; cuff_series: the home series with its counts; agreement: the wearable's agreement with
    the patient's cuff; usable_window_share: 0..1 or None if unknown; sufficient: the deciding
    source holds the plan's data rule (a complete series, or >= 12 estimates on >= 4 days)."""

    n_estimates: int
    n_distinct_days: int
    days_covered: float
    mean_sbp_mmhg: float | None
    mean_dbp_mmhg: float | None
    mean_sbp_halfwidth_mmhg: float | None
    mean_dbp_halfwidth_mmhg: float | None
    interval_level: float | None
    usable_window_share: float | None
    n_flagged: int
    flags: tuple[str, ...]
    first_at: dt.datetime | None
    last_at: dt.datetime | None
    estimate_ids: tuple[int, ...]
    sufficient: bool
    source: str = "wearable estimates"
    summed_days: tuple[dt.date, ...] = ()
    cuff_series: CuffSeries | None = None
    wearable_mean_sbp_mmhg: float | None = None
    wearable_mean_dbp_mmhg: float | None = None
    agreement: WearableAgreement | None = None


@dataclass(frozen=True)
class Proposal:
    """A proposed step (or a hold / an escalation to a clinician), with its evidence and the reasons
    in words. from_rung/to_rung are 0-based indices; equal for hold and escalate."""

    kind: ProposalKind
    from_rung: int
    to_rung: int
    from_regimen: str
    to_regimen: str
    evidence: EvidenceSummary
    reasons: tuple[str, ...]
    evaluated_at: dt.datetime

    @property
    def direction(self) -> Direction | None:
        if self.to_rung > self.from_rung:
            return Direction.UP
        if self.to_rung < self.from_rung:
            return Direction.DOWN
        return None


class EscalationKind(str, enum.Enum):
    CRISIS = "crisis"
    CONFIRMED_LOW_SBP = "confirmed low SBP"
    RED_FLAG_SYMPTOM = "red-flag symptom"
    HYPOTENSION_SYMPTOM = "hypotension symptom"
    SIDE_EFFECT = "side effect"
    EVALUATION_FAILING = "evaluation failing"


@dataclass(frozen=True)
class Escalation:
    """An urgent review item for a clinician; never acted on automatically.

    seek_care: the patient is told to seek care now (crisis, red-flag symptom); holds_increase: no
    step up while it stands (confirmed SBP < 100). estimate_ids / report_ids: what raised it; an
    escalation sharing one of them with an earlier one of the same kind is the same episode."""

    kind: EscalationKind
    reason: str
    at: dt.datetime
    seek_care: bool = False
    holds_increase: bool = False
    estimate_ids: tuple[int, ...] = ()
    urgent: bool = True
    report_ids: tuple[int, ...] = ()
    cuff_reading_ids: tuple[int, ...] = ()
    plan_version_ids: tuple[int, ...] = ()

    @property
    def sources(self) -> frozenset[str]:
        """What raised it, as "estimate:<id>" / "report:<id>" / "cuff:<id>" / "plan:<id>" (the plan
        version an evaluation failed on; ids of stored rows only)."""
        return frozenset({*(f"estimate:{i}" for i in self.estimate_ids), *(f"report:{i}" for i in self.report_ids),
                          *(f"cuff:{i}" for i in self.cuff_reading_ids if i >= 0),
                          *(f"plan:{i}" for i in self.plan_version_ids)})


class Route(str, enum.Enum):
    AUTO_RELEASE = "auto_release"  # goes to the patient's portal now
    REVIEW = "review"  # queued for a clinician, with every failing bound named
    INFORMATION = "information"  # a hold: nothing changes, nothing to release


@dataclass(frozen=True)
class RoutingDecision:
    route: Route
    reasons: tuple[str, ...] = field(default=())

    @property
    def auto_release(self) -> bool:
        return self.route is Route.AUTO_RELEASE
