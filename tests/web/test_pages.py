"""The clinician app and the portal without a browser: who may open what, CSRF, the decisions,
and a bounded number of queries per page whatever the volume."""
import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import make_clinician, make_patient, make_team
from tests.therapy.conftest import clinic, estimates, plan, week_of  # noqa: F401 - fixtures
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Suggestion, SuggestionStatus

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pending(clinic, plan, estimates):  # noqa: F811
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())


def test_anonymous_visitors_are_sent_to_sign_in(db):
    for url in ("/clinic/", "/clinic/patients/", "/portal/", "/portal/symptoms/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_a_clinician_outside_the_care_team_gets_404_and_a_patient_403_in_the_clinician_app(clinic, pending):
    outsider = logged_in(make_clinician(team=make_team()).user)
    assert outsider.get(f"/clinic/patients/{clinic['patient'].pk}/").status_code == 404
    assert outsider.post(f"/clinic/suggestions/{pending.pk}/approve/").status_code == 404
    other_patient = logged_in(make_patient(team=make_team()).user)
    for url in ("/clinic/", "/clinic/patients/", f"/clinic/patients/{clinic['patient'].pk}/"):
        assert other_patient.get(url).status_code == 403
    assert logged_in(clinic["clinician"]).get("/portal/").status_code == 403
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.PENDING_REVIEW
    # Another patient can neither see nor acknowledge this patient's released change.
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=pending.pk)
    assert other_patient.post(f"/portal/changes/{pending.pk}/acknowledge/").status_code == 404
    assert "lisinopril 20 mg" not in other_patient.get("/portal/").content.decode()
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.APPROVED


def test_forms_are_csrf_protected(clinic, pending):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinic["clinician"])
    assert client.post(f"/clinic/suggestions/{pending.pk}/approve/").status_code == 403
    patient = Client(enforce_csrf_checks=True)
    patient.force_login(clinic["patient"].user)
    assert patient.post("/portal/symptoms/", {"kind": "symptom", "symptom": "chest pain"}).status_code == 403
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.PENDING_REVIEW and not clinic["patient"].symptom_reports.exists()


def test_the_queue_shows_the_evidence_and_a_decision_replaces_the_item_in_place(clinic, pending):
    client = logged_in(clinic["clinician"])
    page = client.get("/clinic/").content.decode()
    assert "lisinopril 10 mg once daily" in page and "lisinopril 20 mg once daily" in page
    # week_of spreads the readings over 7 x 24 h, which touches 7 or 8 calendar days (UTC) by the time of day.
    days = len({(timezone.now() - dt.timedelta(hours=h)).astimezone(dt.timezone.utc).date() for h, _, _ in week_of(148, 92)})
    assert "148/92 mmHg" in page and f"14 on {days} days" in page and "adherence unknown" in page
    refused = client.post(f"/clinic/suggestions/{pending.pk}/reject/", {"reason": " "}, HTTP_HX_REQUEST="true")
    assert "Say why the suggestion is rejected." in refused.content.decode()
    decided = client.post(f"/clinic/suggestions/{pending.pk}/approve/", HTTP_HX_REQUEST="true")
    assert decided.status_code == 200 and 'data-testid="decided"' in decided.content.decode()
    assert Suggestion.objects.get().status == SuggestionStatus.APPROVED
    assert "Nothing waiting for review." in client.get("/clinic/").content.decode()


def test_the_patient_list_triages_and_searches(clinic, plan, estimates):  # noqa: F811
    plan()
    estimates(week_of(150, 95))
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    clinic["device"].__class__.objects.filter(pk=clinic["device"].pk).update(last_seen_at=timezone.now())
    team = clinic["patient"].care_teams.get()
    quiet = make_patient(team=team)
    client = logged_in(clinic["clinician"])
    rows = client.get("/clinic/patients/").context["rows"]
    assert [(r.patient, r.triage.value) for r in rows] == [(quiet, "device silent"), (clinic["patient"], "uncontrolled")]
    found = client.get("/clinic/patients/", {"q": clinic["patient"].medical_record_number}).context["rows"]
    assert [r.patient for r in found] == [clinic["patient"]]
    assert [r.patient for r in client.get("/clinic/patients/", {"triage": "uncontrolled"}).context["rows"]] == [clinic["patient"]]


