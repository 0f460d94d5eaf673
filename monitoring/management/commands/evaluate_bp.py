"""Evaluate the active (or a named) BP model on a folder of WFDB records with the fixed protocol:
non-overlapping 30-s windows from t = 0; reference = median beat SBP/DBP of the ABP trace (>= 5
beats); windows starting before 60 s are the calibration (cuff = mean of their references); test
windows start at 60 s and end by 300 s. Reports the model and both baselines, per SBP and DBP."""
import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from monitoring.bp import accuracy, protocol, registry
from monitoring.bp.training import trained_model_of
from monitoring.models import BPModelVersion
from monitoring.signals.recordings import CHALLENGE2015_PLETH_DELAY_S


class Command(BaseCommand):
    help = "Evaluate a BP model (and the two baselines) on WFDB records with ECG + PLETH + ABP."

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, help="Folder of WFDB records.")
        parser.add_argument("--records", help="File listing record names, one per line (default: RECORDS or every .hea).")
        parser.add_argument("--json", dest="json_out", required=True, help="Where to write the report (JSON).")
        parser.add_argument("--model", help="Model version (default: the active one).")
        parser.add_argument("--pleth-delay-s", type=float, default=CHALLENGE2015_PLETH_DELAY_S,
                            help="Recording latency of PLETH behind ECG/ABP to remove (s); 0.90 for challenge2015, 0 for one-clock devices.")

    def handle(self, *args, data, records, json_out, model, pleth_delay_s, **options):
        version = BPModelVersion.objects.filter(version=model).first() if model else registry.model_active()
        if version is None:
            raise CommandError(f"No model version {model!r}." if model else "No active model: name one with --model.")
        folder = Path(data)
        names = Path(records).read_text().split() if records else protocol.record_names(folder)
        if not names:
            raise CommandError(f"No records found in {folder}.")
        started = time.perf_counter()
        dataset = protocol.load_dataset(folder, names, pleth_delay_s=pleth_delay_s)
        report = accuracy.evaluate(trained_model_of(version), dataset)
        report["model_version"] = version.version
        report["elapsed_s"] = round(time.perf_counter() - started, 2)
        Path(json_out).write_text(json.dumps(report, indent=2))
        self.stdout.write(accuracy.format_report(report))
        self.stdout.write(f"\n{version.version} on {len(names)} records in {report['elapsed_s']} s; report written to {json_out}")
