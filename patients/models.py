"""People, care teams, devices and consent.

Nothing clinical happens in save() or signals: writes go through patients/services.py.
"""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Role(models.TextChoices):
    CLINICIAN = "clinician", "Clinician"
    PATIENT = "patient", "Patient"
    ADMIN = "admin", "Administrator"


class User(AbstractUser):
    """A person who logs in. Devices are not users: they authenticate with an API key."""

    role = models.CharField(max_length=16, choices=Role.choices)

    @property
    def is_clinician(self) -> bool:
        return self.role == Role.CLINICIAN

    @property
    def is_patient(self) -> bool:
        return self.role == Role.PATIENT

    @property
    def is_clinops_admin(self) -> bool:
        return self.role == Role.ADMIN or self.is_superuser


class Profession(models.TextChoices):
    PHYSICIAN = "physician", "Physician"
    NURSE = "nurse", "Nurse"
    PHARMACIST = "pharmacist", "Pharmacist"


class Clinician(models.Model):
    user = models.OneToOneField(User, on_delete=models.PROTECT, related_name="clinician")
    profession = models.CharField(max_length=16, choices=Profession.choices)
    registration_number = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return self.user.get_full_name() or self.user.username


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class ConsentStatus(models.TextChoices):
    PENDING = "pending", "Not yet asked"
    GIVEN = "given", "Given"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Patient(models.Model):
    user = models.OneToOneField(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="patient"
    )
    medical_record_number = models.CharField(max_length=64, unique=True)
    given_name = models.CharField(max_length=120)
    family_name = models.CharField(max_length=120)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=16, choices=Sex.choices)
    consent_status = models.CharField(
        max_length=16, choices=ConsentStatus.choices, default=ConsentStatus.PENDING
    )
    consent_changed_at = models.DateTimeField(null=True, blank=True)
    phone = models.CharField(max_length=32, blank=True,
                             help_text="Where the care team reaches the patient, shown with every escalation.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family_name", "given_name", "id"]

    def __str__(self) -> str:
        return f"{self.given_name} {self.family_name} ({self.medical_record_number})"

    @property
    def has_consented(self) -> bool:
        return self.consent_status == ConsentStatus.GIVEN


class CareTeam(models.Model):
    """Which clinicians may see which patients: the unit of clinical access."""

    name = models.CharField(max_length=120, unique=True)
    clinicians = models.ManyToManyField(Clinician, related_name="care_teams", blank=True)
    patients = models.ManyToManyField(Patient, related_name="care_teams", blank=True)
    # Clinical leads answer for the team's use of automatic releases: they (or an administrator)
    # may resume releases that model monitoring suspended.
    clinical_leads = models.ManyToManyField(Clinician, related_name="leads_care_teams", blank=True)

    def __str__(self) -> str:
        return self.name


class DeviceKind(models.TextChoices):
    WEARABLE = "wearable", "Wearable (ECG + PPG)"
    CUFF = "cuff", "Upper-arm cuff"


class Device(models.Model):
    """A wearable or a home cuff bound to one patient. Revocation is permanent; a new device gets a
    new row. A cuff may upload its readings (a connected cuff) or the patient types them in."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="devices")
    kind = models.CharField(max_length=12, choices=DeviceKind.choices, default=DeviceKind.WEARABLE)
    make = models.CharField(max_length=80)
    model = models.CharField(max_length=80)
    firmware = models.CharField(max_length=40)
    serial = models.CharField(max_length=80, unique=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=255, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.make} {self.model} #{self.serial}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class CuffModel(models.Model):
    """A cuff make and model. Its readings may support an automatic dose change only once an
    administrator has marked it validated (e.g. listed by STRIDE BP or validated to ISO 81060-2),
    naming the evidence; every change of the flag is audited."""

    make = models.CharField(max_length=80)
    model = models.CharField(max_length=80)
    validated = models.BooleanField(default=False)
    validation_reference = models.CharField(max_length=255, blank=True,
                                            help_text="Where the validation is published.")
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["make", "model"]
        constraints = [models.UniqueConstraint(fields=["make", "model"], name="cuff_model_unique_make_model")]

    def __str__(self) -> str:
        return f"{self.make} {self.model}{' (validated)' if self.validated else ''}"


class DeviceAPIKey(AbstractAPIKey):
    """Hashed API key of a device (only the prefix and a hash are stored)."""

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "device API key"
        verbose_name_plural = "device API keys"
