"""Train, evaluate and register BP model candidates (the best learned model and the carry-forward
baseline). Promotion is a separate, audited step: `promote_bp_model`."""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from clinops.base.audit import SYSTEM
from monitoring.bp import accuracy
from monitoring.bp.training import bp_models_train
from monitoring.models import TrainingSet


class Command(BaseCommand):
    help = "Train and register BP model candidates from WFDB recordings (ECG + PLETH + ABP)."

    def add_arguments(self, parser):
        parser.add_argument("--data", default=str(settings.RECORDINGS_DIR / "challenge2015"),
                            help="Folder of WFDB records (default: the shipped challenge2015 set).")
        parser.add_argument("--production-set", default=None, metavar="VERSION",
                            help="Add the windows of this production training set (build_training_set) to the "
                                 "training split; validation, test and gates are unchanged.")

    def handle(self, *args, data: str, production_set: str | None = None, **options):
        from django.core.management.base import CommandError


        extra = None
        if production_set:
            extra = TrainingSet.objects.filter(version=production_set).first()
            if extra is None:
                raise CommandError(f"No training set {production_set}; list them in the admin or build one with "
                                   "manage.py build_training_set.")
        steps = iter(range(1, 100))
        total = 6

        def progress(message: str) -> None:
            step = next(steps)
            bar = "#" * min(step, total) + "." * max(total - step, 0)
            self.stdout.write(f"[{bar}] {message}")

        run = bp_models_train(actor=SYSTEM, data_dir=Path(data), trained_by="manage.py train_bp_model", progress=progress,
                              production_set=extra)
        self.stdout.write("\nTest split (records never seen in training):\n" + accuracy.format_report(run.test_report))
        for model, (passed, reasons) in ((run.learned, run.learned_gates), (run.baseline, run.baseline_gates)):
            verdict = "passes its promotion gates" if passed else "does NOT pass its promotion gates:\n    - " + "\n    - ".join(reasons)
            self.stdout.write(f"\n{model.version}: {verdict}")
        self.stdout.write("\nPromote with: manage.py promote_bp_model VERSION")
