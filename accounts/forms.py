"""Forms of the accounts pages: they validate shape; the services decide."""

from __future__ import annotations

from datetime import timedelta

from django import forms

# A fixed menu keeps every token's life bounded and the choice quick; the longest is a quarter.
TOKEN_LIFETIMES = {
    "1h": ("1 hour", timedelta(hours=1)),
    "12h": ("12 hours", timedelta(hours=12)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
    "90d": ("90 days", timedelta(days=90)),
}


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where it is used, e.g. “laptop” or “deploy script”.")
    lifetime = forms.ChoiceField(choices=[(key, label) for key, (label, _) in TOKEN_LIFETIMES.items()], initial="12h")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the token a name.")
        return name

    def clean_lifetime(self) -> timedelta:
        return TOKEN_LIFETIMES[self.cleaned_data["lifetime"]][1]
