"""train_bp_model registers candidates with their lineage; promote_bp_model applies the gates;
evaluate_bp reports the model and both baselines on any WFDB folder and writes JSON."""
import json

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from monitoring.bp import registry
from monitoring.models import BPModelVersion

pytestmark = pytest.mark.django_db
DATA = settings.RECORDINGS_DIR / "challenge2015"


@pytest.fixture
def trained(capsys):
    call_command("train_bp_model", data=str(DATA))
    return capsys.readouterr().out


def test_training_registers_a_learned_candidate_and_the_baseline_with_their_lineage(trained):
    learned, baseline = (BPModelVersion.objects.exclude(hyperparameters__estimator="carry_forward_baseline").get(),
                         BPModelVersion.objects.get(hyperparameters__estimator="carry_forward_baseline"))
    for model in (learned, baseline):
        assert model.status == "candidate" and len(model.artifact_sha256) == 64
        assert set(model.data_fingerprint["split"]) >= {"train", "validation", "test", "seed"}
        assert len(model.data_fingerprint["files"]) >= 100  # .hea and .mat of 60 records
        assert {"validation", "test", "training"} <= set(model.metrics)
        assert model.features[0] == "pat_foot_ms_median"
        assert model.interval_sbp_mmhg > 0 and model.interval_dbp_mmhg > 0
    assert "[######]" in trained and "Test split" in trained


def test_promotion_follows_the_gates_printed_by_training(trained):
    learned = BPModelVersion.objects.exclude(hyperparameters__estimator="carry_forward_baseline").get()
    passed, reasons = registry.model_version_gates(learned)
    if passed:
        call_command("promote_bp_model", learned.version)
        assert registry.model_active() == learned
    else:
        assert "does NOT pass" in trained
        with pytest.raises(CommandError, match="may not be promoted"):
            call_command("promote_bp_model", learned.version)
        assert registry.model_active() is None


def test_evaluate_bp_reports_the_model_and_both_baselines(trained, tmp_path, capsys):
    baseline = BPModelVersion.objects.get(hyperparameters__estimator="carry_forward_baseline")
    call_command("promote_bp_model", baseline.version)
    records = tmp_path / "records.txt"
    records.write_text("\n".join((DATA / "RECORDS").read_text().split()[:30]))
    out = tmp_path / "report.json"
    call_command("evaluate_bp", data=str(DATA), records=str(records), json_out=str(out))
    report = json.loads(out.read_text())
    assert report["model_version"] == baseline.version
    for target in ("sbp", "dbp"):
        for predictor in ("model", "carry_forward", "population_mean"):
            metrics = report[target][predictor]
            assert {"n_windows", "n_records", "mean_error_mmhg", "sd_error_mmhg", "mae_mmhg",
                    "within_5_mmhg_pct", "within_10_mmhg_pct", "within_15_mmhg_pct", "bhs_grade"} <= set(metrics), metrics
        assert report[target]["model"]["coverage_pct"] is not None
    assert "population_mean" in capsys.readouterr().out