def test_the_portal_says_the_bp_in_words_and_takes_a_dose_and_a_red_flag(clinic, plan, estimates):  # noqa: F811
    plan(seek_care_instructions="Call 112 now.")
    estimates(week_of(138, 86))
    client = logged_in(clinic["patient"].user)
    home = client.get("/portal/").content.decode()
    assert ("Your wearable estimates your average this week at 138/86, above your target of 135/85 "
            "(an estimate, not a measurement).") in home
    assert "No home cuff readings this week: measure morning and evening, two readings a minute apart." in home
    today = timezone.localdate().isoformat()
    tapped = client.post("/portal/doses/", {"day": today, "drug": "lisinopril", "slot": 1, "taken": "yes"}, HTTP_HX_REQUEST="true")
    assert "taken ✓" in tapped.content.decode() and clinic["patient"].dose_logs.get().taken
    red = client.post("/portal/symptoms/", {"kind": "symptom", "symptom": "chest pain"})
    assert 'data-testid="seek-care"' in red.content.decode() and "Call 112 now." in red.content.decode()


def test_pages_run_a_bounded_number_of_queries_whatever_the_volume(clinic, plan, estimates):  # noqa: F811
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92, per_day=6))
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    team = clinic["patient"].care_teams.get()
    client = logged_in(clinic["clinician"])
    pages = ("/clinic/", "/clinic/patients/", f"/clinic/patients/{clinic['patient'].pk}/")

    def queries() -> list[int]:
        counts = []
        for url in pages:
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url).status_code == 200
            counts.append(len(captured))
        return counts

    def add_patients(n: int) -> None:
        for _ in range(n):
            other = make_patient(team=team)
            services.plan_create(actor=clinic["clinician"], patient=other, template="arb-ccb-thiazide", reason="start")
            services.symptom_report_record(actor=clinic["clinician"], patient=other, kind="side_effect", detail="cough")
            patient_therapy_evaluate(patient_id=other.pk, now=timezone.now() + dt.timedelta(seconds=1))

    add_patients(2)
    few = queries()
    add_patients(13)
    assert queries() == few and max(few) <= 25, few
    assert len(client.get("/clinic/").context["items"]) == 16


def test_the_plan_editor_saves_a_new_version_only_with_a_reason(clinic, plan):  # noqa: F811
    first = plan()
    client = logged_in(clinic["clinician"])
    url = f"/clinic/patients/{clinic['patient'].pk}/plan/"
    page = client.get(url)
    assert "Only when every bound below holds" in page.content.decode()
    assert "reason" not in page.context["form"].initial  # each change states its own reason
    form = {**page.context["form"].initial, "target_sbp_mmhg": 130, "target_dbp_mmhg": 80, "auto_step_up": "on",
            "max_auto_rung": 2, "exclusions": ["irregular rhythm"], "exclusion_detail": "atrial fibrillation", "reason": ""}
    refused = client.post(url, form)
    assert refused.status_code == 200 and "reason" in refused.context["form"].errors
    assert clinic["patient"].plan_versions.count() == 1
    saved = client.post(url, {**form, "reason": "high risk: diabetes"})
    assert saved.status_code == 302, saved.context["form"].errors
    new = clinic["patient"].plan_versions.order_by("-version").first()
    assert (new.version, new.target_sbp_mmhg, new.auto_step_up, new.max_auto_rung, new.current_rung) == (2, 130, True, 2, first.current_rung)
    assert new.exclusions == [{"kind": "irregular rhythm", "detail": "atrial fibrillation"}]
    assert new.min_usable_window_share == first.min_usable_window_share and new.reason == "high risk: diabetes"
    assert logged_in(clinic["patient"].user).get(url).status_code == 403
    assert logged_in(make_clinician(team=make_team()).user).get(url).status_code == 404


