"""The raw windows therapy's suggestions rest on keep their bytes for good: the keeper monitoring's
raw-window purge asks (monitoring/ingest/retention.py), registered in TherapyConfig.ready.

- An evaluation at time t (therapy.evaluation) rests on estimates of windows recorded within its
  plan's look-back before t; so the purge's cut-off lies beyond the longest look-back of the
  current plans, and the windows behind a suggestion already made are found from its stored JSON."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from django.db.models import Max, OuterRef, Subquery

from monitoring.ingest.retention import chunks
from monitoring.models import BPEstimate
from therapy.evaluation import SAFETY_LOOK_BACK_DAYS
from therapy.models import PlanVersion, Suggestion


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


class SuggestionsKeepTheirWindows:
    """monitoring.ingest.retention.RawWindowKeeper for therapy's suggestions and plans."""

    def windows_behind_suggestions(self, *, window_ids: Sequence[int], created_from: dt.datetime,
                                   created_to: dt.datetime) -> set[int]:
        """The windows (of `window_ids`) on whose estimates a suggestion created between the two times
        rests. Reads the windows' estimates and those suggestions' JSON once, streamed."""
        window_of: dict[int, int] = {}
        for chunk in chunks(window_ids):
            window_of.update(BPEstimate.objects.filter(window_id__in=chunk).values_list("id", "window_id").order_by())
        if not window_of:
            return set()
        behind: set[int] = set()
        rows = (Suggestion.objects.filter(created_at__gte=created_from, created_at__lte=created_to)
                .values_list("estimate_ids", "escalations").order_by())
        for estimate_ids, escalations in rows.iterator(chunk_size=200):
            for estimate_id in referenced_estimate_ids(estimate_ids, escalations):
                window_id = window_of.get(estimate_id)
                if window_id is not None:
                    behind.add(window_id)
        return behind

    def longest_look_back_days(self, *, current: bool) -> float:
        """The longest look-back (days) of the patients' current plans (the evaluations to come), or of
        every plan version there has been (the suggestions made so far), and at least the
        failing-evaluation path's own (therapy.evaluation.SAFETY_LOOK_BACK_DAYS)."""
        versions = PlanVersion.objects.all()
        if current:
            latest = PlanVersion.objects.filter(patient_id=OuterRef("patient_id")).order_by("-version").values("pk")[:1]
            versions = versions.filter(pk=Subquery(latest))
        longest = versions.aggregate(days=Max("look_back_days"))["days"]
        return max(SAFETY_LOOK_BACK_DAYS, longest or 0.0)
