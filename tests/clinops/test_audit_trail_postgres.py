"""On PostgreSQL the database itself refuses UPDATE and DELETE of audit events."""
import pytest
from django.db import DatabaseError, connection, transaction

from clinops.base.models import AuditEvent
from tests.factories import make_team

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _only_on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")


@pytest.mark.parametrize("statement", ["UPDATE clinops_auditevent SET action = 'forged'", "DELETE FROM clinops_auditevent"])
def test_the_database_refuses_changing_audit_rows(statement):
    make_team()
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.get().action == "care_team.create"
