"""Who may do what beyond their own requests: the one place that says so.

A reviewer is not an auditor and an auditor is not a revoker. Capabilities are
Django permissions on ``accounts.User`` (``accounts.audit`` and so on), held
by groups (so an identity provider's groups carry them) or by single users;
superusers hold all of them. Being in a role's ``reviewers`` group opens the
review queue; the staff flag only lets one edit the configuration (roles,
resources, notification channels). Views, API views, admin classes, templates
and services ask these predicates and never restate them; a refusal names the
missing capability with :func:`refusal`.
"""

from __future__ import annotations

# Capability lives with the model (its permissions); callers take it from here.
from accounts.models import ApiToken, Capability, Role
from jitportal.errors import PermissionRefused

# Read straight off the user and asked below accounts too, so defined at the ground.
from jitportal.staff import may_configure
from jitportal.staff import signed_in as _signed_in

# The app whose permissions carry the capabilities (User.Meta.permissions).
APP_LABEL = "accounts"


def refusal(capability: str) -> str:
    """The message of every refusal for want of ``capability``."""
    return f"You need the {capability} capability."


def has_capability(user, capability: str) -> bool:
    """Held through one of the user's groups, by the user, or as a superuser."""
    return _signed_in(user) and user.has_perm(f"{APP_LABEL}.{capability}")


def capabilities_of(user) -> list[str]:
    """The capabilities ``user`` holds, in declaration order."""
    return [c for c in Capability.values if has_capability(user, c)]


def refusal_of_any(*needs: str) -> str:
    """The refusal of a page open to several kinds of holder: "You need the audit or revoke capability."."""
    return f"You need {' or '.join(needs)}."


def require(user, capability: str) -> None:
    """Raise the refusal (a 403 on the API) unless ``user`` holds ``capability``."""
    if not has_capability(user, capability):
        raise PermissionRefused(refusal(capability), code="capability_required")


# --- the predicates ------------------------------------------------------------------


def may_audit(user) -> bool:
    """Read every request, grant, review, audit event, issued certificate and CA; change nothing."""
    return has_capability(user, Capability.AUDIT)


def may_revoke(user) -> bool:
    """End any grant early (and so find any grant)."""
    return has_capability(user, Capability.REVOKE)


def may_read_all_grants(user) -> bool:
    return may_audit(user) or may_revoke(user)


def may_check_access(user, token=None) -> bool:
    """Ask the access check and the host endpoints about other users.

    The user must hold ``check_access``; a call made with an API token needs a
    token created with "can check access" as well, so a person's everyday
    token never carries the power even when the person does.
    """
    if not has_capability(user, Capability.CHECK_ACCESS):
        return False
    if isinstance(token, ApiToken):
        return token.can_check_access
    return True


def check_access_refusal(user, token=None) -> str:
    if has_capability(user, Capability.CHECK_ACCESS) and isinstance(token, ApiToken):
        return f"{refusal(Capability.CHECK_ACCESS)} This token was not created with it (can check access)."
    return refusal(Capability.CHECK_ACCESS)


def may_manage_oncall(user) -> bool:
    return has_capability(user, Capability.MANAGE_ONCALL)


def may_use_scim(user) -> bool:
    return has_capability(user, Capability.SCIM)


def may_review_queue(user) -> bool:
    """Work the review queue in the admin: in some role's reviewer group (no staff flag needed).

    Which requests one may decide is still the roles' rule
    (``AccessRequest.objects.reviewable_by``), checked again by the service.
    Superusers too need a reviewer group: they could not review without one.
    """
    if not _signed_in(user):
        return False
    # Kept on the user object for its lifetime (one request), as Django keeps its permissions: a page
    # asks this for the sidebar, the filters and the templates, and each ask would be a query.
    answer = getattr(user, "_may_review_queue", None)
    if answer is None:
        answer = Role.objects.reviewable_by(user).exists()
        user._may_review_queue = answer
    return answer


def may_read_requests(user) -> bool:
    """Open access requests in the admin: auditors see all, reviewers what they may review."""
    return may_audit(user) or may_review_queue(user)


def may_read_notifications(user) -> bool:
    """Channels (read-only) and the outbox: auditors, and staff, who manage the channels and their deliveries."""
    return may_audit(user) or may_configure(user)


def may_manage_people(user) -> bool:
    """Users, groups (which carry capabilities) and API tokens: superusers only."""
    return _signed_in(user) and user.is_superuser


def may_open_admin(user) -> bool:
    """The admin site lets in whoever has something to do there."""
    return may_configure(user) or may_audit(user) or may_revoke(user) or may_review_queue(user)
