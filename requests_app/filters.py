from __future__ import annotations

import django_filters
from django.utils import timezone

from audit.models import AuditEvent
from jitportal.fields import IsoDateTimeFilter
from requests_app.models import AccessRequest, Grant


class AccessRequestFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=AccessRequest.State.choices, method="filter_state")
    scope = django_filters.ChoiceFilter(
        choices=[
            ("mine", "My requests"),
            ("review", "Requests awaiting my review"),
            ("reviewable", "Any request I may review"),
        ],
        method="filter_scope",
    )
    role = django_filters.CharFilter(field_name="roles__name", distinct=True)
    # ?post_review=pending: break-glass access still awaiting its review after the fact.
    post_review = django_filters.ChoiceFilter(choices=AccessRequest.PostReview.choices)

    class Meta:
        model = AccessRequest
        fields = ["state", "scope", "role", "post_review"]

    def filter_state(self, queryset, name, value):
        # The state as derived from the timestamps, the one the API shows.
        if not value:
            return queryset
        at = timezone.now()
        matching = AccessRequest.objects.none()
        for state in value:
            matching = matching | AccessRequest.objects.in_state(state, at=at)
        return queryset.filter(pk__in=matching.values("pk"))

    def filter_scope(self, queryset, name, value):
        user = self.request.user
        if value == "mine":
            return queryset.filter(requester=user)
        if value == "review":
            return queryset.awaiting_review_by(user, at=timezone.now())
        if value == "reviewable":
            return queryset.reviewable_by(user)
        return queryset


_TRUE, _FALSE = ("true", "True", "1"), ("false", "False", "0")


class GrantFilterSet(django_filters.FilterSet):
    # A choice, not a BooleanFilter: that one ignores values it does not know
    # (``?active=yes``), silently listing ended grants as if they were current.
    active = django_filters.ChoiceFilter(choices=[(v, v) for v in (*_TRUE, *_FALSE)], method="filter_active")
    request = django_filters.UUIDFilter(field_name="request_id")
    user = django_filters.CharFilter(field_name="user__username")

    class Meta:
        model = Grant
        fields = ["active", "request", "user"]

    def filter_active(self, queryset, name, value):
        active = Grant.objects.in_state(Grant.State.ACTIVE, at=timezone.now()).values("pk")
        return queryset.filter(pk__in=active) if value in _TRUE else queryset.exclude(pk__in=active)


class AuditEventFilterSet(django_filters.FilterSet):
    action = django_filters.CharFilter()
    actor = django_filters.CharFilter(field_name="actor_username")
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()
    since = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "actor", "target_type", "target_id", "since", "until"]
