"""Does the model still deserve trust? Pure rules for production accuracy, data drift and subgroup
fairness, and the thresholds that raise an operator alert. No Django inside.

Units: mmHg for errors, % for shares, feature units as stored (ms, bpm, raw amplitude).

- Accuracy (per model version and week): monitoring.bp.accuracy.error_metrics over cuff-paired estimates — mean error,
  SD, MAE, % within 10 mmHg, interval coverage. Critical when ISO 81060-2 criterion 1 fails
  (|mean error| > 5 or SD > 8 mmHg, SBP or DBP); warning when the interval covers fewer than
  nominal - 10 points (e.g. < 80 % for a 90 % interval). Judged on >= MIN_PAIRS pairs only.
- Drift (per feature; the last 7 days against the model's training distribution): PSI over the
  training deciles and the two-sample KS statistic D (scipy). Warning when D >= 0.2 with p < 0.01;
  critical when D >= 0.3 with p < 0.001 and PSI >= 0.25. PSI alone never alerts: at a few hundred
  windows its noise alone reaches 0.1-0.4 (same-population splits of the shipped recordings,
  tests), while D is an effect size whose noise shrinks with the sample. Judged on
  >= MIN_DRIFT_WINDOWS windows only.
- Subgroups (sex, age band, device model): flagged when its MAE is materially worse than the
  whole: >= 2 mmHg and >= 25 % above, on >= MIN_PAIRS pairs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from monitoring.bp import accuracy as bp_accuracy
from monitoring.bp import feature_deltas

MIN_PAIRS = 10
MIN_DRIFT_WINDOWS = 30
REFERENCE_POINTS = 200  # quantiles kept of each training feature (enough for PSI and KS)
PSI_CRITICAL = 0.25
KS_D_WARNING, KS_P_WARNING = 0.20, 0.01
KS_D_CRITICAL, KS_P_CRITICAL = 0.30, 0.001
COVERAGE_SLACK_POINTS = 10.0
SUBGROUP_MAE_EXCESS_MMHG = 2.0
SUBGROUP_MAE_RATIO = 1.25
AGE_BANDS: tuple[tuple[int, int | None, str], ...] = ((0, 50, "< 50"), (50, 65, "50-64"), (65, 80, "65-79"), (80, None, "80+"))


# --- training distribution -----------------------------------------------------------------------

def feature_reference(samples: Sequence[Mapping[str, float | int | None]], names: Sequence[str] = feature_deltas.FEATURES,
                      points: int = REFERENCE_POINTS) -> dict[str, list[float]]:
    """The training distribution of each feature, as `points` evenly spaced quantiles (kept with
    the model version; drift is measured against it)."""
    reference: dict[str, list[float]] = {}
    for name in names:
        values = np.array([float(v) for s in samples if (v := s.get(name)) is not None and math.isfinite(float(v))])
        if values.size:
            reference[name] = np.quantile(values, np.linspace(0, 1, points)).round(4).tolist()
    return reference


# --- drift ---------------------------------------------------------------------------------------

def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, over the reference's deciles.
    0 = same; < 0.1 stable; 0.1-0.25 moderate shift; > 0.25 major shift."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if edges.size < 3:  # a (near) constant feature: any change is all or nothing
        edges = np.array([ref.min() - 1e-9, ref.min() + 1e-9, ref.max() + 1e-9]) if ref.size else np.array([0.0, 1.0])
    inner = edges[1:-1]
    expected = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / max(ref.size, 1)
    actual = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1) / max(cur.size, 1)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    n_current: int
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    severity: str | None  # None, "warning" or "critical"
    reference_median: float | None
    current_median: float | None

    def describe(self) -> str:
        if self.psi is None:
            return f"{self.feature}: too few windows to judge ({self.n_current} < {MIN_DRIFT_WINDOWS})"
        return (f"{self.feature}: PSI {self.psi:.2f}, KS {self.ks_statistic:.2f} (p {self.ks_pvalue:.1g}); median "
                f"{self.reference_median:.4g} in training, {self.current_median:.4g} now")


def feature_drift(feature: str, reference: Sequence[float], current: Sequence[float | int | None]) -> FeatureDrift:
    """Drift of one feature: PSI and KS of the current values (None: not computed, left out) against
    the training quantiles."""
    cur = [float(v) for v in current if v is not None and math.isfinite(float(v))]
    if len(cur) < MIN_DRIFT_WINDOWS or not reference:
        return FeatureDrift(feature, len(cur), None, None, None, None, None, None)
    value = psi(reference, cur)
    ks = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(cur, dtype=float))
    severity = None
    if ks.statistic >= KS_D_CRITICAL and ks.pvalue < KS_P_CRITICAL and value >= PSI_CRITICAL:
        severity = "critical"
    elif ks.statistic >= KS_D_WARNING and ks.pvalue < KS_P_WARNING:
        severity = "warning"
    return FeatureDrift(feature, len(cur), round(value, 4), round(float(ks.statistic), 4), float(ks.pvalue), severity,
                        float(np.median(reference)), float(np.median(cur)))


def drift_report(reference: Mapping[str, Sequence[float]],
                 current: Sequence[Mapping[str, float | int | None]]) -> list[FeatureDrift]:
    """Drift of every feature the reference has, over the current windows' feature dicts."""
    return [feature_drift(name, ref, [w.get(name) for w in current]) for name, ref in reference.items()]


