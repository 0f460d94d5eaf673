"""Refuse UPDATE (and on PostgreSQL DELETE) of audit events in the database itself.

The application already refuses both; the trigger also stops a stray raw SQL statement. SQLite
keeps DELETE open because Django's test flush empties tables with DELETE (PostgreSQL uses
TRUNCATE, which row triggers do not see).
"""
from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION clinops_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'clinops_auditevent is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER clinops_auditevent_append_only
    BEFORE UPDATE OR DELETE ON clinops_auditevent
    FOR EACH ROW EXECUTE FUNCTION clinops_audit_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS clinops_auditevent_append_only ON clinops_auditevent;
DROP FUNCTION IF EXISTS clinops_audit_append_only();
"""
SQLITE_UP = """
CREATE TRIGGER clinops_auditevent_append_only
BEFORE UPDATE ON clinops_auditevent
BEGIN
    SELECT RAISE(ABORT, 'clinops_auditevent is append-only (UPDATE refused)');
END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS clinops_auditevent_append_only;"


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_UP)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_DOWN)


class Migration(migrations.Migration):
    dependencies = [("clinops", "0002_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