def test_snoozing_from_the_queue_needs_a_reason_and_takes_the_item_out(clinic, plan, estimates):  # noqa: F811
    plan()
    estimates(week_of(128, 80))
    services.symptom_report_record(actor=clinic["patient"].user, patient=clinic["patient"], kind="side_effect", detail="cough")
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    alert = item.alerts.get()
    client = logged_in(clinic["clinician"])
    assert 'data-testid="alert-counter"' in client.get("/clinic/").content.decode()
    assert client.get("/clinic/").context["open_alert_count"] == 1
    refused = client.post(f"/clinic/alerts/{alert.pk}/snooze/", {"reason": "", "days": "3"}, HTTP_HX_REQUEST="true")
    assert "Say why the alert is snoozed." in refused.content.decode()
    assert client.post(f"/clinic/alerts/{alert.pk}/snooze/", {"reason": "x", "days": "30"}, HTTP_HX_REQUEST="true").context["error"]
    done = client.post(f"/clinic/alerts/{alert.pk}/snooze/", {"reason": "ACE cough known", "days": "7"}, HTTP_HX_REQUEST="true")
    assert 'data-testid="snoozed"' in done.content.decode()
    after = client.get("/clinic/")
    assert after.context["items"] == [] and after.context["open_alert_count"] == 0


def test_five_failed_sign_ins_lock_the_account_even_for_the_right_password(clinic):
    client = Client()
    attempts = [client.post("/login/", {"username": clinic["clinician"].username, "password": "wrong"}).status_code
                for _ in range(5)]
    assert attempts == [200, 200, 200, 200, 429]  # the fifth failure locks
    locked = client.post("/login/", {"username": clinic["clinician"].username, "password": "pw-clinician"})
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    other = Client().post("/login/", {"username": clinic["patient"].user.username, "password": "pw-patient"})
    assert other.status_code == 302 and other["Location"] == "/"


def test_clinicians_need_a_totp_code_when_the_second_factor_is_required(clinic, settings):
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = True
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # no back-off after the wrong code below
    client = Client()
    assert client.post("/login/", {"username": clinic["clinician"].username, "password": "pw-clinician"}).status_code == 302
    assert client.get("/clinic/")["Location"] == "/login/otp/"
    enrol = client.get("/login/otp/")
    assert enrol.context["enrolling"] and enrol.context["qr_svg_b64"]
    device = TOTPDevice.objects.get(user=clinic["clinician"])
    assert client.post("/login/otp/", {"token": "000000"}).context["error"]
    assert client.post("/login/otp/", {"token": f"{totp(device.bin_key):06d}"}).status_code == 302
    assert client.get("/clinic/").status_code == 200
    # The API asks the same of a clinician's session.
    fresh = Client()
    fresh.force_login(clinic["clinician"])
    assert fresh.get("/api/v1/suggestions/").status_code == 403
    # Patients are not asked for a second factor.
    assert logged_in(clinic["patient"].user).get("/portal/").status_code == 200


def test_the_trend_is_hourly_means_so_a_month_stays_a_small_chart(clinic, plan, estimates):  # noqa: F811
    from monitoring.selectors import bp_trend

    plan()
    estimates([(0.2, 150, 90), (0.4, 140, 80), (5.0, 130, 84)])
    trend = bp_trend(clinic["patient"], since=timezone.now() - dt.timedelta(days=30))
    # 0.4 h and 0.2 h ago share an hour unless an hour boundary falls between them.
    assert [trend["sbp"], trend["dbp"]] in ([[130.0, 145.0], [84.0, 85.0]], [[130.0, 140.0, 150.0], [84.0, 80.0, 90.0]])
    assert trend["t"] == sorted(trend["t"]) and trend["sbp_low"][0] == 122.0
    assert trend["cuff"][0][1:] == [140.0, 88.0]


