"""Raw-window retention (monitoring/retention.py): when a window's raw bytes were dropped, when a purge
found a suggestion resting on it (kept for good), and the index of the windows a purge has still to
look at. No existing row changes: both columns start empty (on PostgreSQL a nullable column without a
default is added without rewriting the table).

The index is built CONCURRENTLY on PostgreSQL (the migration is therefore not atomic there), so that
building it over a production windows table never holds back the inserts of ingest; SQLite builds it
the ordinary way.

On PostgreSQL autovacuum is also told to visit the windows table and its TOAST table after 1 % of
their rows are dead instead of 20 %: an hourly purge frees 1/720 of a 30-day table, so by default
about six days of raw signal (20 %) would pile up as dead space before it could be reused; at 1 %
it is about seven hours (bench/retention.py shows the reuse after a VACUUM)."""
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

INDEX = models.Index(
    condition=models.Q(("raw_kept_at__isnull", True), ("raw_purged_at__isnull", True),
                       ("status__in", ("processed", "rejected", "failed"))),
    fields=["recorded_at", "id"], name="window_raw_to_examine",
)


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex, built CONCURRENTLY on PostgreSQL."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            AddIndexConcurrently(self.model_name, self.index).database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            AddIndexConcurrently(self.model_name, self.index).database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_backwards(app_label, schema_editor, from_state, to_state)


TABLE = "monitoring_signalwindow"


def autovacuum_scale(value: str | None):
    def apply(apps, schema_editor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        names = "autovacuum_vacuum_scale_factor, toast.autovacuum_vacuum_scale_factor"
        if value is None:
            schema_editor.execute(f"ALTER TABLE {TABLE} RESET ({names})")
        else:
            schema_editor.execute(f"ALTER TABLE {TABLE} SET (autovacuum_vacuum_scale_factor = {value}, "
                                  f"toast.autovacuum_vacuum_scale_factor = {value})")
    return apply


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ('monitoring', '0008_cuff_reading_details_agreement_pairs'),
    ]

    operations = [
        migrations.AddField(
            model_name='signalwindow',
            name='raw_kept_at',
            field=models.DateTimeField(blank=True, help_text='When a purge found a suggestion resting on this window: its raw signal is kept for good.', null=True),
        ),
        migrations.AddField(
            model_name='signalwindow',
            name='raw_purged_at',
            field=models.DateTimeField(blank=True, help_text='When the raw signal was dropped (empty: still stored).', null=True),
        ),
        AddIndexConcurrentlyOnPostgres(model_name='signalwindow', index=INDEX),
        migrations.RunPython(autovacuum_scale("0.01"), autovacuum_scale(None)),
    ]
