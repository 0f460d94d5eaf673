"""The audit trail is tamper-evident: each row carries the hash of the row before it, and
`manage.py verify_audit_trail` finds a changed or a removed row."""
import importlib
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from clinops.base.audit import audit_trail_verify, row_hash
from clinops.base.models import AuditEvent
from tests.factories import make_patient, make_team

pytestmark = pytest.mark.django_db
append_only = importlib.import_module("clinops.base.migrations.0003_audit_trail_append_only_trigger")


def forge(sql: str, params=()):
    """What an attacker with database access does: lift the trigger, change rows, put it back."""
    sqlite = connection.vendor == "sqlite"
    lift, restore = ((append_only.SQLITE_DOWN, append_only.SQLITE_UP) if sqlite
                     else (append_only.POSTGRES_DOWN, append_only.POSTGRES_UP))
    with connection.cursor() as cursor:
        cursor.execute(lift)
        cursor.execute(sql, params)
        cursor.execute(restore)


def test_each_row_chains_to_the_one_before(capsys):
    make_team(), make_patient(team=make_team())
    events = list(AuditEvent.objects.order_by("id"))
    assert len(events) >= 3 and events[0].prev_hash == ""
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.row_hash and len(after.row_hash) == 64
        assert after.row_hash == row_hash(after, after.prev_hash)
    call_command("verify_audit_trail")
    assert "intact" in capsys.readouterr().out


def test_a_changed_row_is_found():
    make_team(), make_team(), make_team()
    target = AuditEvent.objects.order_by("id")[1]
    forge("UPDATE clinops_auditevent SET actor_label = %s WHERE id = %s", ["someone-else", target.pk])
    assert audit_trail_verify() == [f"row {target.pk}: its content does not match its hash (changed after it was written)"]
    with pytest.raises(CommandError, match="broken in 1 place"):
        call_command("verify_audit_trail")


def test_a_removed_row_is_found():
    make_team(), make_team(), make_team()
    first, second, third = AuditEvent.objects.order_by("id")[:3]
    forge("DELETE FROM clinops_auditevent WHERE id = %s", [second.pk])
    assert audit_trail_verify() == [f"row {third.pk}: does not follow the row before it (a row was removed or inserted)"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_fork_the_chain():
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    barrier = threading.Barrier(4)

    def append():
        barrier.wait()
        for _ in range(5):
            make_team()
        connection.close()

    threads = [threading.Thread(target=append) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert AuditEvent.objects.count() == 20 and audit_trail_verify() == []
