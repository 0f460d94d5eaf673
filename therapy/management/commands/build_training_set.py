"""Build a versioned training set from production: cuff-paired windows and clinician decisions."""
import datetime as dt

from django.core.management.base import BaseCommand
from django.utils import timezone

from clinops.base.audit import SYSTEM
from therapy.feedback import training_set_build


class Command(BaseCommand):
    help = "Build a versioned training set from the last N days of cuff-paired windows and clinician decisions."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=56.0, help="Look back this many days (default 56).")

    def handle(self, *args, days: float, **options):
        now = timezone.now()
        training_set = training_set_build(actor=SYSTEM, created_by="manage.py build_training_set",
                                          since=now - dt.timedelta(days=days), until=now)
        self.stdout.write(f"{training_set.version}: {training_set.n_samples} windows of {training_set.n_patients} "
                          f"patients, {training_set.n_decisions} clinician decisions, sha256 {training_set.sha256}")
        self.stdout.write(f"Train with it: manage.py train_bp_model --production-set {training_set.version}")