def test_a_crisis_cuff_reading_asks_for_a_repeat_and_a_confirming_repeat_says_seek_care_now(clinic, plan):  # noqa: F811
    plan(seek_care_instructions="Call 112 now.")
    client = logged_in(clinic["patient"].user)
    first = client.post("/portal/cuff/", {"sbp_mmhg": "192", "dbp_mmhg": "124", "position": "sitting"}, follow=True)
    assert "wait one minute and measure again" in first.content.decode()
    second = client.post("/portal/cuff/", {"sbp_mmhg": "188", "dbp_mmhg": "121", "position": "sitting"})
    html = second.content.decode()
    assert 'data-testid="seek-care"' in html and "192/124 and 188/121" in html and "Call 112 now." in html


@pytest.mark.parametrize("target, lands", [("https://elsewhere.example/", "/"), ("//elsewhere.example/x", "/"),
                                           ("/clinic/patients/", "/clinic/patients/")])
def test_the_second_factor_sends_a_clinician_only_to_a_page_of_this_site(clinic, settings, target, lands):
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = True
    client = Client()
    client.post("/login/", {"username": clinic["clinician"].username, "password": "pw-clinician"})
    client.get("/login/otp/")
    device = TOTPDevice.objects.get(user=clinic["clinician"])
    answer = client.post(f"/login/otp/?next={target}", {"token": f"{totp(device.bin_key):06d}"})
    assert answer.status_code == 302 and answer["Location"] == lands


def test_the_portal_takes_the_last_days_doses_and_counts_today_as_it_stands(clinic, plan):  # noqa: F811
    plan()  # set two months ago: the regimen has run for days
    client = logged_in(clinic["patient"].user)
    today = timezone.localdate()
    yesterday = today - dt.timedelta(days=1)
    home = client.get("/portal/").content.decode()
    assert f'data-testid="doses-{yesterday.isoformat()}"' in home and "Yesterday" in home
    assert "Today: 1 dose still to log." in home and "look-back" not in home
    tapped = client.post("/portal/doses/", {"day": today.isoformat(), "drug": "lisinopril", "slot": 1, "taken": "yes"},
                         HTTP_HX_REQUEST="true").content.decode()
    assert "taken ✓" in tapped and "Today so far: 1 of 1 taken." in tapped and 'hx-swap-oob="true"' in tapped
    client.post("/portal/doses/", {"day": yesterday.isoformat(), "drug": "lisinopril", "slot": 1, "taken": "yes"},
                HTTP_HX_REQUEST="true")
    home = client.get("/portal/").content.decode()
    assert "Today so far: 1 of 1 taken." in home and "before today: 1 of 7 doses taken." in home
    assert sorted(clinic["patient"].dose_logs.values_list("day", flat=True)) == [yesterday, today]


def test_the_patient_page_says_what_is_automatic_and_the_outcome_in_words(clinic, plan, estimates):  # noqa: F811
    plan(auto_step_up=True, max_auto_rung=0)
    estimates(week_of(148, 92))
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    page = logged_in(clinic["clinician"]).get(f"/clinic/patients/{clinic['patient'].pk}/").content.decode()
    assert "no further step up (automatic steps up end at rung 1; this patient is on rung 1)" in page
    assert "pending_review" not in page and "waiting for a clinician" in page


def test_follow_up_lists_the_overdue_patients_with_their_phone(clinic, plan):  # noqa: F811
    from patients.models import Device, Patient

    plan()
    Patient.objects.filter(pk=clinic["patient"].pk).update(phone="+44 20 7946 0999")
    Device.objects.filter(pk=clinic["device"].pk).update(last_seen_at=timezone.now() - dt.timedelta(days=5))
    page = logged_in(clinic["clinician"]).get("/clinic/overdue/").content.decode()
    for key in ("no_reading", "no_cuff"):
        section = page[page.index(f'data-testid="overdue-{key}"'):]
        section = section[:section.index("</section>")]
        assert clinic["patient"].medical_record_number in section and "+44 20 7946 0999" in section
    unacknowledged = page[page.index('data-testid="overdue-unacknowledged"'):]
    assert "Nobody." in unacknowledged[:unacknowledged.index("</section>")]
    outsider = logged_in(make_clinician(team=make_team()).user).get("/clinic/overdue/").content.decode()
    assert clinic["patient"].medical_record_number not in outsider