# --- accuracy and subgroups ----------------------------------------------------------------------

@dataclass(frozen=True)
class PairedEstimate:
    """A cuff-paired estimate: the estimate (made without that cuff reading), the cuff reading,
    the interval half-widths (mmHg) and who/what it concerns (for subgroups)."""

    sbp_mmhg: float
    dbp_mmhg: float
    cuff_sbp_mmhg: float
    cuff_dbp_mmhg: float
    sbp_halfwidth_mmhg: float
    dbp_halfwidth_mmhg: float
    patient: str
    sex: str = ""
    age_years: int | None = None
    device_model: str = ""


def accuracy(pairs: Sequence[PairedEstimate]) -> dict[str, dict]:
    """bp_accuracy.error_metrics for SBP and DBP over the pairs (mean error, SD, MAE, % within 5/10/15 mmHg,
    interval coverage %, BHS grade, ISO 81060-2 criterion 1), JSON-ready."""
    def metrics(pick: str) -> dict:
        if not pairs:
            return bp_accuracy.error_metrics(np.array([]), np.array([]))
        est = np.array([getattr(p, f"{pick}_mmhg") for p in pairs])
        ref = np.array([getattr(p, f"cuff_{pick}_mmhg") for p in pairs])
        width = np.array([getattr(p, f"{pick}_halfwidth_mmhg") for p in pairs])
        return bp_accuracy.error_metrics(est, ref, records=[p.patient for p in pairs], halfwidth_mmhg=width)
    return {"sbp": metrics("sbp"), "dbp": metrics("dbp")}


@dataclass(frozen=True)
class Finding:
    """A signal past its threshold: what, how bad, the value and the threshold, in words."""

    signal: str
    severity: str
    value: float
    threshold: float
    message: str


def accuracy_findings(result: Mapping[str, Mapping], *, interval_level: float) -> list[Finding]:
    """Accuracy alerts for one model version (see the module docstring for the thresholds)."""
    findings: list[Finding] = []
    for channel in ("sbp", "dbp"):
        m = result[channel]
        if not m["n_windows"] or m["n_windows"] < MIN_PAIRS:
            continue
        name = channel.upper()
        if abs(m["mean_error_mmhg"]) > bp_accuracy.MAX_ABS_MEAN_ERROR_MMHG:
            findings.append(Finding(f"accuracy.{channel}_mean_error_mmhg", "critical", m["mean_error_mmhg"],
                                    bp_accuracy.MAX_ABS_MEAN_ERROR_MMHG,
                                    f"{name} mean error {m['mean_error_mmhg']:+.1f} mmHg against cuff readings "
                                    f"(limit ±{bp_accuracy.MAX_ABS_MEAN_ERROR_MMHG:g}) over {m['n_windows']} pairs"))
        if m["sd_error_mmhg"] is not None and m["sd_error_mmhg"] > bp_accuracy.MAX_SD_ERROR_MMHG:
            findings.append(Finding(f"accuracy.{channel}_sd_error_mmhg", "critical", m["sd_error_mmhg"],
                                    bp_accuracy.MAX_SD_ERROR_MMHG,
                                    f"{name} error SD {m['sd_error_mmhg']:.1f} mmHg against cuff readings "
                                    f"(limit {bp_accuracy.MAX_SD_ERROR_MMHG:g}) over {m['n_windows']} pairs"))
        floor = 100.0 * interval_level - COVERAGE_SLACK_POINTS
        if m["coverage_pct"] is not None and m["coverage_pct"] < floor:
            findings.append(Finding(f"accuracy.{channel}_coverage_pct", "warning", m["coverage_pct"], floor,
                                    f"{name} {100 * interval_level:.0f} % intervals cover only {m['coverage_pct']:.0f} % "
                                    f"of cuff readings (floor {floor:.0f} %)"))
    return findings


