"""Check the audit trail's hash chain end to end; exit 1 on any break."""
from django.core.management.base import BaseCommand, CommandError

from clinops.base.audit import audit_trail_verify
from clinops.base.models import AuditEvent


class Command(BaseCommand):
    help = "Recompute every audit row's hash and report any break in the chain (changed, removed or inserted rows)."

    def handle(self, *args, **options):
        problems = audit_trail_verify()
        if problems:
            for problem in problems[:100]:
                self.stderr.write(problem)
            raise CommandError(f"The audit trail is broken in {len(problems)} place(s).")
        self.stdout.write(f"The audit trail is intact: {AuditEvent.objects.count()} rows, every hash chained.")
