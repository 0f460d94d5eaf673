"""Chain the audit trail: each row carries the hash of the previous row and its own.

Rows written before this migration are chained here, in id order. The append-only trigger must be
lifted for that one backfill (it refuses every UPDATE) and is put back at once; on SQLite adding a
column may rebuild the table, which drops its triggers, so it is (re)created either way.
"""
import importlib

from django.db import migrations, models

append_only = importlib.import_module("clinops.base.migrations.0003_audit_trail_append_only_trigger")


def chain_existing_rows(apps, schema_editor):
    from clinops.base.audit import row_hash

    vendor = schema_editor.connection.vendor
    append_only.backwards(apps, schema_editor)
    AuditEvent = apps.get_model("clinops", "AuditEvent")
    previous = ""
    with schema_editor.connection.cursor() as cursor:
        for event in AuditEvent.objects.order_by("id").iterator():
            digest = row_hash(event, previous)
            cursor.execute("UPDATE clinops_auditevent SET prev_hash = %s, row_hash = %s WHERE id = %s",
                           [previous, digest, event.pk])
            previous = digest
    if vendor in ("postgresql", "sqlite"):
        append_only.forwards(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("clinops", "0003_audit_trail_append_only_trigger")]

    operations = [
        migrations.AddField(model_name="auditevent", name="prev_hash",
                            field=models.CharField(blank=True, default="", max_length=64)),
        migrations.AddField(model_name="auditevent", name="row_hash",
                            field=models.CharField(blank=True, default="", max_length=64)),
        migrations.RunPython(chain_existing_rows, migrations.RunPython.noop),
    ]
