"""Which evidence may decide a dose change (README "Which evidence decides"): home cuff series and trusted
wearables.

Pure: values in, values out; `now` is passed in. Units: mmHg, days; times timezone-aware.

1. A complete home cuff series (the home-monitoring protocol of the plan: readings morning and
   evening, two a sitting about a minute apart, over `series_days` with the first day discarded,
   at least `min_readings` readings on at least `min_days` days). Guidelines and self-titration
   trials (TASMINH4) base dose changes on exactly this. Its mean is the mean of the kept readings;
   the interval of that mean comes from the spread of the SITTING means (two readings a minute
   apart are not independent) and their number (Student t).
2. Otherwise the wearable's estimates, which may support an automatic change only for a patient
   whose own prospective agreement with their cuff holds (`TrustBounds`: ISO 81060-2's numbers,
   applied to one patient). Each pair is a cuff reading taken while the wearable recorded, against
   the estimates of the minutes before it that were not calibrated on that reading.
"""
from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Protocol

from scipy.stats import t as student_t

# Readings closer than this to the previous one belong to the same sitting (two a sitting about a
# minute apart; a repeat after a crisis reading too).
SITTING_GAP = dt.timedelta(minutes=10)
# A reading stamped up to this far after `now` (a device clock running fast) still counts.
CLOCK_TOLERANCE = dt.timedelta(minutes=5)
INTERVAL_LEVEL = 0.90


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


class EvidenceSource(str, enum.Enum):
    CUFF_SERIES = "cuff series"
    WEARABLE = "wearable estimates"
    NONE = "none"


@dataclass(frozen=True)
class CuffEvidence:
    """One home or clinic cuff reading (mmHg). validated_cuff: the cuff model is marked validated by
    an administrator; cuff: the cuff in words ("Omron M3 Comfort", "cuff not registered")."""

    measured_at: dt.datetime
    sbp_mmhg: float
    dbp_mmhg: float
    validated_cuff: bool = False
    cuff: str = "cuff not registered"
    reading_id: int | None = None

    def __post_init__(self) -> None:
        if self.measured_at.tzinfo is None:
            raise ValueError("cuff reading times must be timezone-aware")
        if not _finite(self.sbp_mmhg, self.dbp_mmhg) or min(self.sbp_mmhg, self.dbp_mmhg) <= 0:
            raise ValueError("a cuff reading has finite, positive mmHg values")


@dataclass(frozen=True)
class HomeMonitoringProtocol:
    """The plan's home blood-pressure monitoring protocol (defaults: 7 days, the first discarded,
    >= 12 readings on >= 4 days; morning and evening, two readings a sitting a minute apart)."""

    series_days: int = 7
    discard_first_day: bool = True
    min_readings: int = 12
    min_days: int = 4

    def __post_init__(self) -> None:
        for name in ("series_days", "min_readings", "min_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.series_days > 28:
            raise ValueError("a home series lasts at most 28 days")
        if self.min_days > self.series_days:
            raise ValueError("the series cannot need more days than it lasts")

    def describe(self) -> str:
        first = ", the first day discarded" if self.discard_first_day else ""
        return (f"home readings morning and evening, two a sitting a minute apart, over {self.series_days} days"
                f"{first}; at least {self.min_readings} readings on at least {self.min_days} days")


@dataclass(frozen=True)
class CuffSeries:
    """A patient's home cuff series ending at the evaluation (readings kept after the first day is
    discarded). mean_*: mmHg; *_halfwidth_mmhg: 90 % interval of the mean (None: fewer than 2
    sittings); missing: what the series still needs, in words (empty when complete)."""

    n_readings: int
    n_days: int
    n_sittings: int
    n_discarded: int
    n_unvalidated: int
    unvalidated_cuffs: tuple[str, ...]
    mean_sbp_mmhg: float | None
    mean_dbp_mmhg: float | None
    sbp_halfwidth_mmhg: float | None
    dbp_halfwidth_mmhg: float | None
    first_at: dt.datetime | None
    last_at: dt.datetime | None
    reading_ids: tuple[int, ...]
    complete: bool
    missing: tuple[str, ...]

    def describe(self) -> str:
        if not self.n_readings:
            return "no home cuff readings in the series"
        mean = f"mean {self.mean_sbp_mmhg:.0f}/{self.mean_dbp_mmhg:.0f} mmHg" if self.mean_sbp_mmhg is not None else ""
        state = "complete" if self.complete else "incomplete"
        return f"{state} home cuff series: {self.n_readings} readings on {self.n_days} days, {mean}"


def _utc_day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.timezone.utc).date()


