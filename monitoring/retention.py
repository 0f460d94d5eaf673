"""Raw-window retention: a window's raw signal (~31 KiB) is kept RAW_WINDOW_RETENTION_DAYS, then its
bytes are dropped; the row, its SHA-256 and size, its analyses and its estimates stay. The windows a
suggestion rests on keep their raw signal as long as the suggestion, that is for good.

Which suggestions can rest on a window, and why the reads here stay bounded:

- A suggestion names the estimates it rests on in `estimate_ids` (every live estimate of the plan's
  look-back) and in its escalations' `sources` ("estimate:<id>"). An estimate exists only once its
  window is stored, so a suggestion resting on a window was created after the window was received:
  a run reads only the suggestions created since the earliest `received_at` of the windows it looks
  at (less a day for clocks), whatever the look-back. Once the purge runs every hour that is about
  the retention period of suggestions, read once per run, never the whole history.
- An evaluation at time t reads the estimates recorded in (t - look-back, t + 5 min]. The look-back
  is the plan's `look_back_days`, which is NOT bounded by 28 days: the plan form and API accept up to
  90, the model any positive number (and the failing-evaluation path looks back 7 days). So the
  cut-off is the retention or, when a current plan looks back further, that look-back plus a day
  (evaluations under way): no evaluation to come can then rest a suggestion on a purged window,
  unless a plan is later given a look-back longer than the retention.
- A window found behind a suggestion is marked (`raw_kept_at`) and never looked at again, and a
  purged one leaves the index the purge walks (`window_raw_to_examine`), so a run reads only the
  windows that became old enough since the last run.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import structlog
from django.db import transaction
from django.db.models import Max, OuterRef, Q, Subquery

from clinops.audit import SYSTEM, audit_record
from monitoring.models import FINAL_STATUSES, BPEstimate, SignalWindow

log = structlog.get_logger(__name__)

# Exactly the condition of the partial index window_raw_to_examine (monitoring/models.py), so the
# database walks that index and never the purged history.
TO_EXAMINE = Q(raw_purged_at__isnull=True, raw_kept_at__isnull=True, status__in=FINAL_STATUSES)
# Windows processed this recently are left for a later run: the estimate sweep re-sends a usable
# window processed within the last 2 h that has no estimate yet (monitoring.tasks), and a window must
# be out of its reach before it is purged, as the sweeper never re-sends a purged window.
PROCESSING_SETTLED = dt.timedelta(days=1)
# Suggestions are stamped by the worker's clock, windows by the web server's: read suggestions from
# this long before the earliest window's arrival.
CLOCK_MARGIN = dt.timedelta(days=1)
# Added to the longest look-back of a current plan: an evaluation that started before the purge
# reads from its own start time.
LOOK_BACK_MARGIN_DAYS = 1.0
DEFAULT_BATCH_SIZE = 500
# One run examines at most this many windows (an hour of ~3,500 patients' is ~42,000); a backlog
# (the first run on an old database) is worked off over the following runs.
DEFAULT_MAX_WINDOWS = 50_000
_IN_CHUNK = 1000  # ids per IN (...) list


@dataclass(frozen=True)
class RawPurgeResult:
    """One purge run. purged / kept_for_decision: windows (kept: a suggestion rests on them, newly
    found this run); bytes_freed: raw bytes dropped (sum of `raw_bytes`, bytes); cutoff: windows
    recorded before it were eligible; complete: False when the run stopped at its window or time
    limit with more to do."""

    purged: int
    kept_for_decision: int
    bytes_freed: int
    cutoff: dt.datetime
    retention_days: int
    longest_look_back_days: float
    complete: bool


def raw_purge_cutoff(*, now: dt.datetime, retention_days: int, longest_look_back_days: float) -> dt.datetime:
    """Windows recorded before this instant may lose their raw bytes: `retention_days` (days) before
    `now`, or earlier when a current plan looks back further (its look-back + LOOK_BACK_MARGIN_DAYS),
    so that no evaluation to come can rest a suggestion on a purged window."""
    if retention_days < 1:
        raise ValueError("the raw-window retention is at least one day")
    days = max(float(retention_days), longest_look_back_days + LOOK_BACK_MARGIN_DAYS)
    return now - dt.timedelta(days=days)


def referenced_estimate_ids(estimate_ids: object, escalations: object) -> Iterator[int]:
    """The estimates one suggestion rests on, from its stored JSON: its evidence (`estimate_ids`)
    and what raised its escalations (`sources` "estimate:<id>"); anything else is ignored."""
    if isinstance(estimate_ids, list):
        yield from (i for i in estimate_ids if isinstance(i, int) and not isinstance(i, bool))
    if isinstance(escalations, list):
        for item in escalations:
            sources = item.get("sources") if isinstance(item, dict) else None
            for source in sources if isinstance(sources, list) else ():
                kind, _, value = str(source).partition(":")
                if kind == "estimate" and value.isdigit():
                    yield int(value)


def raw_windows_purge(*, now: dt.datetime, retention_days: int, batch_size: int = DEFAULT_BATCH_SIZE,
                      max_windows: int = DEFAULT_MAX_WINDOWS, max_seconds: float | None = None) -> RawPurgeResult:
    """Drop the raw bytes (`raw` = b"", `raw_purged_at` = now) of the windows recorded before the
    cut-off (raw_purge_cutoff) whose processing is over (processed, rejected or failed, at least
    PROCESSING_SETTLED ago), not purged yet, and on which no suggestion rests; those a suggestion
    rests on are marked kept for good instead (`raw_kept_at`).

    Oldest first, in batches of `batch_size` windows, each in its own short transaction that locks
    only its own rows (FOR NO KEY UPDATE, skipping rows another run holds): inserts of new windows,
    analyses and estimates never wait for it. At most `max_windows` windows, and no new batch after
    `max_seconds` (s). Idempotent: a second run finds nothing left to do. One audit row (actor
    SYSTEM) per run that purged or kept anything, with the counts and the cut-off."""
    if batch_size < 1 or max_windows < 1:
        raise ValueError("batch_size and max_windows are at least 1")
    longest = _longest_look_back_days()
    cutoff = raw_purge_cutoff(now=now, retention_days=retention_days, longest_look_back_days=longest)
    started = time.monotonic()
    candidates = list(
        SignalWindow.objects.filter(TO_EXAMINE, recorded_at__lt=cutoff, processed_at__lt=now - PROCESSING_SETTLED)
        .order_by("recorded_at", "id").values_list("id", "received_at")[:max_windows]
    )
    purged = kept = freed = 0
    complete = len(candidates) < max_windows
    last_id = None
    try:
        if candidates:
            behind = windows_behind_suggestions(window_ids=[pk for pk, _ in candidates],
                                                created_since=min(at for _, at in candidates) - CLOCK_MARGIN)
            for start in range(0, len(candidates), batch_size):
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    complete = False
                    break
                batch = [pk for pk, _ in candidates[start:start + batch_size]]
                n_purged, n_kept, n_bytes = _batch_purge(window_ids=batch, keep=behind, now=now)
                purged, kept, freed, last_id = purged + n_purged, kept + n_kept, freed + n_bytes, batch[-1]
    finally:
        # Also after a failed batch: what the committed batches did is recorded.
        result = RawPurgeResult(purged=purged, kept_for_decision=kept, bytes_freed=freed, cutoff=cutoff,
                                retention_days=retention_days, longest_look_back_days=longest, complete=complete)
        if purged or kept:
            with transaction.atomic():
                # The trail names one row per event: the last window of the run (oldest first).
                audit_record(actor=SYSTEM, action="window.raw_purge", target=SignalWindow(pk=last_id),
                             detail={**asdict(result), "cutoff": cutoff.isoformat()})
    log.info("window.raw_purge", purged=purged, kept_for_decision=kept, bytes_freed=freed, cutoff=cutoff.isoformat(),
             complete=complete, seconds=round(time.monotonic() - started, 2))
    return result


def windows_behind_suggestions(*, window_ids: Sequence[int], created_since: dt.datetime) -> set[int]:
    """The windows (of `window_ids`) on whose estimates a suggestion created since `created_since`
    rests. Reads the windows' estimates and those suggestions' JSON once, streamed."""
    from therapy.models import Suggestion

    window_of: dict[int, int] = {}
    for chunk in _chunks(window_ids):
        window_of.update(BPEstimate.objects.filter(window_id__in=chunk).values_list("id", "window_id").order_by())
    if not window_of:
        return set()
    behind: set[int] = set()
    rows = Suggestion.objects.filter(created_at__gte=created_since).values_list("estimate_ids", "escalations").order_by()
    for estimate_ids, escalations in rows.iterator(chunk_size=200):
        for estimate_id in referenced_estimate_ids(estimate_ids, escalations):
            window_id = window_of.get(estimate_id)
            if window_id is not None:
                behind.add(window_id)
    return behind


def _batch_purge(*, window_ids: list[int], keep: set[int], now: dt.datetime) -> tuple[int, int, int]:
    """Purge (or mark kept) one batch in one transaction. Returns (purged, kept, bytes freed)."""
    with transaction.atomic():
        # Re-checked under the lock: a concurrent run may have done some of them already.
        rows = list(SignalWindow.objects.select_for_update(no_key=True, skip_locked=True)
                    .filter(TO_EXAMINE, pk__in=window_ids).order_by("pk").values_list("pk", "raw_bytes"))
        purge = [pk for pk, _ in rows if pk not in keep]
        kept = [pk for pk, _ in rows if pk in keep]
        if purge:
            SignalWindow.objects.filter(pk__in=purge).update(raw=b"", raw_purged_at=now)
        if kept:
            SignalWindow.objects.filter(pk__in=kept).update(raw_kept_at=now)
    return len(purge), len(kept), sum(n for pk, n in rows if pk not in keep)


def _longest_look_back_days() -> float:
    """The longest look-back (days) an evaluation may use now: the patients' current plans', and
    the failing-evaluation path's own (therapy.evaluation.SAFETY_LOOK_BACK_DAYS)."""
    from therapy.evaluation import SAFETY_LOOK_BACK_DAYS
    from therapy.models import PlanVersion

    latest = PlanVersion.objects.filter(patient_id=OuterRef("patient_id")).order_by("-version").values("pk")[:1]
    longest = PlanVersion.objects.filter(pk=Subquery(latest)).aggregate(days=Max("look_back_days"))["days"]
    return max(SAFETY_LOOK_BACK_DAYS, longest or 0.0)


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start:start + _IN_CHUNK]
