"""What a new request would be, before it is made: one rule for the request form, its page and ``request_create``.

Pure: it reads no database. The caller passes what it looked up (the roles
the requester may request, the resources resolved, the roles named) and gets
a frozen ``RequestPreview``, or a ``DomainError`` naming the field at fault.
Which roles, how many resources, the thresholds, the duration's default and
cap, and whether a reason is required are decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings

from accounts.models import Role
from accounts.selectors import roles_matching
from inventory.models import Resource
from jitportal.durations import format_duration, parse_duration
from jitportal.errors import DomainError

DEFAULT_DURATION = timedelta(hours=1)


def resource_count_check(count: int) -> None:
    """Refuse more resources than one request may hold; callers holding only names ask before resolving them."""
    limit = settings.JITPORTAL_MAX_RESOURCES_PER_REQUEST
    if count > limit:
        raise DomainError(f"at most {limit} resources per request", field="resources")


@dataclass(frozen=True)
class RequestPreview:
    """A request about to be made: its resources and roles, and what follows from the roles.

    ``fixed`` roles are in the request whatever the requester picks (the
    roles named, the only fit for some resource, the role of a role request);
    ``choices`` are roles the requester still has to choose among, because
    several fit some resource (only when the caller allowed a choice).
    """

    resources: tuple[Resource, ...]
    fixed: tuple[Role, ...]
    choices: tuple[Role, ...] = ()
    matches: Mapping[int, tuple[Role, ...]] = field(default_factory=dict)

    # --- what is requested

    @property
    def roles(self) -> tuple[Role, ...]:
        """Every role that may end up in the request, fixed first; once nothing is left to choose, its roles."""
        return self.fixed + self.choices

    @property
    def ambiguous(self) -> bool:
        return bool(self.choices)

    @property
    def needing_choice(self) -> list[Resource]:
        """Resources that no fixed role reaches: the requester must pick one of their roles."""
        fixed = {r.pk for r in self.fixed}
        return [r for r in self.resources if not fixed & {role.pk for role in self.matches.get(r.pk, ())}]

    @property
    def is_role_request(self) -> bool:
        return not self.resources

    @property
    def role(self) -> Role | None:
        """The role of a request for one whole role."""
        return self.fixed[0] if self.is_role_request and len(self.fixed) == 1 else None

    # --- thresholds, fixed on the request when it is made

    @property
    def approvals_required(self) -> int:
        return max(r.approvals for r in self.roles)

    @property
    def denials_required(self) -> int:
        return min(r.denials for r in self.roles)

    @property
    def pending_ttl(self) -> timedelta:
        return min(r.pending_ttl for r in self.roles)

    @property
    def auto_approve(self) -> bool:
        return all(r.auto_approve for r in self.roles)

    @property
    def break_glass(self) -> bool:
        """Every role is break-glass: approved at once and reviewed afterwards. A mixed request is reviewed as usual."""
        return bool(self.roles) and all(r.break_glass for r in self.roles)

    # --- duration

    @property
    def duration_cap(self) -> timedelta:
        """The shortest ``max_duration`` of the fixed roles; with none fixed yet, the longest on offer.

        A role chosen later with a shorter cap is named when the duration is checked again.
        """
        if self.fixed:
            return self._cap_role.max_duration
        return max(r.max_duration for r in self.choices)

    @property
    def _cap_role(self) -> Role:
        return min(self.fixed, key=lambda r: r.max_duration)

    @property
    def default_duration(self) -> timedelta:
        return min(DEFAULT_DURATION, self.duration_cap)

    def duration(self, value: object) -> timedelta:
        """The duration asked for (``"2h"``, seconds, a ``timedelta``), the default when blank, within the cap."""
        if value is None or value == "":
            return self.default_duration
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            raise DomainError(str(exc), field="duration") from exc
        cap_role = self._cap_role
        if duration > cap_role.max_duration:
            raise DomainError(
                f"{format_duration(duration)} is longer than the maximum of "
                f"{format_duration(cap_role.max_duration)} (role {cap_role.name})",
                field="duration",
            )
        return duration

    # --- reason

    @property
    def reason_required_by(self) -> tuple[Role, ...]:
        return tuple(r for r in self.roles if r.reason_required)

    @property
    def reason_hints(self) -> tuple[str, ...]:
        """Each role's hint on what a good reason says, once each."""
        return tuple(dict.fromkeys(r.reason_hint for r in self.roles if r.reason_hint))

    def reason_check(self, reason: str) -> None:
        """Refuse a blank reason when some role requires one, and one that some role's ``reason_pattern``
        does not match in full, each with the hint of the roles at fault.

        Break-glass access always needs one: it is what the review afterwards weighs.
        """
        if not reason and self.break_glass:
            raise DomainError(
                "a reason is required for break-glass access; reviewers weigh it afterwards", field="reason"
            )
        needing = self.reason_required_by
        if not reason and needing:
            hint = next((r.reason_hint for r in needing if r.reason_hint), "")
            message = f"a reason is required by role {', '.join(r.name for r in needing)}"
            raise DomainError(f"{message} ({hint})" if hint else message, field="reason")
        # A blank reason is checked too: a role with a pattern wants one that matches, whatever its reason mode.
        unmatched = [r for r in self.roles if not r.reason_matches(reason)]
        if unmatched:
            hint = next((r.reason_hint for r in unmatched if r.reason_hint), "")
            patterns = "; ".join(f"{r.reason_pattern} (role {r.name})" for r in unmatched)
            message = f"must match {patterns}"
            raise DomainError(f"{message}: {hint}" if hint else message, field="reason")


