"""Raw-window retention (monitoring/retention.py): when a window's raw bytes were dropped, when a purge
found a suggestion resting on it (kept for good), and the index of the windows a purge has still to
look at. No existing row changes: both columns start empty (on PostgreSQL a nullable column without a
default is added without rewriting the table).

The index is built CONCURRENTLY on PostgreSQL (the migration is therefore not atomic there), so that
building it over a production windows table never holds back the inserts of ingest; SQLite builds it
the ordinary way."""
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
    ]
