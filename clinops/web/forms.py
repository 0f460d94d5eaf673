"""Forms of the web app. The plan form says in plain words what each bound does; the therapy
services still check everything (a form is a convenience, not the rule)."""
from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q

from patients.models import CareTeam, Patient
from therapy.domain import LADDER_TEMPLATES, ExclusionKind

KEEP_LADDER = ""


class StrictCheckboxInput(forms.CheckboxInput):
    """What was sent, as sent (CheckboxInput turns any text but "false"/"0" into True first)."""

    def value_from_datadict(self, data, files, name):
        return data.get(name, False)


class TickBox(forms.BooleanField):
    """A checkbox that takes only what a browser sends for one ("on" when ticked, nothing when not;
    true/false and 1/0 too). Django's BooleanField reads any other text as ticked, so a junk value
    would switch on, say, automatic releases; here it is refused."""

    widget = StrictCheckboxInput
    TICKED, CLEAR = frozenset({"on", "true", "1"}), frozenset({"false", "0", ""})

    def to_python(self, value):
        if isinstance(value, str):
            if value.lower() not in self.TICKED | self.CLEAR:
                raise forms.ValidationError("Tick the box or leave it clear.", code="invalid")
            value = value.lower() in self.TICKED
        return super().to_python(value)


class PlanForm(forms.Form):
    template = forms.ChoiceField(
        required=False, label="Medication ladder",
        choices=[(KEEP_LADDER, "Keep the current ladder")] + [(k, v.name) for k, v in LADDER_TEMPLATES.items()],
        help_text="Choosing a template starts the patient on its first rung.")
    target_sbp_mmhg = forms.FloatField(label="Target systolic (home mean below, mmHg)", min_value=90, max_value=180,
                                       help_text="135 by default; 130 for high-risk patients.")
    target_dbp_mmhg = forms.FloatField(label="Target diastolic (home mean below, mmHg)", min_value=50, max_value=120,
                                       help_text="85 by default; 80 for high-risk patients.")
    auto_step_up = TickBox(required=False, label="Release a step UP automatically",
                                      help_text="Only when every bound below holds and at least 80 % of doses were taken.")
    auto_step_down = TickBox(required=False, label="Release a step DOWN automatically",
                                        help_text="When the mean systolic is below the step-down threshold.")
    max_auto_rung = forms.TypedChoiceField(coerce=int, label="Highest rung reachable automatically",
                                           help_text="Anything above waits for you.")
    max_interval_halfwidth_mmhg = forms.FloatField(
        label="Widest uncertainty of the mean accepted (± mmHg)", min_value=0, max_value=50,
        help_text="The 90 % interval of the mean the decision rests on (the home series' or the wearable's); "
                  "if it is wider, the suggestion waits for you.")
    min_usable_window_share = forms.IntegerField(
        label="Minimum usable recordings (%)", min_value=0, max_value=100,
        help_text="Share of the wearable's recordings that passed the quality check over the look-back.")
    calibration_max_age_days = forms.FloatField(label="Cuff calibration at most (days old)", min_value=0, max_value=365,
                                                help_text="An older calibration sends every suggestion to you.")
    agreement_min_pairs = forms.IntegerField(
        label="Wearable trusted after this many cuff pairs", min_value=2, max_value=100,
        help_text="A cuff reading taken while the wearable records tests its estimates of the minutes before. "
                  "Until the patient's own pairs agree, wearable estimates only feed alerts and the trend.")
    agreement_period_days = forms.FloatField(label="…within this many days", min_value=7, max_value=365)
    agreement_max_bias_mmhg = forms.FloatField(label="…with a mean error at most (± mmHg)", min_value=0, max_value=20,
                                               help_text="5 by default (ISO 81060-2).")
    agreement_max_sd_mmhg = forms.FloatField(label="…and an SD of error at most (mmHg)", min_value=0, max_value=30,
                                             help_text="8 by default (ISO 81060-2).")
    series_days = forms.IntegerField(
        label="Home cuff series (days)", min_value=3, max_value=28,
        help_text="Morning and evening, two readings a sitting about a minute apart. A complete series decides "
                  "before the wearable.")
    series_discard_first_day = TickBox(required=False, label="Discard the first day of a series",
                                                  help_text="First-day readings run high.")
    series_min_readings = forms.IntegerField(label="A series needs at least this many readings", min_value=4,
                                             max_value=200)
    series_min_days = forms.IntegerField(label="…on at least this many days", min_value=2, max_value=28)
    look_back_days = forms.FloatField(label="Look-back (days)", min_value=1, max_value=90)
    min_usable_estimates = forms.IntegerField(label="Without a complete series: at least this many wearable estimates",
                                              min_value=1, max_value=1000)
    min_distinct_days = forms.IntegerField(label="…on at least this many days", min_value=1, max_value=90)
    min_days_between_changes = forms.FloatField(label="Minimum days between changes", min_value=0, max_value=365)
    step_down_sbp_mmhg = forms.FloatField(label="Step down when the mean systolic is below (mmHg)", min_value=80,
                                          max_value=160)
    exclusions = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Exclude from automatic changes",
        choices=[(k.value, k.value.capitalize()) for k in ExclusionKind],
        help_text="Any of these turns automatic changes off for this patient.")
    exclusion_detail = forms.CharField(required=False, max_length=200, label="Exclusion detail",
                                       help_text='e.g. "paroxysmal atrial fibrillation"')
    seek_care_instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                                             label="What the patient is told in a crisis")
    reason = forms.CharField(max_length=500, label="Reason for this change (kept with the new version)")

    def __init__(self, *args, rungs: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        max_auto_rung = self.fields["max_auto_rung"]
        assert isinstance(max_auto_rung, forms.TypedChoiceField)  # this form's copy of the field declared above
        max_auto_rung.choices = [(i, f"rung {i + 1}: {label}") for i, label in enumerate(rungs or [])]

    def plan_settings(self) -> dict:
        """The cleaned values as plan settings (shares as fractions, exclusions as records)."""
        data = dict(self.cleaned_data)
        data.pop("reason"), data.pop("template")
        detail = data.pop("exclusion_detail").strip()
        data["exclusions"] = [{"kind": kind, "detail": detail} for kind in data["exclusions"]]
        data["min_usable_window_share"] = data["min_usable_window_share"] / 100
        return data


class PatientListFilter(django_filters.FilterSet):
    """Search by name or record number, and by care team."""

    q = django_filters.CharFilter(method="search", label="Name or record number")
    team = django_filters.ModelChoiceFilter(field_name="care_teams", queryset=CareTeam.objects.none(), label="Care team")

    class Meta:
        model = Patient
        fields = ["q", "team"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        clinician = getattr(user, "clinician", None)
        self.filters["team"].queryset = clinician.care_teams.all() if clinician else CareTeam.objects.all()

    def search(self, queryset, name, value):
        for word in value.split()[:5]:
            queryset = queryset.filter(Q(given_name__icontains=word) | Q(family_name__icontains=word)
                                       | Q(medical_record_number__icontains=word))
        return queryset