def sittings_of(readings: Sequence[CuffEvidence]) -> list[list[CuffEvidence]]:
    """Readings grouped into sittings (each within SITTING_GAP of the one before), oldest first."""
    groups: list[list[CuffEvidence]] = []
    for reading in sorted(readings, key=lambda r: r.measured_at):
        if groups and reading.measured_at - groups[-1][-1].measured_at <= SITTING_GAP:
            groups[-1].append(reading)
        else:
            groups.append([reading])
    return groups


def mean_halfwidth(values: Sequence[float], level: float = INTERVAL_LEVEL) -> float | None:
    """Half-width (same unit as values) of the `level` Student-t interval of the mean of `values`;
    None for fewer than two values."""
    if len(values) < 2:
        return None
    return t_halfwidth(stdev(values), len(values), level)


def t_halfwidth(sd: float, n: int, level: float = INTERVAL_LEVEL) -> float:
    """Half-width of the `level` Student-t interval of a mean of n values whose SD is `sd` (n >= 2)."""
    if n < 2:
        raise ValueError("a spread needs at least two values")
    return float(student_t.ppf(0.5 + level / 2.0, df=n - 1)) * sd / math.sqrt(n)


def cuff_series(readings: Sequence[CuffEvidence], protocol: HomeMonitoringProtocol, *, now: dt.datetime) -> CuffSeries:
    """The home series ending at `now`: readings of the last `series_days` days (UTC), the first day
    with readings discarded when the protocol says so, judged against the protocol's counts."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    start = now - dt.timedelta(days=protocol.series_days)
    in_series = sorted((r for r in readings if start < r.measured_at <= now + CLOCK_TOLERANCE), key=lambda r: r.measured_at)
    discarded: list[CuffEvidence] = []
    if protocol.discard_first_day and in_series:
        first_day = _utc_day(in_series[0].measured_at)
        discarded = [r for r in in_series if _utc_day(r.measured_at) == first_day]
        in_series = [r for r in in_series if _utc_day(r.measured_at) != first_day]
    n = len(in_series)
    days = {_utc_day(r.measured_at) for r in in_series}
    sittings = sittings_of(in_series)
    unvalidated = [r for r in in_series if not r.validated_cuff]
    missing: list[str] = []
    if n < protocol.min_readings:
        missing.append(f"{protocol.min_readings - n} more reading(s)")
    if len(days) < protocol.min_days:
        missing.append(f"readings on {protocol.min_days - len(days)} more day(s)")
    if missing:
        first = f" after the first day ({len(discarded)} reading(s)) discarded" if discarded else ""
        missing = [f"{n} of {protocol.min_readings} readings on {len(days)} of {protocol.min_days} days in the last "
                   f"{protocol.series_days} days{first}: {' and '.join(missing)} needed"]
    return CuffSeries(
        n_readings=n, n_days=len(days), n_sittings=len(sittings), n_discarded=len(discarded),
        n_unvalidated=len(unvalidated), unvalidated_cuffs=tuple(dict.fromkeys(r.cuff for r in unvalidated)),
        mean_sbp_mmhg=fmean(r.sbp_mmhg for r in in_series) if n else None,
        mean_dbp_mmhg=fmean(r.dbp_mmhg for r in in_series) if n else None,
        sbp_halfwidth_mmhg=mean_halfwidth([fmean(r.sbp_mmhg for r in s) for s in sittings]),
        dbp_halfwidth_mmhg=mean_halfwidth([fmean(r.dbp_mmhg for r in s) for s in sittings]),
        first_at=in_series[0].measured_at if n else None, last_at=in_series[-1].measured_at if n else None,
        reading_ids=tuple(r.reading_id for r in in_series if r.reading_id is not None),
        complete=not missing, missing=tuple(missing),
    )


# --------------------------------------------------------------------------------------------
# The wearable's agreement with the patient's own cuff


@dataclass(frozen=True)
class AgreementPair:
    """A prospective test of the wearable: a cuff reading (mmHg) against the mean of the wearable's
    estimates from the minutes before it (none of them calibrated on that reading)."""

    cuff_at: dt.datetime
    cuff_sbp_mmhg: float
    cuff_dbp_mmhg: float
    estimate_sbp_mmhg: float
    estimate_dbp_mmhg: float
    n_estimates: int = 1

    def __post_init__(self) -> None:
        if self.cuff_at.tzinfo is None:
            raise ValueError("pair times must be timezone-aware")
        if not _finite(self.cuff_sbp_mmhg, self.cuff_dbp_mmhg, self.estimate_sbp_mmhg, self.estimate_dbp_mmhg):
            raise ValueError("a pair has finite mmHg values")
        if self.n_estimates < 1:
            raise ValueError("a pair rests on at least one estimate")


@dataclass(frozen=True)
class TrustBounds:
    """When a patient's wearable may support an automatic change (defaults: ISO 81060-2's
    criterion 1 applied to this one patient): at least `min_pairs` prospective pairs in the last
    `period_days`, |mean error| <= max_abs_bias_mmhg and SD of error <= max_sd_mmhg, SBP and DBP."""

    period_days: float = 60.0
    min_pairs: int = 5
    max_abs_bias_mmhg: float = 5.0
    max_sd_mmhg: float = 8.0

    def __post_init__(self) -> None:
        if not _finite(self.period_days, self.max_abs_bias_mmhg, self.max_sd_mmhg):
            raise ValueError("trust bounds are finite numbers")
        if self.period_days <= 0 or self.max_abs_bias_mmhg < 0 or self.max_sd_mmhg < 0:
            raise ValueError("trust bounds cannot be negative")
        if isinstance(self.min_pairs, bool) or not isinstance(self.min_pairs, int) or self.min_pairs < 2:
            raise ValueError("the wearable needs at least 2 pairs to measure a spread")


@dataclass(frozen=True)
class WearableAgreement:
    """The patient's rolling agreement (estimate - cuff, mmHg) over `period_days`; SD None below 2
    pairs, every figure None without pairs."""

    n_pairs: int
    period_days: float
    sbp_bias_mmhg: float | None
    sbp_sd_mmhg: float | None
    sbp_mae_mmhg: float | None
    dbp_bias_mmhg: float | None
    dbp_sd_mmhg: float | None
    dbp_mae_mmhg: float | None

    def describe(self) -> str:
        if not self.n_pairs:
            return f"no prospective cuff pairs in {self.period_days:g} days"
        def fig(x: float | None) -> str:
            return "?" if x is None else f"{x:.1f}"
        return (f"{self.n_pairs} cuff pair(s) in {self.period_days:g} days: SBP bias {fig(self.sbp_bias_mmhg)}, "
                f"SD {fig(self.sbp_sd_mmhg)}; DBP bias {fig(self.dbp_bias_mmhg)}, SD {fig(self.dbp_sd_mmhg)} mmHg")


def wearable_agreement(pairs: Sequence[AgreementPair], *, now: dt.datetime, period_days: float) -> WearableAgreement:
    """Agreement of the pairs with `now - period_days < cuff_at <= now` (+ clock tolerance)."""
    start = now - dt.timedelta(days=period_days)
    kept = [p for p in pairs if start < p.cuff_at <= now + CLOCK_TOLERANCE]
    errors = {
        "sbp": [p.estimate_sbp_mmhg - p.cuff_sbp_mmhg for p in kept],
        "dbp": [p.estimate_dbp_mmhg - p.cuff_dbp_mmhg for p in kept],
    }
    figures: dict[str, float | None] = {}
    for target, e in errors.items():
        figures[f"{target}_bias_mmhg"] = fmean(e) if e else None
        figures[f"{target}_sd_mmhg"] = stdev(e) if len(e) >= 2 else None
        figures[f"{target}_mae_mmhg"] = fmean(abs(x) for x in e) if e else None
    return WearableAgreement(n_pairs=len(kept), period_days=period_days, **figures)


def trust_problems(agreement: WearableAgreement, bounds: TrustBounds) -> list[str]:
    """Why the wearable may not support an automatic change for this patient (empty: trusted).
    An unknown figure fails its check."""
    if not agreement.n_pairs >= bounds.min_pairs:
        so_far = f" ({agreement.describe()})" if agreement.n_pairs else ""
        return [f"wearable not yet trusted for this patient: {agreement.n_pairs} prospective cuff pair(s) "
                f"in {bounds.period_days:g} days, {bounds.min_pairs} needed{so_far}"]
    problems: list[str] = []
    for target in ("sbp", "dbp"):
        bias = getattr(agreement, f"{target}_bias_mmhg")
        sd = getattr(agreement, f"{target}_sd_mmhg")
        name = target.upper()
        if bias is None or not math.isfinite(bias) or abs(bias) > bounds.max_abs_bias_mmhg:
            shown = "unknown" if bias is None or not math.isfinite(bias) else f"{bias:+.1f} mmHg"
            problems.append(f"wearable {name} bias against the patient's cuff {shown}, limit ±{bounds.max_abs_bias_mmhg:g} mmHg")
        if sd is None or not math.isfinite(sd) or sd > bounds.max_sd_mmhg:
            shown = "unknown" if sd is None or not math.isfinite(sd) else f"{sd:.1f} mmHg"
            problems.append(f"wearable {name} SD of error against the patient's cuff {shown}, limit {bounds.max_sd_mmhg:g} mmHg")
    return problems


class MeanErrorModel(Protocol):
    """What the wearable's interval of the mean needs of the active model (monitoring/bp/mean_interval.py):
    the 90 % half-width (mmHg) of the mean of n estimates, from an error shared by all estimates of
    one calibration plus a per-window error. Without one, the mean's interval is taken as wide as
    one window's (every error shared), never narrower than the truth."""

    def halfwidth_mmhg(self, target: str, n: int) -> float: ...
