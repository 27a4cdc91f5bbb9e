# Drops the legacy hash columns and puts the append-only rule into the database:
# an UPDATE may only seal an unsealed event (set seq, prev_mac and mac, nothing
# else), the head may not go backwards, and DELETE/TRUNCATE are refused on
# PostgreSQL unless the session sets jitportal.audit_purge = 'on' (retention,
# and test teardown). SQLite has no session settings, so there it guards
# updates only; a later migration that rebuilds these tables on SQLite must
# create the triggers again.

from django.db import migrations, models

EVENT = "requests_app_auditevent"
HEAD = "requests_app_auditchainhead"
_SAME = " AND ".join(
    f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}"
    for column in ("id", "created_at", "actor_id", "actor_username", "action", "target_type", "target_id", "data")
)

POSTGRESQL = f"""
CREATE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.seq IS NULL AND NEW.seq IS NOT NULL AND {_SAME} THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: an update may only seal an event';
    END IF;
    IF current_setting('jitportal.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP;
END $$;
CREATE FUNCTION audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.last_seq >= OLD.last_seq THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'the audit chain head may not go backwards';
    END IF;
    IF current_setting('jitportal.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit chain head is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON {EVENT}
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {EVENT}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_guard();
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON {HEAD}
    FOR EACH ROW EXECUTE FUNCTION audit_head_guard();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON {HEAD}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_guard();
"""
POSTGRESQL_REVERSE = f"""
DROP TRIGGER IF EXISTS audit_event_append_only ON {EVENT};
DROP TRIGGER IF EXISTS audit_event_no_truncate ON {EVENT};
DROP TRIGGER IF EXISTS audit_head_forward_only ON {HEAD};
DROP TRIGGER IF EXISTS audit_head_no_truncate ON {HEAD};
DROP FUNCTION IF EXISTS audit_event_guard();
DROP FUNCTION IF EXISTS audit_head_guard();
"""
SQLITE = [
    f"""CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON {EVENT}
    WHEN NOT (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND {_SAME.replace("IS NOT DISTINCT FROM", "IS")})
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only: an update may only seal an event'); END""",
    f"""CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON {HEAD}
    WHEN NEW.last_seq < OLD.last_seq
    BEGIN SELECT RAISE(ABORT, 'the audit chain head may not go backwards'); END""",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS audit_event_append_only", "DROP TRIGGER IF EXISTS audit_head_forward_only"]


def protect(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": [POSTGRESQL], "sqlite": SQLITE}.get(vendor, []):
        # No parameters: the functions' RAISE messages use % placeholders of their own.
        schema_editor.execute(statement, params=None)


def unprotect(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": [POSTGRESQL_REVERSE], "sqlite": SQLITE_REVERSE}.get(vendor, []):
        # No parameters: the functions' RAISE messages use % placeholders of their own.
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0003_seal_legacy_chain'),
    ]

    operations = [
        migrations.RemoveField(model_name='auditevent', name='hash'),
        migrations.RemoveField(model_name='auditevent', name='prev_hash'),
        migrations.RemoveField(model_name='auditchainhead', name='last_hash'),
        migrations.RemoveField(model_name='auditchainhead', name='count'),
        migrations.AlterField(
            model_name='auditevent',
            name='seq',
            field=models.PositiveBigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.RunPython(protect, unprotect),
    ]
