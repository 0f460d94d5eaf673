"""The models and their migrations agree: a model change without its migration fails here, not
on an operator's `manage.py migrate`."""
import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_its_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        pytest.fail(f"models changed without a migration (makemigrations exit {exc.code}):\n{out.getvalue()}")