def drift_findings(drifts: Sequence[FeatureDrift], *, group: str = "") -> list[Finding]:
    """One finding per drifting feature; `group` (e.g. a device model and firmware) makes it the
    group's own signal, "drift.<feature>@<group>"."""
    suffix, where = (f"@{group}", f" ({group})") if group else ("", "")
    findings: list[Finding] = []
    for d in drifts:
        if not d.severity:
            continue
        # feature_drift gives a severity only with the KS statistic it rests on (stored reports keep both).
        assert d.ks_statistic is not None
        findings.append(Finding(f"drift.{d.feature}{suffix}", d.severity, d.ks_statistic,
                                KS_D_CRITICAL if d.severity == "critical" else KS_D_WARNING,
                                f"data drift{where}: {d.describe()}"))
    return findings


def age_band(age_years: int | None) -> str:
    if age_years is None:
        return "unknown"
    for low, high, label in AGE_BANDS:
        if age_years >= low and (high is None or age_years < high):
            return label
    return "unknown"


def subgroup_report(pairs: Sequence[PairedEstimate]) -> dict[str, dict]:
    """Accuracy by sex, age band and device model, each group flagged when its SBP or DBP MAE is
    materially worse than the whole (module docstring)."""
    overall = accuracy(pairs)
    groups: dict[str, dict] = {}
    for axis, key in (("sex", lambda p: p.sex or "unknown"), ("age band", lambda p: age_band(p.age_years)),
                      ("device model", lambda p: p.device_model or "unknown")):
        members: dict[str, list[PairedEstimate]] = {}
        for p in pairs:
            members.setdefault(key(p), []).append(p)
        groups[axis] = {}
        for label, subset in sorted(members.items()):
            result = accuracy(subset)
            worse = [channel for channel in ("sbp", "dbp")
                     if len(subset) >= MIN_PAIRS and overall[channel]["mae_mmhg"] is not None
                     and result[channel]["mae_mmhg"] >= overall[channel]["mae_mmhg"] + SUBGROUP_MAE_EXCESS_MMHG
                     and result[channel]["mae_mmhg"] >= overall[channel]["mae_mmhg"] * SUBGROUP_MAE_RATIO]
            groups[axis][label] = {**result, "n": len(subset), "materially_worse": worse}
    return {"overall": overall, "groups": groups}


def subgroup_findings(report: Mapping[str, Mapping]) -> list[Finding]:
    findings = []
    for axis, groups in report["groups"].items():
        for label, result in groups.items():
            for channel in result["materially_worse"]:
                mae, whole = result[channel]["mae_mmhg"], report["overall"][channel]["mae_mmhg"]
                findings.append(Finding(f"subgroup.{axis}.{label}.{channel}_mae_mmhg", "warning", mae, whole,
                                        f"{channel.upper()} MAE {mae:.1f} mmHg for {axis} {label} against "
                                        f"{whole:.1f} mmHg overall ({result['n']} pairs)"))
    return findings


# --- pipeline and clinician-AI agreement ---------------------------------------------------------

