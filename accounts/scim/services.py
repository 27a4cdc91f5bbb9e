"""What SCIM changes: users created, updated and deactivated, and the members of portal groups.

Each change is one transaction that locks the user or group row, works out
the new state from the locked row (so two provider calls at once never lose
one another's change), writes it and records it: ``scim.user_created``,
``scim.user_updated``, ``scim.user_deactivated``, ``scim.group_member_added``
and ``scim.group_member_removed``.

Nothing here revokes grants: ``GrantQuerySet.honoured`` and ``grant_refusal``
read ``is_active`` and the user's groups when asked, so a deactivation or a
removal from a group ends what it gave at once (the access check,
certificates, host principals, revoked keys) with no sweep.

Superusers are the administrators' break-glass accounts, kept in the admin:
SCIM may not change or deactivate them, so a provider's token cannot lock the
administrators out or take one of their accounts over by renaming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.scim.attributes import Operation, ScimError, UserState, members_patched, user_patched
from accounts.scim.attributes import group_members_from_document as _group_members
from accounts.scim.attributes import user_from_document as _user_document
from audit.services import audit_record, audit_record_many

_CONFLICT_MESSAGE = "userName or externalId is already taken by another user"


def _not_found(kind: str, pk: object) -> ScimError:
    return ScimError(f"{kind} {pk} not found", status=404)


def _uniqueness_check(state: UserState, *, exclude: int | None = None) -> None:
    """userName is unique regardless of case (the SCIM attribute is not case-exact); externalId exactly."""
    others = User.objects.exclude(pk=exclude) if exclude is not None else User.objects.all()
    if others.filter(username__iexact=state.username).exists():
        raise ScimError(f"userName {state.username!r} is already taken", scim_type="uniqueness", status=409)
    if state.external_id and others.filter(external_id=state.external_id).exists():
        raise ScimError(f"externalId {state.external_id!r} is already taken", scim_type="uniqueness", status=409)


def scim_user_create(*, actor: User, state: UserState) -> User:
    """A new user as the provider describes them; they sign in through the provider (no password)."""
    try:
        with transaction.atomic():
            _uniqueness_check(state)
            user = User(**{name: getattr(state, name) for name in UserState.FIELDS})
            user.set_unusable_password()
            user.save()
            audit_record(
                action="scim.user_created",
                actor=actor,
                target=user,
                data={
                    "userName": user.username,
                    "externalId": user.external_id,
                    "active": user.is_active,
                },
            )
    except IntegrityError:
        # Another call created the same name between the check and the insert.
        raise ScimError(_CONFLICT_MESSAGE, scim_type="uniqueness", status=409) from None
    return user


def _user_change(*, actor: User, user_id: int, edit: Callable[[UserState], UserState]) -> User:
    try:
        with transaction.atomic():
            user = User.objects.select_for_update().filter(pk=user_id).first()
            if user is None:
                raise _not_found("User", user_id)
            if user.is_superuser:
                raise ScimError("superusers are managed in the admin, not through SCIM", status=403)
            before = UserState.of(user)
            after = edit(before)
            changed = [name for name in UserState.FIELDS if getattr(before, name) != getattr(after, name)]
            if not changed:
                return user
            if "username" in changed or "external_id" in changed:
                _uniqueness_check(after, exclude=user.pk)
            for name in changed:
                setattr(user, name, getattr(after, name))
            user.save(update_fields=changed)
            deactivated = before.is_active and not after.is_active
            audit_record(
                action="scim.user_deactivated" if deactivated else "scim.user_updated",
                actor=actor,
                target=user,
                data={
                    "userName": user.username,
                    "changes": {name: [getattr(before, name), getattr(after, name)] for name in changed},
                },
            )
    except IntegrityError:
        raise ScimError(_CONFLICT_MESSAGE, scim_type="uniqueness", status=409) from None
    return user


def scim_user_replace(*, actor: User, user_id: int, document: dict) -> User:
    """PUT: the user becomes what ``document`` says (names and email left out are cleared)."""
    return _user_change(
        actor=actor,
        user_id=user_id,
        edit=lambda state: _user_document(document, current=state, user_id=str(user_id)),
    )


def scim_user_patch(*, actor: User, user_id: int, operations: list[Operation]) -> User:
    """PATCH: ``operations`` applied in order to the locked user, all or none."""
    return _user_change(
        actor=actor, user_id=user_id, edit=lambda state: user_patched(state, operations, user_id=str(user_id))
    )


def scim_user_deactivate(*, actor: User, user_id: int) -> User:
    """DELETE: the account is disabled and kept, with its requests, grants and audit trail."""
    return _user_change(actor=actor, user_id=user_id, edit=lambda state: replace(state, is_active=False))


def _group_change(*, actor: User, group_id: int, edit: Callable[[set[int], Group], set[int]]) -> Group:
    with transaction.atomic():
        group = Group.objects.select_for_update().filter(pk=group_id).first()
        if group is None:
            raise _not_found("Group", group_id)
        members = User.groups.through.objects.filter(group=group)
        before = set(members.values_list("user_id", flat=True))
        after = edit(before, group)
        added, removed = after - before, before - after
        names = dict(User.objects.filter(pk__in=added | removed).values_list("pk", "username"))
        unknown = sorted(added - set(names))
        if unknown:
            raise ScimError(f"members: no user with id {', '.join(map(str, unknown))}", scim_type="invalidValue")
        if removed:
            members.filter(user_id__in=removed).delete()
        if added:
            User.groups.through.objects.bulk_create(
                [User.groups.through(user_id=pk, group_id=group.pk) for pk in sorted(added)]
            )
        audit_record_many(
            [
                {
                    "action": action,
                    "actor": actor,
                    "target": group,
                    "data": {"group": group.name, "user_id": pk, "userName": names[pk]},
                }
                for action, ids in (("scim.group_member_added", added), ("scim.group_member_removed", removed))
                for pk in sorted(ids)
            ]
        )
    return group


def scim_group_patch(*, actor: User, group_id: int, operations: list[Operation]) -> Group:
    """PATCH: members added, removed or replaced; the name may only be restated."""
    return _group_change(
        actor=actor,
        group_id=group_id,
        edit=lambda members, group: members_patched(members, operations, name=group.name, group_id=str(group.pk)),
    )


def scim_group_replace(*, actor: User, group_id: int, document: dict) -> Group:
    """PUT: the group's members become exactly those listed."""
    return _group_change(
        actor=actor,
        group_id=group_id,
        edit=lambda members, group: _group_members(document, name=group.name, group_id=str(group.pk)),
    )
