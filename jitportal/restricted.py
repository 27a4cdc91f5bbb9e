"""The restricting base of every API view (kept apart from jitportal.api, which DRF's settings import)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework import viewsets
from rest_framework.exceptions import NotFound
from rest_framework.views import APIView


class Restricted:
    """What every API view derives from: its rows are only ever those the caller may see.

    As NetBox restricts querysets in its base view: a view names the model's
    whole ``queryset`` (with its joins) and :meth:`get_queryset` narrows it to
    :meth:`restrict` for the caller, so listing, ``get_object`` and every
    action see the same rows and no view can forget visibility. The default
    rule is the model's ``visible_to(user)`` queryset method; a model with
    another rule (roles one may request, resources one may search) overrides
    :meth:`restrict`, never ``get_queryset``. Views with no rows (the access
    check, tokens, the CA keys) derive from it too, so "every API view" is a
    fact a test can check.

    The one way around it is :meth:`unrestricted_get`, named so that a review
    of the code finds every use.
    """

    queryset = None
    # What a row outside the caller's view is answered with: the same as a missing one.
    not_found = "Not found."

    def restrict(self, queryset, user):
        return queryset.visible_to(user)

    def get_queryset(self):
        if self.queryset is None:
            raise ImproperlyConfigured(f"{type(self).__name__} has no queryset to restrict")
        return self.restrict(self.queryset.all(), self.request.user)

    def is_visible(self, obj) -> bool:
        return self.restrict(type(obj)._default_manager.all(), self.request.user).filter(pk=obj.pk).exists()

    def unrestricted_get(self, pk):
        """The row ``pk`` whether or not the caller may see it: the one deliberate bypass.

        For an action that must reach the service even on a row the caller
        may not see, so that the refusal is audited (a review of someone
        else's request). The caller answers such a refusal as a missing row
        (check :meth:`is_visible`), so the bypass never tells which rows exist.
        """
        obj = self.queryset.model._default_manager.filter(pk=pk).first()
        if obj is None:
            raise NotFound(self.not_found)
        return obj


class RestrictedAPIView(Restricted, APIView):
    """Base of the API views that are not viewsets."""


class RestrictedViewSet(Restricted, viewsets.GenericViewSet):
    """Base of the API viewsets; add DRF's mixins for the actions."""
