"""Thin API views for the therapy engine: plans, suggestions and decisions, what the patient
reports (doses, symptoms, side effects) and alerts. Validate -> one service or selector -> respond.

Patients see their own released changes, doses, reports and seek-care messages; the routing
reasons, model versions and evidence are for the care team."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinops.base.parsers import holds_nul
from patients.models import Role, User
from patients.permissions import IsPerson
from patients.selectors import patients_visible_to
from therapy import plans, services
from therapy.adherence import scheduled_doses
from therapy.domain import RED_FLAG_SYMPTOMS, ExclusionKind, Frequency, Symptom
from therapy.models import (
    DEFAULT_SEEK_CARE_INSTRUCTIONS,
    RELEASED_STATUSES,
    Alert,
    DoseLog,
    PlanVersion,
    ReportKind,
    Suggestion,
    SuggestionStatus,
    SymptomReport,
)
from therapy.selectors import adherence_of, alerts_open_for, plan_current, released_changes, suggestions_visible_to


def _is_patient(request: Request) -> bool:
    return getattr(request.user, "role", None) == Role.PATIENT


# --- Plans ---------------------------------------------------------------------------------------

class PlanOutput(serializers.ModelSerializer):
    regimen = serializers.SerializerMethodField(help_text="The current rung's regimen, in words.")
    rungs = serializers.SerializerMethodField(help_text="Every rung of the ladder in words, mildest first.")
    created_by: serializers.StringRelatedField[User] = serializers.StringRelatedField()

    class Meta:
        model = PlanVersion
        exclude = ["patient"]

    def get_regimen(self, plan: PlanVersion) -> str:
        return plans.ladder_of(plan).describe(plan.current_rung)

    def get_rungs(self, plan: PlanVersion) -> list[str]:
        ladder = plans.ladder_of(plan)
        return [ladder.describe(i) for i in range(len(ladder.rungs))]


class DoseInput(serializers.Serializer):
    drug = serializers.CharField(max_length=80)
    dose_mg = serializers.FloatField(min_value=0.001, max_value=10_000)
    frequency = serializers.ChoiceField(choices=[f.value for f in Frequency])


class ExclusionInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[k.value for k in ExclusionKind])
    detail = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class PlanInput(serializers.Serializer):
    reason = serializers.CharField(help_text="Why the plan is set or changed (kept with the version).")
    template = serializers.ChoiceField(choices=["ace-ccb-thiazide", "arb-ccb-thiazide"], required=False,
                                       help_text="Start (again) from a ladder template; omit to change the current plan.")
    ladder_name = serializers.CharField(required=False, max_length=120, help_text="Name of a ladder built by hand.")
    ladder = serializers.ListField(
        child=serializers.ListField(child=DoseInput(), min_length=1, max_length=10), required=False, min_length=1,
        max_length=20,
        help_text='A ladder built by hand, mildest rung first: [[{"drug": "losartan", "dose_mg": 50, '
                  '"frequency": "once daily"}], ...]; every rung is the full regimen.')
    target_sbp_mmhg = serializers.FloatField(required=False, min_value=90, max_value=180)
    target_dbp_mmhg = serializers.FloatField(required=False, min_value=50, max_value=120)
    current_rung = serializers.IntegerField(required=False, min_value=0)
    look_back_days = serializers.FloatField(required=False, min_value=1, max_value=90)
    min_usable_estimates = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    min_distinct_days = serializers.IntegerField(required=False, min_value=1, max_value=90)
    min_days_between_changes = serializers.FloatField(required=False, min_value=0, max_value=365)
    step_down_sbp_mmhg = serializers.FloatField(required=False, min_value=80, max_value=160)
    auto_step_up = serializers.BooleanField(required=False)
    auto_step_down = serializers.BooleanField(required=False)
    max_auto_rung = serializers.IntegerField(required=False, min_value=0)
    max_interval_halfwidth_mmhg = serializers.FloatField(required=False, min_value=0, max_value=50)
    min_usable_window_share = serializers.FloatField(required=False, min_value=0, max_value=1)
    calibration_max_age_days = serializers.FloatField(required=False, min_value=0, max_value=365)
    series_days = serializers.IntegerField(required=False, min_value=3, max_value=28,
                                           help_text="Days of a home cuff series (7).")
    series_discard_first_day = serializers.BooleanField(required=False)
    series_min_readings = serializers.IntegerField(required=False, min_value=4, max_value=200)
    series_min_days = serializers.IntegerField(required=False, min_value=2, max_value=28)
    agreement_period_days = serializers.FloatField(required=False, min_value=7, max_value=365,
                                                   help_text="Period of the wearable's agreement with the cuff (60 days).")
    agreement_min_pairs = serializers.IntegerField(required=False, min_value=2, max_value=100)
    agreement_max_bias_mmhg = serializers.FloatField(required=False, min_value=0, max_value=20)
    agreement_max_sd_mmhg = serializers.FloatField(required=False, min_value=0, max_value=30)
    exclusions = serializers.ListField(child=ExclusionInput(), required=False, max_length=len(ExclusionKind))
    seek_care_instructions = serializers.CharField(required=False, max_length=2000)

    # Ladder and exclusions are stored as given (jsonb), which holds no NUL character.
    def validate_ladder(self, value):
        return _without_nul(value)

    def validate_exclusions(self, value):
        return _without_nul(value)


def _without_nul(value):
    if holds_nul(value):
        raise serializers.ValidationError("A NUL character (\\u0000) is not accepted here.")
    return value


class PatientPlanApi(APIView):
    """The patient's current plan (GET), or a new version of it (POST, care team only, with a reason)."""

    permission_classes = [IsPerson]

    @extend_schema(responses=PlanOutput)
    def get(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        plan = plan_current(patient)
        if plan is None:
            return Response({"message": "No plan has been set for this patient yet.", "extra": {}}, status=404)
        data = PlanOutput(plan).data
        if _is_patient(request):
            data["reason"] = ""  # a clinician's own words about the plan are for the care team
        return Response(data)

    @extend_schema(request=PlanInput, responses={201: PlanOutput})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        payload = PlanInput(data=request.data)
        payload.is_valid(raise_exception=True)
        values = dict(payload.validated_data)
        reason, template = values.pop("reason"), values.pop("template", None)
        if template:
            plan = services.plan_create(actor=request.user, patient=patient, template=template, reason=reason, **values)
        else:
            plan = services.plan_change(actor=request.user, patient=patient, reason=reason, **values)
        return Response(PlanOutput(plan).data, status=status.HTTP_201_CREATED)


# --- Suggestions and decisions -------------------------------------------------------------------

class SuggestionOutput(serializers.ModelSerializer):
    """Everything the care team needs to decide: evidence, versions, every routing reason."""

    class Meta:
        model = Suggestion
        fields = ["id", "patient", "plan_version", "kind", "from_rung", "to_rung", "from_regimen", "to_regimen",
                  "evidence", "estimate_ids", "model_versions", "policy_version", "auto_release", "routing_reasons",
                  "proposal_reasons", "escalations", "urgent", "status", "superseded_by", "proposed_rung",
                  "proposed_regimen", "decided_by", "decided_at", "decision_reason", "created_at", "updated_at"]


class ReleasedChangeOutput(serializers.ModelSerializer):
    """What the patient sees of a released change: their regimen before and after."""

    class Meta:
        model = Suggestion
        fields = ["id", "from_regimen", "to_regimen", "status", "created_at", "updated_at"]


class SuggestionListApi(ListAPIView):
    """For the care team: suggestions of their patients (filter by status, patient, urgent), urgent
    first then oldest. For a patient: their released changes."""

    permission_classes = [IsPerson]
    filterset_fields = ["status", "patient", "urgent", "kind"]

    def get_queryset(self):
        visible = suggestions_visible_to(self.request.user)
        if _is_patient(self.request):
            return released_changes(visible)
        return visible.order_by("-urgent", "created_at")

    def get_serializer_class(self):
        return ReleasedChangeOutput if _is_patient(self.request) else SuggestionOutput


class SuggestionDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=SuggestionOutput)
    def get(self, request: Request, suggestion_id: int) -> Response:
        if _is_patient(request):
            shown = suggestions_visible_to(request.user).filter(status__in=(*RELEASED_STATUSES, SuggestionStatus.ACKNOWLEDGED))
            suggestion = get_object_or_404(shown, pk=suggestion_id)
            return Response(ReleasedChangeOutput(suggestion).data)
        return Response(SuggestionOutput(get_object_or_404(suggestions_visible_to(request.user), pk=suggestion_id)).data)


