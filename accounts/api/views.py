from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from accounts.api.serializers import (
    MeSerializer,
    RoleSerializer,
    SearchResultSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from accounts.auth import TokenAuthentication
from accounts.backends import password_login_allowed
from accounts.capabilities import capabilities_of
from accounts.lockout import LOCKOUT_STATUS, is_locked_out, lockout_message, lockout_seconds
from accounts.models import Role
from accounts.selectors import resources_searchable_by, roles_requestable_by
from accounts.services import token_create, token_revoke
from accounts.signin import password_login_data
from audit.services import audit_record
from inventory.api.pagination import ResourcePagination
from inventory.filters import ResourceFilterSet
from inventory.models import Resource
from jitportal.net import client_address
from jitportal.restricted import RestrictedAPIView, RestrictedViewSet


class TokenThrottle(SimpleRateThrottle):
    """Per client address: enough for scripts, too few for password guessing."""

    scope = "token"

    def get_ident(self, request):
        # The lockout's rule, so a forged X-Forwarded-For buys no fresh budget.
        return client_address(request) or ""

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenView(RestrictedAPIView):
    """Exchange a username and password for an API token (shown once, stored hashed)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    def get_authenticate_header(self, request):
        # DELETE checks the token itself: a bad one is a 401 (as elsewhere), not a 403.
        return TokenAuthentication().authenticate_header(request)

    @extend_schema(request=TokenRequestSerializer, responses={201: TokenResponseSerializer})
    def post(self, request):
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not password_login_allowed(data.validated_data["username"]):
            audit_record(
                action="token.refused",
                target_type="user",
                target_id=data.validated_data["username"][:64],
                data={"reason": "password sign-in is turned off"},
            )
            return Response(
                {
                    "detail": "password sign-in is turned off on this portal: "
                    "create an API token on its API tokens page and use that",
                    "code": "password_login_disabled",
                },
                status=status.HTTP_403_FORBIDDEN,
            )
        user = authenticate(request, username=data.validated_data["username"], password=data.validated_data["password"])
        if is_locked_out(request):
            # Refused before the password was looked at; auth.failed / auth.locked are recorded.
            return Response(
                {"detail": lockout_message(), "code": "locked_out"},
                status=LOCKOUT_STATUS,
                headers={"Retry-After": str(lockout_seconds())},
            )
        if user is None or not user.is_active:
            audit_record(action="token.refused", target_type="user", target_id=data.validated_data["username"][:64])
            return Response(
                {"detail": "invalid username or password", "code": "invalid_credentials"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        audit_record(
            action="auth.login",
            actor=user,
            target_type="user",
            target_id=user.username[:64],
            data={**password_login_data(user), "client": client_address(request), "path": request.path},
        )
        instance, token = token_create(user=user, name=data.validated_data.get("name", ""), by=user)
        body = {"token": token, "expires_at": instance.expiry, "username": user.username}
        return Response(TokenResponseSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        """Revoke the token this request authenticates with."""
        result = TokenAuthentication().authenticate(request)
        if result is None:
            return Response(
                {"detail": "send the token to revoke in the Authorization header", "code": "token_missing"}, status=400
            )
        user, token = result
        token_revoke(tokens=[token], by=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(RestrictedAPIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=MeSerializer)
    def get(self, request):
        user = request.user
        body = {
            "username": user.username,
            "email": user.email,
            "is_staff": user.is_staff,
            "groups": sorted(user.groups.values_list("name", flat=True)),
            "capabilities": capabilities_of(user),
            # When the token this call came with expires (none for a session): `jit login --token` shows it.
            "token_expires_at": getattr(request.auth, "expiry", None),
        }
        return Response(MeSerializer(body).data)


class ResourceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Resources the caller may search: those a role they may request matches.

    Here rather than in inventory/api/: which resources one may search is a
    rule about roles (accounts.selectors), and inventory sits below accounts.
    """

    queryset = Resource.objects.order_by("kind", "name")
    serializer_class = SearchResultSerializer
    filterset_class = ResourceFilterSet
    pagination_class = ResourcePagination

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.roles = roles_requestable_by(request.user)

    def restrict(self, queryset, user):
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        return queryset & resources_searchable_by(user, roles=self.roles)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "roles": getattr(self, "roles", [])}

    # A page of the list is built from plain rows: the serializer (still the schema, and the
    # detail's body) cost more per call than the page's SQL. Same fields, same values.
    row_fields = tuple(name for name in SearchResultSerializer.Meta.fields if name != "requestable_roles")

    def list(self, request, *args, **kwargs):
        rows = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        roles = self.roles
        for row in rows:
            row["requestable_roles"] = [role.name for role in roles if role.matches_row(row["kind"], row["labels"])]
        return self.get_paginated_response(rows)


class RoleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RestrictedViewSet):
    """Roles the caller may request."""

    queryset = Role.objects.prefetch_related("reviewers").order_by("name")
    serializer_class = RoleSerializer
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"

    def restrict(self, queryset, user):
        return queryset.requestable_by(user)