def request_preview(
    *,
    requestable: Sequence[Role],
    resources: Sequence[Resource] = (),
    roles: Sequence[Role] = (),
    allow_choice: bool = False,
) -> RequestPreview:
    """What a request for ``resources`` and/or ``roles`` would be, for a requester who may request ``requestable``.

    Roles named must be requestable and, with resources, each resource must
    be reached by one of them and each of them reach some resource. Without
    roles named, each resource's role is the one requestable role that fits
    it; where several fit, ``allow_choice`` (the form) leaves them as
    ``choices``, otherwise that is refused (the requester must name one).
    """
    resources = tuple(dict.fromkeys(resources))
    roles = tuple(dict.fromkeys(roles))
    resource_count_check(len(resources))
    if not resources and not roles:
        raise DomainError("name at least one resource or role", field="resources")
    requestable_ids = {r.pk for r in requestable}
    refused = [r.name for r in roles if r.pk not in requestable_ids]
    if refused:
        # Worded as for a role that does not exist: the answer must not reveal which roles do.
        raise DomainError(f"no such role: {', '.join(refused)}", field="roles")
    if roles:
        return _named(resources, roles)
    return _picked(resources, list(requestable), allow_choice=allow_choice)


def _named(resources: tuple[Resource, ...], roles: tuple[Role, ...]) -> RequestPreview:
    """Roles the requester named: each resource needs one of them, each of them some resource."""
    matches: dict[int, tuple[Role, ...]] = {}
    used: set[int] = set()
    for resource in resources:
        matching = roles_matching(resource, list(roles))
        if not matching:
            names = ", ".join(r.name for r in roles)
            raise DomainError(
                f"{resource.ref}: none of the requested roles ({names}) grants access to it", field="resources"
            )
        matches[resource.pk] = tuple(matching)
        used.update(r.pk for r in matching)
    unused = [r.name for r in roles if r.pk not in used] if resources else []
    if unused:
        raise DomainError(f"{', '.join(unused)}: matches none of the requested resources", field="roles")
    return RequestPreview(resources=resources, fixed=roles, matches=matches)


def _picked(resources: tuple[Resource, ...], requestable: list[Role], *, allow_choice: bool) -> RequestPreview:
    """Roles chosen for the requester: never a guess between privileges."""
    matches: dict[int, tuple[Role, ...]] = {}
    fixed: dict[int, Role] = {}
    choices: dict[int, Role] = {}
    for resource in resources:
        matching = roles_matching(resource, requestable)
        if not matching:
            # A resource no requestable role reaches is one the requester may not see: not named as existing.
            raise DomainError(f"no such resource: {resource.ref}", field="resources")
        if len(matching) > 1 and not allow_choice:
            names = ", ".join(r.name for r in matching)
            raise DomainError(
                f"{resource.ref}: several roles you may request grant access to it ({names}); choose with 'roles'",
                field="roles",
            )
        matches[resource.pk] = tuple(matching)
        if len(matching) == 1:
            fixed[matching[0].pk] = matching[0]
        else:
            choices.update((r.pk, r) for r in matching)
    return RequestPreview(
        resources=resources,
        fixed=tuple(sorted(fixed.values(), key=lambda r: r.name)),
        # A role that is used anyway (the only fit for another resource) is no choice.
        choices=tuple(sorted((r for r in choices.values() if r.pk not in fixed), key=lambda r: r.name)),
        matches=matches,
    )
