"""People, roles and API tokens in the admin."""

from __future__ import annotations

from datetime import timedelta

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.utils import timezone
from django.utils.html import format_html

from accounts import capabilities
from accounts.mfa import mfa_factors_reset
from accounts.models import MAX_ROLE_DURATION, ApiToken, Role, User
from accounts.scope import role_scope_sync
from accounts.services import (
    role_clean_kinds,
    role_clean_logins,
    role_clean_reason_pattern,
    role_clean_selector,
    token_create,
    token_revoke,
)
from inventory.models import Resource
from jitportal.admin_display import ConfigurationAdminMixin, GatedAdminMixin, NoGroupFilter, clipped
from jitportal.durations import format_duration
from jitportal.errors import DomainError


class PeopleAdminMixin(GatedAdminMixin):
    """Users, groups (which carry capabilities) and API tokens: superusers only, or staff could make
    themselves auditors."""

    may = staticmethod(capabilities.may_manage_people)
    refusal = "Only a superuser manages users, groups and API tokens."


@admin.register(User)
class UserAdmin(PeopleAdminMixin, DjangoUserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "group_names", "is_staff", "is_active")
    list_filter = ("is_staff", "is_superuser", "is_active", ("groups", NoGroupFilter))
    search_fields = (*DjangoUserAdmin.search_fields, "external_id")
    # The identity provider's id (SCIM externalId): what links the account to the person there.
    fieldsets = (*(DjangoUserAdmin.fieldsets or ()), ("Identity provider", {"fields": ("external_id",)}))
    actions = ("reset_second_factors",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.action(description="Reset second factors (lost phone or key)")
    def reset_second_factors(self, request, queryset) -> None:
        count = mfa_factors_reset(users=list(queryset), by=request.user)
        self.message_user(
            request, f"Removed the second factors of {count} user{'s' if count != 1 else ''}.", messages.SUCCESS
        )

    @admin.display(description="groups")
    def group_names(self, obj: User) -> str:
        # Reads the prefetched groups: no query per row.
        return ", ".join(sorted(g.name for g in obj.groups.all()))


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(PeopleAdminMixin, DjangoGroupAdmin):
    """A group's permissions are where its capabilities (accounts | user | audit, ...) are held."""


def _form_rule(rule, value):
    try:
        return rule(value)
    except DomainError as exc:
        raise forms.ValidationError(exc.message) from None


class RoleAdminForm(forms.ModelForm):
    """Checks the shape of the JSON fields so a selector means what it says.

    (A selector value given as a string instead of a list would otherwise be
    read letter by letter by the database query.)
    """

    class Meta:
        model = Role
        fields = "__all__"  # noqa: DJ007 - the ModelAdmin chooses the fields shown

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        help_texts = {
            "resource_kinds": f'JSON list, any of: {", ".join(Resource.Kind.values)}; e.g. ["node"].',
            "resource_labels": 'JSON object of key to a list of allowed values, "*" for any; e.g. {"env": ["prod"]}.',
            "logins": 'JSON list of principals, e.g. ["ubuntu"].',
            "max_duration": f"At most {MAX_ROLE_DURATION.days} days; e.g. 01:00:00 for one hour.",
            "reason_pattern": "A regular expression the whole reason must match, e.g. (INC|CHG)-[0-9]+.*; "
            "say what it wants in the reason hint.",
            "max_extensions": "How many times an approved request may be extended; 0 forbids extending.",
        }
        for name, text in help_texts.items():
            if name in self.fields:
                self.fields[name].help_text = text

    # The same rules as the policy loader (accounts.services).
    def clean_resource_kinds(self) -> list[str]:
        return _form_rule(role_clean_kinds, self.cleaned_data.get("resource_kinds"))

    def clean_resource_labels(self) -> dict[str, list[str]]:
        return _form_rule(role_clean_selector, self.cleaned_data.get("resource_labels"))

    def clean_logins(self) -> list[str]:
        return _form_rule(role_clean_logins, self.cleaned_data.get("logins"))

    def clean_reason_pattern(self) -> str:
        return _form_rule(role_clean_reason_pattern, self.cleaned_data.get("reason_pattern"))


@admin.register(Role)
class RoleAdmin(ConfigurationAdminMixin, admin.ModelAdmin):
    form = RoleAdminForm
    list_display = (
        "name",
        "kinds_display",
        "selector_display",
        "logins_display",
        "max_duration_display",
        "approvals",
        "auto_approve_display",
        "requestable_by_display",
        "reviewers_display",
    )
    list_filter = ("auto_approve", "break_glass", "review_requires_mfa", "reason")
    search_fields = ("name",)
    filter_horizontal = ("requestable_by", "reviewers")
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("requestable_by", "reviewers")

    def save_model(self, request, obj: Role, form, change: bool) -> None:
        # Inside the admin's transaction: the search scope changes with the selector, or not at all.
        super().save_model(request, obj, form, change)
        if not change or {"resource_kinds", "resource_labels"} & set(form.changed_data):
            role_scope_sync(roles=[obj])

    @admin.display(description="kinds")
    def kinds_display(self, obj: Role) -> str:
        return ", ".join(obj.resource_kinds or [])

    @admin.display(description="labels")
    def selector_display(self, obj: Role) -> str:
        labels = obj.resource_labels or {}
        return clipped(", ".join(f"{key}={'|'.join(values)}" for key, values in sorted(labels.items())), 30)

    @admin.display(description="max", ordering="max_duration")
    def max_duration_display(self, obj: Role) -> str:
        return format_duration(obj.max_duration)

    @admin.display(description="auto", boolean=True, ordering="auto_approve")
    def auto_approve_display(self, obj: Role) -> bool:
        return obj.auto_approve

    @admin.display(description="logins")
    def logins_display(self, obj: Role) -> str:
        return ", ".join(obj.logins or [])

    @admin.display(description="requestable by")
    def requestable_by_display(self, obj: Role) -> str:
        return clipped(", ".join(sorted(g.name for g in obj.requestable_by.all())), 30)

    @admin.display(description="reviewers")
    def reviewers_display(self, obj: Role) -> str:
        return clipped(", ".join(sorted(g.name for g in obj.reviewers.all())), 30)


VALID_FOR_CHOICES = [
    ("1", "1 day"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "365 days"),
]


class ApiTokenAddForm(forms.ModelForm):
    """Who the token is for and how long it lives; the secret is made by knox on save."""

    valid_for = forms.TypedChoiceField(
        choices=VALID_FOR_CHOICES,
        coerce=lambda days: timedelta(days=int(days)),
        initial="30",
        help_text="The token stops working after this long; delete it to revoke it earlier.",
    )

    class Meta:
        model = ApiToken
        fields = ("user", "name", "can_check_access")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["can_check_access"].help_text = (
            "Lets an integration (a host agent, a proxy) ask the access check and host endpoints about "
            "other users, when its user also holds the check_access capability. "
            "Never give it to a person's own token."
        )


@admin.register(ApiToken)
class ApiTokenAdmin(PeopleAdminMixin, admin.ModelAdmin):
    list_display = ("token_prefix", "name", "user", "created", "expiry", "can_check_access", "expired")
    list_display_links = ("token_prefix", "name")
    list_filter = ("can_check_access",)
    search_fields = ("user__username", "name", "token_key")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    actions = ("revoke_selected",)

    # --- display ---------------------------------------------------------------

    @admin.display(description="token", ordering="token_key")
    def token_prefix(self, obj: ApiToken) -> str:
        return f"{obj.token_key}…"

    @admin.display(description="expired", boolean=True)
    def expired(self, obj: ApiToken) -> bool:
        return obj.expiry is not None and obj.expiry <= timezone.now()

    # --- forms: add picks user, name, lifetime; change edits only the name ------

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "valid_for", "can_check_access"]
        # The digest is never shown.
        return ["token_prefix", "name", "user", "created", "expiry", "expired", "can_check_access", "mfa_verified_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["token_prefix", "user", "created", "expiry", "expired", "can_check_access", "mfa_verified_at"]

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        token, secret = token_create(
            user=form.cleaned_data["user"],
            name=form.cleaned_data.get("name") or "",
            lifetime=form.cleaned_data["valid_for"],
            can_check_access=form.cleaned_data.get("can_check_access", False),
            by=request.user,
        )
        # The admin goes on with the object it built (log entry, redirect): make
        # it the row knox saved.
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(token, field.attname))
        obj._state.adding = False
        obj._state.db = token._state.db
        messages.success(
            request,
            format_html(
                "The new token for {} is <code>{}</code>. Copy it now: it will not be shown again.",
                token.user.get_username(),
                secret,
            ),
        )

    # --- revoking is deleting -----------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        # "Revoke selected tokens" replaces the generic delete so every revocation is audited.
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Revoke selected tokens", permissions=["delete"])
    def revoke_selected(self, request, queryset) -> None:
        count = token_revoke(tokens=queryset, by=request.user)
        self.message_user(request, f"Revoked {count} token{'s' if count != 1 else ''}.", messages.SUCCESS)

    def delete_model(self, request, obj: ApiToken) -> None:
        token_revoke(tokens=[obj], by=request.user)

    def delete_queryset(self, request, queryset) -> None:
        token_revoke(tokens=queryset, by=request.user)


# django-axes' failure records: evidence for superusers, changed by nobody by
# hand (the lockout ends by itself; `manage.py axes_reset_username` lifts it early).
class _SuperuserReadOnlyAdmin:
    actions = None

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AccessAttemptAdmin(_SuperuserReadOnlyAdmin, axes_admin.AccessAttemptAdmin):
    pass


for _model, _model_admin in ((AccessAttempt, AccessAttemptAdmin),):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
# Successful sign-ins are not logged (AXES_DISABLE_ACCESS_LOG) and failures are
# in the audit log (auth.failed), so these pages would always be empty.
for _model in (AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
