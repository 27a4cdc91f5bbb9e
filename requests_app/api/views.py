from __future__ import annotations

from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, prefetch_related_objects
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from accounts import capabilities
from accounts.mfa import mfa_request_verified_at
from audit.models import AuditCheckpoint, AuditEvent
from jitportal.errors import DomainError, PermissionRefused
from jitportal.restricted import RestrictedAPIView, RestrictedViewSet
from requests_app import services
from requests_app.api.serializers import (
    AccessCheckSerializer,
    AccessRequestCreateSerializer,
    AccessRequestSerializer,
    AuditCheckpointSerializer,
    AuditEventSerializer,
    ExtendSerializer,
    GrantSerializer,
    PostReviewSerializer,
    ReasonSerializer,
    ReviewCreateSerializer,
    ReviewSerializer,
)
from requests_app.credentials.api import GrantCertificateMixin
from requests_app.filters import AccessRequestFilterSet, AuditEventFilterSet, GrantFilterSet
from requests_app.models import AccessRequest, Grant, Review

User = get_user_model()


class IsAuditor(BasePermission):
    message = capabilities.refusal(capabilities.Capability.AUDIT)
    code = "capability_required"

    def has_permission(self, request, view):
        return capabilities.may_audit(request.user)


# A request's relations that others add to after it is made.
_WRITTEN_LATER = (
    Prefetch("reviews", queryset=Review.objects.select_related("reviewer")),
    Prefetch("grants", queryset=Grant.objects.select_related("user", "role", "resource", "revoked_by")),
)


class AccessRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Access requests: your own, those you may review, all of them for auditors."""

    queryset = (
        AccessRequest.objects.select_related("requester", "post_reviewed_by")
        .prefetch_related(
            "roles",
            "resources",
            "suggested_reviewers",
            *_WRITTEN_LATER,
        )
        .order_by("-created_at")
    )
    not_found = "no such request"
    serializer_class = AccessRequestSerializer
    filterset_class = AccessRequestFilterSet
    # Only well-formed UUIDs route here, so a malformed id is a plain 404.
    lookup_value_regex = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"

    def _detail(self, pk) -> Response:
        obj = self.get_queryset().filter(pk=pk).first()
        return Response(self.get_serializer(obj).data)

    @extend_schema(request=AccessRequestCreateSerializer, responses={201: AccessRequestSerializer})
    def create(self, request):
        data = AccessRequestCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        # Names and references go to the service as given: it looks them up among what the
        # requester may request and search, and a hidden one reads as one that does not exist.
        created = services.request_create(
            requester=request.user,
            resources=values["resources"],
            roles=values["roles"],
            reason=values["reason"],
            duration=values["duration"],
            start_time=values["start_time"],
            suggested_reviewers=values["suggested_reviewers"],
        )
        # The request as written, read back from nothing: the service holds its roles, resources
        # and suggested reviewers, and a pending request has had no review and has no grant.
        if created.state == AccessRequest.State.PENDING:
            created.hold(reviews=[], grants=[])
        else:
            prefetch_related_objects([created], *_WRITTEN_LATER)
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ReviewCreateSerializer, responses={201: ReviewSerializer})
    @action(detail=True, methods=["post"])
    def reviews(self, request, pk=None):
        """Approve or deny.

        Looked up with ``unrestricted_get`` so that refused attempts are
        audited; a refusal on a request the caller may not see is then
        answered as a missing one, so a review never tells which requests exist.
        """
        access_request = self._review_target(pk)
        data = ReviewCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with self._hidden_as_missing(access_request):
            review = services.request_review(
                request=access_request,
                reviewer=request.user,
                decision=data.validated_data["decision"],
                reason=data.validated_data["reason"],
                duration=data.validated_data["duration"],
                mfa_verified_at=mfa_request_verified_at(request),
            )
        # The service leaves the request's state as it committed it.
        body = {**ReviewSerializer(review).data, "request_state": access_request.state}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=ReasonSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        access_request = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.request_cancel(request=access_request, user=request.user, reason=data.validated_data["reason"])
        return self._detail(access_request.pk)

    @extend_schema(request=ExtendSerializer, responses={201: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def extend(self, request, pk=None):
        """Ask for more of an approved request's access while some of it is live: a new request (``extends``)."""
        access_request = self.get_object()
        data = ExtendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        extension = services.request_extend(
            request=access_request,
            requester=request.user,
            duration=data.validated_data["duration"],
            reason=data.validated_data["reason"],
        )
        return Response(self._detail(extension.pk).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ReasonSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"])
    def drop(self, request, pk=None):
        """Give back every live grant of your own approved request, now."""
        access_request = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.request_drop(request=access_request, user=request.user, reason=data.validated_data["reason"])
        return self._detail(access_request.pk)

    @extend_schema(request=PostReviewSerializer, responses={200: AccessRequestSerializer})
    @action(detail=True, methods=["post"], url_path="post-review")
    def post_review(self, request, pk=None):
        """Ratify or reject break-glass access after the fact; reject ends it at once.

        Looked up like a review, so refused attempts are audited and a request
        the caller may not see is answered as a missing one.
        """
        access_request = self._review_target(pk)
        data = PostReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with self._hidden_as_missing(access_request):
            services.request_post_review(
                request=access_request,
                reviewer=request.user,
                decision=data.validated_data["decision"],
                reason=data.validated_data["reason"],
            )
        return self._detail(access_request.pk)

    def _review_target(self, pk) -> AccessRequest:
        """The request a review or post-review is about, visible or not, so the service audits a refusal."""
        return self.unrestricted_get(pk)

    @contextmanager
    def _hidden_as_missing(self, access_request: AccessRequest):
        """A refusal on a request the caller may not see is answered as a missing one: no existence oracle."""
        try:
            yield
        except PermissionRefused:
            if not self.is_visible(access_request):
                raise NotFound(self.not_found) from None
            raise

    def get_object(self):
        # Without the list's prefetches: an action only needs the row.
        obj = self.restrict(AccessRequest.objects.all(), self.request.user).filter(pk=self.kwargs["pk"]).first()
        if obj is None:
            raise NotFound("no such request")
        return obj

    def retrieve(self, request, pk=None):
        return self._detail(self.get_object().pk)


class GrantViewSet(GrantCertificateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Grants: your own, all of them for auditors."""

    queryset = Grant.objects.select_related("user", "role", "resource", "revoked_by").order_by("-starts_at", "-id")
    serializer_class = GrantSerializer
    filterset_class = GrantFilterSet

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}

    @extend_schema(request=ReasonSerializer, responses={200: GrantSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        grant = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        grant = services.grant_revoke(grant=grant, by=request.user, reason=data.validated_data["reason"])
        return Response(self.get_serializer(self.get_queryset().get(pk=grant.pk)).data)

    @extend_schema(request=ReasonSerializer, responses={200: GrantSerializer})
    @action(detail=True, methods=["post"])
    def drop(self, request, pk=None):
        """Give your own grant back now; its certificates are listed as revoked at once."""
        grant = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        grant = services.grant_drop(grant=grant, user=request.user, reason=data.validated_data["reason"])
        return Response(self.get_serializer(self.get_queryset().get(pk=grant.pk)).data)


# One instance for every answer: its fields are built once (a serializer deep-copies them
# per instance, which cost the check as much as its query), and to_representation keeps no state.
_ACCESS_CHECK_ANSWER = AccessCheckSerializer()


class AccessCheckView(RestrictedAPIView):
    """May this user use this login on this resource right now?"""

    @extend_schema(
        parameters=[
            OpenApiParameter("user", str, description="username; default: the caller"),
            OpenApiParameter("resource", str, required=True, description="id or kind/name"),
            OpenApiParameter("login", str, description="the login (principal) to check"),
        ],
        responses=AccessCheckSerializer,
    )
    def get(self, request):
        params = request.query_params
        resource_ref = params.get("resource", "").strip()
        if not resource_ref:
            raise DomainError("this parameter is required (an id or kind/name)", field="resource")
        username = params.get("user", "").strip()
        user = request.user
        if username and username != request.user.username:
            if not capabilities.may_check_access(request.user, request.auth):
                raise PermissionRefused(
                    capabilities.check_access_refusal(request.user, request.auth), code="capability_required"
                )
            user = User.objects.filter(username=username).first()
            if user is None:
                raise NotFound(f"no such user: {username}")
        login = params.get("login")
        # The reference is resolved in the check's own statement; a missing resource is
        # denied like one without a grant, so the answer does not tell which exist.
        # A login that is sent but blank is checked (and matches nothing): fail closed.
        decision = services.access_check(
            user=user, resource=resource_ref, login=login.strip() if login is not None else None
        )
        body = {
            "allowed": decision.allowed,
            "grant": decision.grant.pk if decision.grant else None,
            "expires_at": decision.expires_at,
            "reason": decision.reason,
            "code": decision.code,
        }
        return Response(_ACCESS_CHECK_ANSWER.to_representation(body))


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """The audit log, newest first (auditors only)."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    permission_classes = [IsAuditor]
    queryset = AuditEvent.objects.order_by("-id")

    def restrict(self, queryset, user):
        # IsAuditor refuses the others with a 403 first; the rows say the same on their own.
        return queryset if capabilities.may_audit(user) else queryset.none()

    @extend_schema(responses=AuditCheckpointSerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request):
        """The newest checkpoint's verification of the log (beat writes one every few minutes)."""
        checkpoint = AuditCheckpoint.objects.order_by("-id").first()
        if checkpoint is None:
            return Response({"checkpoint": None, "ok": None, "problem": "no checkpoint yet"})
        return Response(AuditCheckpointSerializer(checkpoint).data)
