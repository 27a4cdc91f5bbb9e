"""Making the database match a checked policy, in one transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, models, transaction
from django.db.models import Count

from accounts.capabilities import APP_LABEL, Capability
from accounts.models import Role, User
from accounts.policy.parse import USER_FIELDS, Plan, check_group_refs, parse_document
from accounts.policy.result import Change, PolicyResult
from accounts.scope import role_scope_sync
from inventory.models import Resource, ResourceLabel
from inventory.services import ResourceRow, resources_upsert_many
from jitportal.errors import DomainError


def _history(
    model: type[models.Model], pks: list[int], *, owned: tuple[type[models.Model], ...] = ()
) -> dict[int, str]:
    """pk -> "3 access requests, 1 grant" for rows something else refers to.

    Walks every relation pointing at ``model`` (without importing the apps that
    hold them), so a role or resource that history mentions is never deleted
    from under it, whether the relation would PROTECT or silently CASCADE.
    """
    counts: dict[int, list[str]] = defaultdict(list)
    if not pks:
        return {}
    for rel in model._meta.related_objects:
        if rel.related_model in owned:
            continue
        name = rel.field.name
        rows = (
            rel.related_model._base_manager.filter(**{f"{name}__in": pks})
            .values(name)
            .annotate(n=Count("pk", distinct=True))
            .order_by()
        )
        meta = rel.related_model._meta
        for row in rows:
            noun = meta.verbose_name if row["n"] == 1 else meta.verbose_name_plural
            counts[row[name]].append(f"{row['n']} {noun}")
    return {pk: ", ".join(parts) for pk, parts in counts.items()}


@dataclass
class _Prune:
    users: list[User] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)


def _plan_prune(plan: Plan) -> _Prune:
    out = _Prune()
    if "users" in plan.sections:
        # Superusers are never pruned: a file that forgot them must not lock everyone out.
        out.users = list(
            User.objects.filter(is_active=True, is_superuser=False).exclude(
                username__in=[s.username for s in plan.users]
            )
        )
    if "roles" in plan.sections:
        out.roles = list(Role.objects.exclude(name__in=[s.name for s in plan.roles]))
    if "resources" in plan.sections:
        named = {(s.kind, s.name) for s in plan.resources}
        out.resources = [r for r in Resource.objects.only("id", "kind", "name") if (r.kind, r.name) not in named]
    if "groups" in plan.sections:
        out.groups = list(Group.objects.exclude(name__in=plan.groups))

    blocked = []
    role_refs = _history(Role, [r.pk for r in out.roles])
    blocked += [f"role {r.name} ({role_refs[r.pk]})" for r in out.roles if r.pk in role_refs]
    resource_refs = _history(Resource, [r.pk for r in out.resources], owned=(ResourceLabel,))
    blocked += [f"resource {r.ref} ({resource_refs[r.pk]})" for r in out.resources if r.pk in resource_refs]
    if blocked:
        raise DomainError(
            "--prune would delete what history refers to: " + "; ".join(blocked) + ". Keep them in the file."
        )
    return out


# --- writing ------------------------------------------------------------------


def _capabilities_in(permissions) -> set[str]:
    """The capability names among prefetched permissions (each with its content type)."""
    return {
        p.codename for p in permissions if p.content_type.app_label == APP_LABEL and p.codename in Capability.values
    }


class _Writer:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.changes: list[Change] = []
        self.groups: dict[str, Group] = {}
        self.created_groups: set[str] = set()
        self._capabilities: dict[str, Permission] | None = None

    def capability_permissions(self) -> dict[str, Permission]:
        """Capability name -> the permission that carries it (accounts.User's custom permissions)."""
        if self._capabilities is None:
            found = Permission.objects.filter(content_type__app_label=APP_LABEL, codename__in=Capability.values)
            self._capabilities = {p.codename: p for p in found}
            missing = [c for c in Capability.values if c not in self._capabilities]
            if missing:
                raise DomainError(f"the capability permissions ({', '.join(missing)}) do not exist; run migrate first")
        return self._capabilities

    def set_capabilities(self, permissions, current: set[str], wanted: list[str]) -> bool:
        """Make the capabilities among ``permissions`` (a related manager) exactly ``wanted``.

        Other permissions, given in the admin, are not the file's and stay.
        """
        if current == set(wanted):
            return False
        by_name = self.capability_permissions()
        permissions.remove(*[by_name[c] for c in current - set(wanted)])
        permissions.add(*[by_name[c] for c in set(wanted) - current])
        return True

    def write_group_capabilities(self) -> None:
        names = list(self.plan.group_capabilities)
        groups = Group.objects.filter(name__in=names).prefetch_related("permissions__content_type")
        for group in groups:
            wanted = self.plan.group_capabilities[group.name]
            changed = self.set_capabilities(group.permissions, _capabilities_in(group.permissions.all()), wanted)
            if changed and group.name not in self.created_groups:
                self.record("updated", "group", group.name, "capabilities")

    def record(self, action: str, kind: str, name: str, detail: list[str] | str = "") -> None:
        if isinstance(detail, list):
            detail = ", ".join(detail)
        self.changes.append(Change(action, kind, name, detail))

    def write_groups(self) -> None:
        wanted = set(self.plan.groups)
        for spec in self.plan.users:
            wanted.update(spec.groups)
        for spec in self.plan.roles:
            wanted.update(spec.requestable_by, spec.reviewers)
        self.groups = {g.name: g for g in Group.objects.filter(name__in=wanted)}
        for name in self.plan.groups:
            if name not in self.groups:
                self.groups[name] = Group.objects.create(name=name)
                self.created_groups.add(name)
                self.record("created", "group", name)

    def write_users(self) -> None:
        names = [s.username for s in self.plan.users]
        users = User.objects.filter(username__in=names).prefetch_related("groups", "user_permissions__content_type")
        existing = {u.username: u for u in users}
        for spec in self.plan.users:
            user = existing.get(spec.username)
            if user is None:
                user = User(username=spec.username, **spec.fields)
                if spec.password is None:
                    user.set_unusable_password()
                else:
                    user.set_password(spec.password)
                user.save()
                if spec.groups:
                    user.groups.set([self.groups[n] for n in spec.groups])
                self.set_capabilities(user.user_permissions, set(), spec.capabilities)
                self.record("created", "user", spec.username)
                continue
            changed = [key for key, attr in USER_FIELDS.items() if getattr(user, attr) != spec.fields[attr]]
            for key in changed:
                setattr(user, USER_FIELDS[key], spec.fields[USER_FIELDS[key]])
            update_fields = [USER_FIELDS[key] for key in changed]
            # The hasher's own check_password, not User.check_password: that one may
            # re-hash and save, and an unchanged apply must write nothing.
            if spec.password is not None and not check_password(spec.password, user.password):
                user.set_password(spec.password)
                changed.append("password")
                update_fields.append("password")
            if update_fields:
                user.save(update_fields=update_fields)
            if {g.name for g in user.groups.all()} != set(spec.groups):
                user.groups.set([self.groups[n] for n in spec.groups])
                changed.append("groups")
            held = _capabilities_in(user.user_permissions.all())
            if self.set_capabilities(user.user_permissions, held, spec.capabilities):
                changed.append("capabilities")
            if changed:
                self.record("updated", "user", spec.username, changed)

    def write_roles(self) -> None:
        names = [s.name for s in self.plan.roles]
        existing = {
            r.name: r for r in Role.objects.filter(name__in=names).prefetch_related("requestable_by", "reviewers")
        }
        rescoped = []
        for spec in self.plan.roles:
            role = existing.get(spec.name)
            if role is None:
                role = Role.objects.create(name=spec.name, **spec.fields)
                role.requestable_by.set([self.groups[n] for n in spec.requestable_by])
                role.reviewers.set([self.groups[n] for n in spec.reviewers])
                rescoped.append(role)
                self.record("created", "role", spec.name)
                continue
            changed = [key for key, value in spec.fields.items() if getattr(role, key) != value]
            if {"resource_kinds", "resource_labels"} & set(changed):
                rescoped.append(role)
            for key in changed:
                setattr(role, key, spec.fields[key])
            for key in ("requestable_by", "reviewers"):
                wanted = getattr(spec, key)
                if {g.name for g in getattr(role, key).all()} != set(wanted):
                    getattr(role, key).set([self.groups[n] for n in wanted])
                    changed.append(key)
            if changed:
                # updated_at also moves when only the groups changed: the role did change.
                role.save(update_fields=[k for k in changed if k in spec.fields] + ["updated_at"])
                self.record("updated", "role", spec.name, changed)
        # Set-based, once per role whose selector is new or changed; resources
        # written afterwards bring their own rows up to date.
        role_scope_sync(roles=rescoped)

    def write_resources(self) -> None:
        specs = self.plan.resources
        rows = [ResourceRow(s.kind, s.name, s.address, s.labels, s.description) for s in specs]
        for spec, changed in zip(specs, resources_upsert_many(rows=rows), strict=True):
            if changed is None:
                self.record("created", "resource", spec.ref)
            elif changed:
                self.record("updated", "resource", spec.ref, changed)

    def write_prune(self, prune: _Prune) -> None:
        if prune.users:
            User.objects.filter(pk__in=[u.pk for u in prune.users]).update(is_active=False)
            # Reactivating one later (in the admin) must not bring back a power the file took away.
            through = User.user_permissions.through
            through.objects.filter(
                user_id__in=[u.pk for u in prune.users],
                permission__in=list(self.capability_permissions().values()),
            ).delete()
            for user in prune.users:
                self.record("updated", "user", user.username, "deactivated: not in the file")
        if prune.roles:
            Role.objects.filter(pk__in=[r.pk for r in prune.roles]).delete()
            for role in prune.roles:
                self.record("deleted", "role", role.name)
        if prune.resources:
            Resource.objects.filter(pk__in=[r.pk for r in prune.resources]).delete()
            for resource in prune.resources:
                self.record("deleted", "resource", resource.ref)
        if prune.groups:
            Group.objects.filter(pk__in=[g.pk for g in prune.groups]).delete()
            for group in prune.groups:
                self.record("deleted", "group", group.name)


def policy_apply(*, data: dict, prune: bool = False, dry_run: bool = False) -> PolicyResult:
    """Make the objects ``data`` names match it; with ``prune``, remove the ones it does not name.

    Pruning deletes groups, roles and resources and deactivates users (history
    refers to users, so they are kept); superusers are never pruned, and a role
    or resource that requests or grants refer to stops the whole apply.
    Raises ``DomainError`` naming the entry and field at fault; nothing is
    written then, nor with ``dry_run``.
    """
    plan = parse_document(data)
    try:
        with transaction.atomic():
            check_group_refs(plan, prune=prune)
            to_prune = _plan_prune(plan) if prune else _Prune()
            writer = _Writer(plan)
            writer.write_groups()
            writer.write_group_capabilities()
            writer.write_users()
            writer.write_roles()
            writer.write_resources()
            writer.write_prune(to_prune)
            if dry_run:
                transaction.set_rollback(True)
    except IntegrityError as exc:
        # Only a concurrent writer gets here (everything was checked first); nothing was kept.
        detail = " ".join(str(exc).split())
        raise DomainError(f"the database changed while applying ({detail}); nothing was written, apply again") from None
    return PolicyResult(changes=writer.changes, dry_run=dry_run)