class _DecisionApi(APIView):
    permission_classes = [IsPerson]

    def _suggestion(self, request: Request, suggestion_id: int) -> Suggestion:
        return get_object_or_404(suggestions_visible_to(request.user), pk=suggestion_id)


class ApproveInput(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ModifyInput(serializers.Serializer):
    to_rung = serializers.IntegerField(min_value=0, help_text="0-based rung index on the plan's ladder.")
    reason = serializers.CharField(max_length=2000)


class RejectInput(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class _ClinicianDecisionApi(_DecisionApi):
    """One pending suggestion decided by the care team: validate the input, call the service."""

    input_serializer: type[serializers.Serializer]
    decide: staticmethod  # the therapy service that records the decision

    def post(self, request: Request, suggestion_id: int) -> Response:
        suggestion = self._suggestion(request, suggestion_id)
        payload = self.input_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        decided = self.decide(actor=request.user, suggestion_id=suggestion.pk, **payload.validated_data)
        return Response(SuggestionOutput(decided).data)


@extend_schema(request=ApproveInput, responses=SuggestionOutput)
class SuggestionApproveApi(_ClinicianDecisionApi):
    """Approve the step as proposed: it is released to the patient and the rung moves (care team)."""

    input_serializer = ApproveInput
    decide = staticmethod(services.suggestion_approve)


@extend_schema(request=ModifyInput, responses=SuggestionOutput)
class SuggestionModifyApi(_ClinicianDecisionApi):
    """Release another rung (at most one from the current), with a reason (care team)."""

    input_serializer = ModifyInput
    decide = staticmethod(services.suggestion_modify)


@extend_schema(request=RejectInput, responses=SuggestionOutput)
class SuggestionRejectApi(_ClinicianDecisionApi):
    """Reject with a reason; nothing reaches the patient (care team)."""

    input_serializer = RejectInput
    decide = staticmethod(services.suggestion_reject)


class SuggestionAcknowledgeApi(_DecisionApi):
    """The patient confirms they have seen a released change to their regimen."""

    @extend_schema(request=None, responses=ReleasedChangeOutput)
    def post(self, request: Request, suggestion_id: int) -> Response:
        suggestion = self._suggestion(request, suggestion_id)
        return Response(ReleasedChangeOutput(services.suggestion_acknowledge(actor=request.user, suggestion_id=suggestion.pk)).data)


# --- Doses and adherence -------------------------------------------------------------------------

class DoseLogInput(serializers.Serializer):
    day = serializers.DateField(help_text="The day the dose was due (YYYY-MM-DD).")
    drug = serializers.CharField(max_length=80)
    slot = serializers.IntegerField(min_value=1, max_value=3, help_text="Intake of the day, 1-based.")
    taken = serializers.BooleanField()


class DoseLogOutput(serializers.ModelSerializer):
    class Meta:
        model = DoseLog
        fields = ["id", "day", "drug", "dose_mg", "slot", "taken", "logged_at"]


class ScheduledDoseOutput(serializers.Serializer):
    drug = serializers.CharField()
    dose_mg = serializers.FloatField()
    slot = serializers.IntegerField()
    per_day = serializers.IntegerField()
    # DRF's SerializerMetaclass pops declared fields off the class, so this never shadows Field.label
    # (the serializer's own label); the stubs cannot express that.
    label = serializers.CharField()  # type: ignore[assignment]
    taken = serializers.BooleanField(allow_null=True, help_text="null: not logged yet")


class AdherenceOutput(serializers.Serializer):
    share = serializers.FloatField(allow_null=True, help_text="Taken / scheduled, 0..1; null when nothing was logged.")
    taken = serializers.IntegerField()
    scheduled = serializers.IntegerField()
    first_day = serializers.DateField(allow_null=True)
    last_day = serializers.DateField(allow_null=True)
    text = serializers.CharField()


class DosesDayOutput(serializers.Serializer):
    day = serializers.DateField()
    doses = ScheduledDoseOutput(many=True)
    adherence = AdherenceOutput()


class PatientDosesApi(APIView):
    """GET: the doses due on a day (default today) with what was logged, and adherence over the
    look-back. POST: log one dose as taken or missed (201 new, 200 the same answer again)."""

    permission_classes = [IsPerson]

    @extend_schema(parameters=[OpenApiParameter("day", str, description="YYYY-MM-DD; default today")],
                   responses=DosesDayOutput)
    def get(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        plan = plan_current(patient)
        if plan is None:
            return Response({"message": "No plan has been set for this patient yet.", "extra": {}}, status=404)
        day_field = serializers.DateField()
        try:
            day = day_field.to_internal_value(request.query_params["day"]) if "day" in request.query_params else timezone.localdate()
        except serializers.ValidationError as exc:
            return Response({"message": "Invalid day.", "extra": {"fields": {"day": exc.detail}}}, status=400)
        logged = {(d.drug, d.slot): d for d in DoseLog.objects.filter(patient=patient, day=day)}
        due = scheduled_doses(plans.ladder_of(plan).rungs[plan.current_rung], day)
        adherence = adherence_of(patient, plan, now=timezone.now())
        return Response({
            "day": day,
            "doses": [{"drug": d.drug, "dose_mg": d.dose_mg, "slot": d.slot, "per_day": d.per_day, "label": d.describe(),
                       "taken": logged[(d.drug, d.slot)].taken if (d.drug, d.slot) in logged else None} for d in due],
            "adherence": {"share": adherence.share, "taken": adherence.taken, "scheduled": adherence.scheduled,
                          "first_day": adherence.first_day, "last_day": adherence.last_day, "text": adherence.describe()},
        })

    @extend_schema(request=DoseLogInput, responses={201: DoseLogOutput, 200: DoseLogOutput})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        payload = DoseLogInput(data=request.data)
        payload.is_valid(raise_exception=True)
        entry, created = services.dose_log_record(actor=request.user, patient=patient, **payload.validated_data)
        return Response(DoseLogOutput(entry).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# --- Symptom and side-effect reports -------------------------------------------------------------

class SymptomReportInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ReportKind.choices)
    symptom = serializers.ChoiceField(choices=[s.value for s in Symptom], required=False, allow_blank=True, default="")
    drug = serializers.CharField(required=False, allow_blank=True, default="", max_length=80)
    detail = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class SymptomReportOutput(serializers.ModelSerializer):
    class Meta:
        model = SymptomReport
        fields = ["id", "kind", "symptom", "drug", "detail", "reported_at"]


class PatientSymptomReportsApi(APIView):
    """GET: the patient's reports, newest first. POST: report a symptom or a side effect; a red
    flag answers with seek_care_now and the plan's instructions at once, and the care team gets an
    urgent item."""

    permission_classes = [IsPerson]

    @extend_schema(responses=SymptomReportOutput(many=True))
    def get(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        return Response(SymptomReportOutput(patient.symptom_reports.all()[:200], many=True).data)

    @extend_schema(request=SymptomReportInput, responses={201: SymptomReportOutput})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        payload = SymptomReportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        report = services.symptom_report_record(actor=request.user, patient=patient, **payload.validated_data)
        seek_care_now = report.symptom in {s.value for s in RED_FLAG_SYMPTOMS}
        plan = plan_current(patient)
        advice = (plan.seek_care_instructions if plan else DEFAULT_SEEK_CARE_INSTRUCTIONS) if seek_care_now else ""
        return Response({**SymptomReportOutput(report).data, "seek_care_now": seek_care_now, "advice": advice},
                        status=status.HTTP_201_CREATED)


# --- Alerts -------------------------------------------------------------------------------------

class AlertOutput(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "patient", "cause", "message", "seek_care", "patient_message", "suggestion", "raised_at", "updated_at"]


class PatientAlertOutput(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "seek_care", "patient_message", "raised_at"]


class AlertListApi(ListAPIView):
    """Open alerts: for the care team, every escalation of their patients (newest first); for a
    patient, their own seek-care messages."""

    permission_classes = [IsPerson]
    filterset_fields = ["patient", "cause", "seek_care"]

    def get_queryset(self):
        alerts = alerts_open_for(self.request.user)
        return alerts.filter(seek_care=True) if _is_patient(self.request) else alerts

    def get_serializer_class(self):
        return PatientAlertOutput if _is_patient(self.request) else AlertOutput
