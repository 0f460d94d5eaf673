"""Small template filters for the web app."""
from __future__ import annotations

from django import template

from therapy.categories import CATEGORY_ADVICE, bp_category

register = template.Library()


@register.filter
def percent(share: float | None) -> str:
    """0.83 -> "83 %"."""
    return "—" if share is None else f"{100 * float(share):.0f} %"


@register.filter
def humanize_key(key: str) -> str:
    """ "override_rate_pct" -> "override rate %"."""
    return str(key).replace("_pct", " %").replace("_ms", " (ms)").replace("_", " ")


@register.filter
def report_value(value) -> str:
    """A stored report value in words: numbers rounded, small mappings as "key: value" lists."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {report_value(v)}" for k, v in list(value.items())[:30]) or "—"
    if isinstance(value, list):
        return ", ".join(report_value(v) for v in value[:30]) or "—"
    return "—" if value is None else str(value)


@register.filter
def signed(value: float | None) -> str:
    """1.46 -> "+1.5"; None -> "?" (an unknown figure is shown as unknown, never as 0)."""
    return "?" if value is None else f"{float(value):+.1f}"


@register.filter
def mmhg(value: float | None) -> str:
    """4.04 -> "4.0"; None -> "?"."""
    return "?" if value is None else f"{float(value):.1f}"


OUTCOME_WORDS = {"hold": "no change (hold)", "failed": "the evaluation failed", "pending_review": "waiting for a clinician",
                 "auto_released": "released to the patient automatically", "superseded": "superseded by a newer one"}


@register.filter
def outcome_words(outcome: str) -> str:
    """A latest evaluation's outcome ("pending_review") in words ("waiting for a clinician")."""
    return OUTCOME_WORDS.get(str(outcome), str(outcome).replace("_", " "))


@register.filter
def audit_words(action: str) -> str:
    """An audit action code ("suggestion.pending_review") as words ("suggestion: pending review")."""
    return str(action).replace(".", ": ", 1).replace("_", " ")


@register.inclusion_tag("web/_bp_category.html")
def bp_category_badge(sbp_mmhg, dbp_mmhg):
    """A measured pressure's ACC/AHA 2017 category as a coloured badge with words."""
    category = bp_category(sbp_mmhg, dbp_mmhg)
    if category is None:  # no reading to put in words
        return {"category": None, "words": "", "css": ""}
    return {"category": category, "words": CATEGORY_ADVICE.get(category, ""),
            "css": category.name.lower().replace("_", "-")}