def test_the_portal_shows_reminders_and_the_cuff_readings_category_and_a_summary_to_share(clinic, plan):  # noqa: F811
    from monitoring.models import CuffReading

    plan()
    client = logged_in(clinic["patient"].user)
    home = client.get("/portal/").content.decode()
    assert 'data-testid="reminders"' in home and "Log today&#x27;s dose: 1 still to tap below." in home
    assert "Measure with your cuff this" in home
    CuffReading.objects.create(patient=clinic["patient"], measured_at=timezone.now() - dt.timedelta(minutes=5),
                               sbp_mmhg=142, dbp_mmhg=91, source="patient")
    home = client.get("/portal/").content.decode()
    assert "Your last cuff reading: 142/91" in home and "cat-stage-2" in home and "high (stage 2)" in home
    assert "Measure with your cuff this" not in home
    shared = client.get("/portal/summary/").content.decode()
    assert "Home cuff readings (measurements)" in shared and "142/91" in shared
    assert 'data-testid="summary-decisions"' not in shared  # the care team's reasoning stays with them
    printed = logged_in(clinic["clinician"]).get(f"/clinic/patients/{clinic['patient'].pk}/summary/").content.decode()
    assert 'data-testid="summary-decisions"' in printed and "142/91" in printed


def test_each_hourly_mean_is_drawn_at_its_last_reading_over_the_whole_period_named(clinic, plan, estimates):  # noqa: F811
    from monitoring.models import BPEstimate
    from monitoring.selectors import bp_trend

    plan()
    estimates([(0.2, 150, 90), (0.4, 140, 80), (5.0, 130, 84)])
    since = timezone.now() - dt.timedelta(days=30)
    trend = bp_trend(clinic["patient"], since=since)
    recorded = sorted(round(t.timestamp()) for t in BPEstimate.objects.values_list("recorded_at", flat=True))
    # Never drawn before a reading it averages (the middle of the hour was, for a reading at :50).
    assert set(trend["t"]) <= set(recorded) and trend["t"][-1] == recorded[-1]
    assert trend["since"] == round(since.timestamp()) and trend["until"] >= recorded[-1] and trend["tz"] == "UTC"


def test_only_a_plan_version_that_moves_the_rung_is_drawn_as_a_dose_change(clinic, plan):  # noqa: F811
    import json
    import re

    plan()
    services.plan_change(actor=clinic["clinician"], patient=clinic["patient"], reason="lower target",
                         target_sbp_mmhg=130.0)
    services.plan_change(actor=clinic["clinician"], patient=clinic["patient"], reason="step up", current_rung=1)
    page = logged_in(clinic["clinician"]).get(f"/clinic/patients/{clinic['patient'].pk}/").content.decode()
    trend = json.loads(re.search(r'<script id="trend-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [c["label"] for c in trend["rung_changes"]] == ["v3: rung 2"]


def test_pages_show_times_in_the_clinics_zone_and_say_which(clinic, plan, settings):  # noqa: F811
    from monitoring.models import CuffReading

    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9, no daylight saving
    plan()
    at = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.timezone.utc)
    CuffReading.objects.create(patient=clinic["patient"], measured_at=at, sbp_mmhg=131, dbp_mmhg=82, source="patient")
    page = logged_in(clinic["patient"].user).get("/portal/cuff/").content.decode()
    assert "1 Dec 08:30" in page and "Times are in Asia/Tokyo (24-hour clock)." in page
