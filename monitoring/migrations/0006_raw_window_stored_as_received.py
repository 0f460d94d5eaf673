"""Raw windows are stored as received, not deflated (monitoring/encoding.py), and PostgreSQL is told
not to try compressing them either: its TOAST compression (pglz) would spend CPU on each ~31 KB
window and then store it as it is, since sensor samples do not compress by the 25 % it asks for.
EXTERNAL keeps the value out of line, uncompressed. SQLite has no such setting."""
from django.db import migrations, models

TABLE, COLUMN = "monitoring_signalwindow", "raw"


def storage(value: str):
    def apply(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {COLUMN} SET STORAGE {value}")
    return apply


class Migration(migrations.Migration):

    dependencies = [
        ('monitoring', '0005_window_unique_device_start'),
    ]

    operations = [
        migrations.AlterField(
            model_name='signalwindow',
            name='raw',
            field=models.BinaryField(help_text='.npz of the channels exactly as received (monitoring/encoding.py).'),
        ),
        migrations.RunPython(storage("EXTERNAL"), storage("EXTENDED")),
    ]
