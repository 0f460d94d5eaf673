"""Raw-window retention: a window's raw signal (~31 KiB) is kept RAW_WINDOW_RETENTION_DAYS, then its
bytes are dropped; the row, its SHA-256 and size, its analyses and its estimates stay. The windows a
suggestion rests on keep their raw signal as long as the suggestion, that is for good.

Which suggestions can rest on a window, and why the reads here stay bounded:

- A suggestion names the estimates it rests on in `estimate_ids` (every live estimate of the plan's
  look-back) and in its escalations' `sources` ("estimate:<id>").
- An evaluation at time t (therapy.evaluation, t = the worker's clock when it starts, as the
  suggestion's `created_at` is, a few seconds later) reads the estimates recorded in
  (t - look-back, t + 5 min]. So a suggestion resting on a window recorded at R was created after
  the window was received (an estimate exists only once its window is stored) and before
  R + look-back. For a page of windows a run reads only the suggestions created between the
  earliest `received_at` and the latest `recorded_at` + the longest look-back any plan version has
  had (each side widened by a day for clocks): about nine days of suggestions for an hour of
  windows with 7-day look-backs, never the whole history.
- The look-back is the plan's `look_back_days`, which is NOT bounded by 28 days: the plan form and
  API accept up to 90, the model any positive number (and the failing-evaluation path looks back
  7 days). So the cut-off is the retention or, when a current plan looks back further, that
  look-back plus a day (evaluations under way): no evaluation to come can then rest a suggestion on
  a purged window, unless a plan is later given a look-back longer than the retention.
- A window found behind a suggestion is marked (`raw_kept_at`) and never looked at again, and a
  purged one leaves the index the purge walks (`window_raw_to_examine`), so a run reads only the
  windows that became old enough since the last run.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import structlog
from django.db import transaction
from django.db.models import Q

from clinops.base.audit import SYSTEM, audit_record
from monitoring.handoff import HandlerSlot
from monitoring.models import FINAL_STATUSES, SignalWindow

log = structlog.get_logger(__name__)

# Exactly the condition of the partial index window_raw_to_examine (monitoring/models.py), so the
# database walks that index and never the purged history.
TO_EXAMINE = Q(raw_purged_at__isnull=True, raw_kept_at__isnull=True, status__in=FINAL_STATUSES)
# Windows processed this recently are left for a later run: the estimate sweep re-sends a usable
# window processed within the last 2 h that has no estimate yet (monitoring.tasks), and a window must
# be out of its reach before it is purged, as the sweeper never re-sends a purged window.
PROCESSING_SETTLED = dt.timedelta(days=1)
# Suggestions are stamped by the worker's clock, windows by the web server's, and a suggestion is
# saved up to a task's time limit after its evaluation started: both ends of the span of
# suggestions read are widened by this much.
CLOCK_MARGIN = dt.timedelta(days=1)
# Added to the longest look-back of a current plan: an evaluation that started before the purge
# reads from its own start time.
LOOK_BACK_MARGIN_DAYS = 1.0
DEFAULT_BATCH_SIZE = 500
# Windows read per page (their suggestions are read once per page); an hour of ~3,500 patients'
# windows is ~42,000.
DEFAULT_PAGE_SIZE = 20_000
_IN_CHUNK = 1000  # ids per IN (...) list


class RawWindowKeeper(Protocol):
    """Who says which windows keep their raw bytes for good: the app that makes suggestions
    (therapy/retention.py), which monitoring may not import; it registers itself at start-up."""

    def windows_behind_suggestions(self, *, window_ids: Sequence[int], created_from: dt.datetime,
                                   created_to: dt.datetime) -> set[int]:
        """The windows (of `window_ids`) on whose estimates a suggestion created between the two
        times rests."""
        ...

    def longest_look_back_days(self, *, current: bool) -> float:
        """The longest look-back (days) of the current plans (current) or of every plan there has
        been: no evaluation may rest on a purged window."""
        ...


# Fails closed: with nobody to say which windows decisions rest on, nothing is purged.
raw_window_keeper: HandlerSlot[RawWindowKeeper] = HandlerSlot(
    what="raw-window keeper", consequence="the purge refuses to run (nothing is purged)", check_id="monitoring.E002")


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


def raw_windows_purge(*, now: dt.datetime, retention_days: int, batch_size: int = DEFAULT_BATCH_SIZE,
                      page_size: int = DEFAULT_PAGE_SIZE, max_windows: int | None = None,
                      max_seconds: float | None = None) -> RawPurgeResult:
    """Drop the raw bytes (`raw` = b"", `raw_purged_at` = now) of the windows recorded before the
    cut-off (raw_purge_cutoff) whose processing is over (processed, rejected or failed, at least
    PROCESSING_SETTLED ago), not purged yet, and on which no suggestion rests; those a suggestion
    rests on are marked kept for good instead (`raw_kept_at`).

    Oldest first, in batches of `batch_size` windows, each in its own short transaction that locks
    only its own rows (FOR NO KEY UPDATE, skipping rows another run holds): inserts of new windows,
    analyses and estimates never wait for it. At most `max_windows` windows, and no new batch after
    `max_seconds` (s). Idempotent: a second run finds nothing left to do. One audit row (actor
    SYSTEM) per run that purged or kept anything, with the counts and the cut-off."""
    if batch_size < 1 or page_size < 1 or (max_windows is not None and max_windows < 1):
        raise ValueError("batch_size, page_size and max_windows are at least 1")
    keeper = raw_window_keeper.get()
    longest = keeper.longest_look_back_days(current=True)
    longest_ever = dt.timedelta(days=keeper.longest_look_back_days(current=False))
    cutoff = raw_purge_cutoff(now=now, retention_days=retention_days, longest_look_back_days=longest)
    started = time.monotonic()
    eligible = (SignalWindow.objects.filter(TO_EXAMINE, recorded_at__lt=cutoff, processed_at__lt=now - PROCESSING_SETTLED)
                .order_by("recorded_at", "id"))
    purged = kept = freed = examined = 0
    last: tuple[dt.datetime, int] | None = None  # (recorded_at, id) of the last window examined
    complete = False
    try:
        while True:
            limit = page_size if max_windows is None else min(page_size, max_windows - examined)
            if limit < 1 or _out_of_time(started, max_seconds):
                break
            rows = eligible if last is None else eligible.filter(
                Q(recorded_at__gt=last[0]) | Q(recorded_at=last[0], id__gt=last[1]), recorded_at__gte=last[0])
            page = list(rows.values_list("id", "recorded_at", "received_at")[:limit])
            if not page:
                complete = True
                break
            behind = keeper.windows_behind_suggestions(
                window_ids=[pk for pk, _, _ in page],
                created_from=min(received for _, _, received in page) - CLOCK_MARGIN,
                created_to=max(recorded for _, recorded, _ in page) + longest_ever + CLOCK_MARGIN)
            for start in range(0, len(page), batch_size):
                if _out_of_time(started, max_seconds):
                    break
                batch = page[start:start + batch_size]
                n_purged, n_kept, n_bytes = _batch_purge(window_ids=[pk for pk, _, _ in batch], keep=behind, now=now)
                purged, kept, freed = purged + n_purged, kept + n_kept, freed + n_bytes
                examined += len(batch)
                last = (batch[-1][1], batch[-1][0])
            if last != (page[-1][1], page[-1][0]):  # stopped within the page: out of time
                break
            if len(page) < limit:
                complete = True
                break
    finally:
        # Also after a failed batch: what the committed batches did is recorded.
        result = RawPurgeResult(purged=purged, kept_for_decision=kept, bytes_freed=freed, cutoff=cutoff,
                                retention_days=retention_days, longest_look_back_days=longest, complete=complete)
        if purged or kept:
            # Counts grow only in a batch, and each batch sets `last` at once.
            assert last is not None
            with transaction.atomic():
                # The trail names one row per event: the last window the run examined (oldest first).
                audit_record(actor=SYSTEM, action="window.raw_purge", target=SignalWindow(pk=last[1]),
                             detail={**asdict(result), "cutoff": cutoff.isoformat()})
    log.info("window.raw_purge", purged=purged, kept_for_decision=kept, bytes_freed=freed, cutoff=cutoff.isoformat(),
             complete=complete, seconds=round(time.monotonic() - started, 2))
    return result


def _out_of_time(started: float, max_seconds: float | None) -> bool:
    return max_seconds is not None and time.monotonic() - started > max_seconds


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


def chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start:start + _IN_CHUNK]