MAX_REJECTED_PCT = 40.0  # of judged windows, over >= MIN_JUDGED_WINDOWS
MIN_JUDGED_WINDOWS = 50
MAX_LATENCY_P95_MS = 60_000.0  # upload to processed
MAX_WAITING_MINUTES = 15.0  # oldest window still unprocessed
# A patient's daily evaluation overdue by this much: the due sweep sends each patient within a minute
# of falling due, a lost send is asked again after 11 min (therapy.tasks' mark grace), so beyond
# this the therapy workers (or beat) are behind or gone.
MAX_EVALUATION_OVERDUE_MINUTES = 30.0
MAX_OVERRIDE_PCT = 50.0  # of reviewed step suggestions, over >= MIN_REVIEWED
MIN_REVIEWED = 10
MAX_DECISION_P95_HOURS = 72.0


def pipeline_findings(payload: Mapping) -> list[Finding]:
    """Operator alerts from a pipeline-health report (therapy.reports.pipeline_report)."""
    findings = []
    if payload.get("judged", 0) >= MIN_JUDGED_WINDOWS and (payload.get("rejected_pct") or 0) > MAX_REJECTED_PCT:
        findings.append(Finding("pipeline.rejected_pct", "warning", payload["rejected_pct"], MAX_REJECTED_PCT,
                                f"{payload['rejected_pct']:.0f} % of {payload['judged']} windows rejected by the quality "
                                f"gate in the last {payload.get('period_hours', 24)} h"))
    silent = payload.get("silent_devices") or []
    if silent:
        findings.append(Finding("pipeline.silent_devices", "warning", len(silent), 0,
                                f"{len(silent)} device(s) silent for more than {payload.get('silent_after_hours', 48)} h"))
    p95 = (payload.get("latency_ms") or {}).get("p95")
    if p95 is not None and p95 > MAX_LATENCY_P95_MS:
        findings.append(Finding("pipeline.latency_p95_ms", "warning", p95, MAX_LATENCY_P95_MS,
                                f"processing latency p95 {p95 / 1000:.0f} s (limit {MAX_LATENCY_P95_MS / 1000:.0f} s)"))
    waiting = (payload.get("queue") or {}).get("oldest_waiting_minutes")
    if waiting is not None and waiting > MAX_WAITING_MINUTES:
        findings.append(Finding("pipeline.oldest_waiting_minutes", "critical", waiting, MAX_WAITING_MINUTES,
                                f"a window has waited {waiting:.0f} min for processing: are the workers running?"))
    evaluation = payload.get("evaluation") or {}
    overdue = evaluation.get("oldest_overdue_minutes")
    if overdue is not None and overdue > MAX_EVALUATION_OVERDUE_MINUTES:
        findings.append(Finding("pipeline.evaluation_overdue_minutes", "critical", overdue,
                                MAX_EVALUATION_OVERDUE_MINUTES,
                                f"the daily therapy evaluation of {evaluation.get('patients_overdue')} patient(s) is "
                                f"overdue by up to {overdue:.0f} min: are the therapy workers and beat running?"))
    failed = (payload.get("failed") or {}).get("count") or 0
    if failed:
        findings.append(Finding("pipeline.failed", "warning", failed, 0, f"{failed} window(s) failed processing"))
    return findings


def agreement_findings(payload: Mapping) -> list[Finding]:
    """Operator alerts from a clinician-AI agreement report (therapy.reports.agreement_reports)."""
    findings = []
    override = payload.get("override_pct_steps_only")
    if payload.get("reviewed", 0) >= MIN_REVIEWED and override is not None and override > MAX_OVERRIDE_PCT:
        findings.append(Finding("agreement.override_pct", "warning", override, MAX_OVERRIDE_PCT,
                                f"clinicians overrode {override:.0f} % of reviewed steps in the last "
                                f"{payload.get('period_days', 30)} days (limit {MAX_OVERRIDE_PCT:.0f} %)"))
    p95 = (payload.get("time_to_decision_hours") or {}).get("p95")
    if p95 is not None and p95 > MAX_DECISION_P95_HOURS:
        findings.append(Finding("agreement.time_to_decision_p95_hours", "warning", p95, MAX_DECISION_P95_HOURS,
                                f"review queue: 95 % of decisions within {p95:.0f} h (limit {MAX_DECISION_P95_HOURS:.0f} h)"))
    return findings
