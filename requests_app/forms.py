"""Forms of the portal and of the admin's confirmation pages.

They check shape only (a choice among those offered, a well-formed date); every
rule is the service's, and a ``DomainError`` it raises is put next to the field
it names.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from accounts.models import Role
from jitportal.durations import duration_label
from jitportal.fields import DateTimeFormField
from requests_app.models import MAX_REASON_LENGTH, Review
from requests_app.preview import RequestPreview

DURATION_STEPS = [
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=3),
    timedelta(days=7),
    timedelta(days=14),
]


def _plural(amount: int, unit: str) -> str:
    return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"


def duration_choices(cap: timedelta) -> list[tuple[str, str]]:
    """The usual steps up to ``cap``, and the cap itself when it is not one of them."""
    steps = [step for step in DURATION_STEPS if step <= cap]
    if cap not in steps:
        steps.append(cap)
    return [(str(int(step.total_seconds())), duration_label(step)) for step in steps]


def _role_choice_label(role: Role) -> str:
    approvals = _plural(role.approvals, "approval")
    return f"{role.name} — up to {duration_label(role.max_duration)}, {approvals}"


class AccessRequestForm(forms.Form):
    roles = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Roles",
        help_text="Several roles you may request fit; choose the one you need.",
    )
    reason = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": MAX_REASON_LENGTH}),
        label="Reason",
    )
    duration = forms.ChoiceField(label="For how long")
    start_time = DateTimeFormField(
        required=False,
        label="Start at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    suggested_reviewers = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Suggested reviewers",
        help_text="Optional: who should look at it first. Any eligible reviewer may still decide.",
    )

    def __init__(self, *args, selection: RequestPreview, reviewers: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.selection = selection
        self.reviewer_users = {u.username: u for u in reviewers}

        if selection.choices:
            roles = self.fields["roles"]
            roles.choices = [(r.name, _role_choice_label(r)) for r in selection.choices]
            fixed = ", ".join(r.name for r in selection.fixed)
            needing = ", ".join(r.name for r in selection.needing_choice)
            if needing:
                roles.help_text = f"Several roles you may request fit {needing}; choose the one you need."
            else:
                roles.label = "Other roles (optional)"
                roles.help_text = f"{fixed} reaches every resource here. Tick another role only if you need it too."
        else:
            del self.fields["roles"]

        # Before a choice is made only the fixed roles are sure; the service names the cap if a chosen role is shorter.
        self.fields["duration"].choices = duration_choices(selection.duration_cap)
        self.fields["duration"].initial = str(int(selection.default_duration.total_seconds()))

        needing = selection.reason_required_by
        reason = self.fields["reason"]
        reason.help_text = reason_help(list(selection.roles))
        if selection.break_glass or (needing and not selection.choices):
            reason.label = "Reason (required)"
            reason.widget.attrs["required"] = True
        elif needing:
            reason.label = f"Reason (required by {', '.join(r.name for r in needing)})"
        else:
            reason.label = "Reason (optional)"

        self.fields[
            "start_time"
        ].help_text = f"Optional, time zone {timezone.get_current_timezone_name()}. Empty: as soon as it is approved."
        if reviewers:
            self.fields["suggested_reviewers"].choices = [
                (u.username, f"{u.get_full_name() or u.username} ({u.username})") for u in reviewers
            ]
        else:
            del self.fields["suggested_reviewers"]

    def chosen_roles(self) -> list[Role]:
        by_name = {r.name: r for r in self.selection.choices}
        chosen = [by_name[name] for name in self.cleaned_data.get("roles", [])]
        return [*self.selection.fixed, *chosen]

    def chosen_reviewers(self) -> list:
        return [self.reviewer_users[name] for name in self.cleaned_data.get("suggested_reviewers", [])]


def reason_help(roles: list[Role]) -> str:
    """What the roles want in a reason: their hints, and the patterns a reason must match."""
    hints = list(dict.fromkeys(r.reason_hint for r in roles if r.reason_hint))
    patterns = [f"{r.reason_pattern} (role {r.name})" for r in roles if r.reason_pattern]
    if patterns:
        hints.append(f"Must match {'; '.join(patterns)}.")
    return " ".join(hints)


class ExtendForm(forms.Form):
    """More of an approved request's access: how much longer and why (the service decides the rest)."""

    duration = forms.ChoiceField(label="For how much longer")
    reason = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": MAX_REASON_LENGTH}),
        label="Reason",
    )

    def __init__(self, *args, roles: list[Role], **kwargs):
        super().__init__(*args, **kwargs)
        cap = min(r.max_duration for r in roles)
        self.fields["duration"].choices = duration_choices(cap)
        self.fields["duration"].initial = str(int(min(timedelta(hours=1), cap).total_seconds()))
        reason = self.fields["reason"]
        reason.help_text = reason_help(roles)
        if any(r.reason_required or r.reason_pattern for r in roles):
            reason.label = "Reason (required)"
            reason.widget.attrs["required"] = True
        else:
            reason.label = "Reason (optional)"


class ReviewForm(forms.Form):
    """The admin's confirmation page for approving or denying one or several requests."""

    decision = forms.ChoiceField(choices=Review.Decision.choices, widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False,
        strip=False,
        label="Review reason",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "maxlength": MAX_REASON_LENGTH}),
        help_text="Recorded with each review and shown to the requester.",
    )
    duration = forms.CharField(
        required=False,
        max_length=32,
        label="Shorten to",
        help_text="Optional: grant less time than requested, e.g. 30m or 1h (never longer than requested).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        decision = self.data.get("decision") if self.is_bound else self.initial.get("decision")
        if decision != Review.Decision.APPROVE:
            del self.fields["duration"]
        if decision == Review.Decision.DENY:
            # A hint for the browser; the review service is what refuses a denial without a reason.
            self.fields["reason"].widget.attrs["required"] = True
            self.fields["reason"].help_text = "Required for a denial; recorded and shown to the requester."


class RevokeForm(forms.Form):
    reason = forms.CharField(
        required=False,
        strip=False,
        label="Why is access ended early?",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "maxlength": MAX_REASON_LENGTH, "required": True}),
        help_text="Required; recorded in the audit log and shown to the user.",
    )


class PostReviewForm(forms.Form):
    """The admin's confirmation page for ratifying or rejecting break-glass access after the fact."""

    decision = forms.ChoiceField(choices=[("ratify", "ratify"), ("reject", "reject")], widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False,
        strip=False,
        label="Post-review reason",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "maxlength": MAX_REASON_LENGTH}),
        help_text="Recorded with the post-review.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        decision = self.data.get("decision") if self.is_bound else self.initial.get("decision")
        if decision == "reject":
            # A hint for the browser; the service is what refuses a rejection without a reason.
            self.fields["reason"].widget.attrs["required"] = True
            self.fields["reason"].help_text = "Required to reject; the access ends at once."
