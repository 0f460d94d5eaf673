"""Day totals of the live estimates (EstimateDayTotals), and their backfill from the estimates
already stored, so that the first evaluation after the upgrade reads the same evidence as before.
The backfill walks the live estimates once, patient by patient, in pages; it changes no existing
row. (A day missing its totals is read estimate by estimate anyway: therapy.evaluation.)"""
import datetime as dt

import django.db.models.deletion
from django.db import migrations, models


def _backfill(apps, schema_editor):
    estimates = apps.get_model("monitoring", "BPEstimate")
    totals_model = apps.get_model("monitoring", "EstimateDayTotals")
    db = schema_editor.connection.alias
    rows = (estimates.objects.using(db).filter(shadow=False).order_by("patient_id", "recorded_at")
            .values_list("patient_id", "model_version_id", "recorded_at", "sbp_mmhg", "dbp_mmhg", "sbp_low_mmhg",
                         "sbp_high_mmhg", "dbp_low_mmhg", "dbp_high_mmhg", "interval_level", "flags"))
    current, batch = {}, []

    def flush_patient():
        batch.extend(current.values())
        current.clear()
        if len(batch) >= 1000:
            totals_model.objects.using(db).bulk_create(batch)
            batch.clear()

    patient = None
    for patient_id, version_id, at, sbp, dbp, sbp_low, sbp_high, dbp_low, dbp_high, level, flags in rows.iterator(chunk_size=5000):
        if patient_id != patient:
            flush_patient()
            patient = patient_id
        day = at.astimezone(dt.timezone.utc).date()
        t = current.get((day, version_id))
        if t is None:
            t = current[(day, version_id)] = totals_model(
                patient_id=patient_id, model_version_id=version_id, day=day, n=0, sum_sbp_mmhg=0.0,
                sum_dbp_mmhg=0.0, sum_sq_sbp_mmhg2=0.0, sum_sq_dbp_mmhg2=0.0, min_sbp_mmhg=sbp, max_sbp_mmhg=sbp,
                min_dbp_mmhg=dbp, max_dbp_mmhg=dbp, sum_sbp_halfwidth_mmhg=0.0, sum_dbp_halfwidth_mmhg=0.0,
                min_interval_level=level, n_flagged=0, flags=[], first_at=at, last_at=at)
        t.n += 1
        t.sum_sbp_mmhg += sbp
        t.sum_dbp_mmhg += dbp
        t.sum_sq_sbp_mmhg2 += sbp * sbp
        t.sum_sq_dbp_mmhg2 += dbp * dbp
        t.min_sbp_mmhg = sbp if not sbp >= t.min_sbp_mmhg else t.min_sbp_mmhg
        t.max_sbp_mmhg = sbp if not sbp <= t.max_sbp_mmhg else t.max_sbp_mmhg
        t.min_dbp_mmhg = dbp if not dbp >= t.min_dbp_mmhg else t.min_dbp_mmhg
        t.max_dbp_mmhg = dbp if not dbp <= t.max_dbp_mmhg else t.max_dbp_mmhg
        t.sum_sbp_halfwidth_mmhg += (sbp_high - sbp_low) / 2
        t.sum_dbp_halfwidth_mmhg += (dbp_high - dbp_low) / 2
        t.min_interval_level = min(t.min_interval_level, level)
        if flags:
            t.n_flagged += 1
            t.flags = [*t.flags, *(f for f in flags if f not in t.flags)]
        t.last_at = max(t.last_at, at)
    flush_patient()
    totals_model.objects.using(db).bulk_create(batch)


class Migration(migrations.Migration):

    dependencies = [
        ('monitoring', '0009_raw_window_retention'),
        ('patients', '0004_patient_phone'),
    ]

    operations = [
        migrations.CreateModel(
            name='EstimateDayTotals',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField(help_text="UTC day of the estimates' recording times.")),
                ('n', models.PositiveIntegerField()),
                ('sum_sbp_mmhg', models.FloatField()),
                ('sum_dbp_mmhg', models.FloatField()),
                ('sum_sq_sbp_mmhg2', models.FloatField()),
                ('sum_sq_dbp_mmhg2', models.FloatField()),
                ('min_sbp_mmhg', models.FloatField()),
                ('max_sbp_mmhg', models.FloatField()),
                ('min_dbp_mmhg', models.FloatField()),
                ('max_dbp_mmhg', models.FloatField()),
                ('sum_sbp_halfwidth_mmhg', models.FloatField()),
                ('sum_dbp_halfwidth_mmhg', models.FloatField()),
                ('min_interval_level', models.FloatField()),
                ('n_flagged', models.PositiveIntegerField()),
                ('flags', models.JSONField(default=list, help_text="Every distinct flag of the day's estimates.")),
                ('first_at', models.DateTimeField()),
                ('last_at', models.DateTimeField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('model_version', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='estimate_days', to='monitoring.bpmodelversion')),
                ('patient', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='estimate_days', to='patients.patient')),
            ],
            options={
                'verbose_name_plural': 'estimate day totals',
                'constraints': [models.UniqueConstraint(fields=('patient', 'day', 'model_version'), name='estimate_day_totals_unique')],
            },
        ),
        migrations.RunPython(_backfill, migrations.RunPython.noop),
    ]
