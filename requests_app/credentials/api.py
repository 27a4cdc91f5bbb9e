"""SSH credentials over the API: certificates for grant owners, trust material for hosts.

The host-side endpoints answer ``text/plain`` by default, one entry per line,
so a host can write them straight into sshd's files (``curl -fsS … > file``);
``?format=json`` or ``Accept: application/json`` gives JSON instead.
"""

from __future__ import annotations

import json

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from accounts import capabilities
from inventory.models import Resource
from inventory.selectors import resource_get
from jitportal.api import InputSerializer
from jitportal.errors import PermissionRefused
from jitportal.restricted import RestrictedAPIView
from requests_app.credentials.ca import ssh_cas_trusted
from requests_app.credentials.certificates import NOT_OWNER, certificate_issue
from requests_app.credentials.hosts import resource_ssh_principals, ssh_revoked_public_keys


class PlainTextRenderer(BaseRenderer):
    """Lines of text; an error body becomes its ``detail`` on one line."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if isinstance(data, str):
            return data.encode()
        if isinstance(data, dict) and isinstance(data.get("detail"), str):
            return f"{data['detail']}\n".encode()
        return (json.dumps(data) + "\n").encode()


def _lines(items: list[str]) -> HttpResponse:
    # A plain response: DRF drops the Content-Type of an empty body, and an empty list is the usual answer.
    return HttpResponse("".join(f"{item}\n" for item in items), content_type="text/plain; charset=utf-8")


def _wants_json(request) -> bool:
    return getattr(request.accepted_renderer, "format", "") == "json"


_FORMAT_PARAMETER = OpenApiParameter(
    "format", str, enum=["text", "json"], description="text (the default: one per line) or json"
)


class IsHostAgent(BasePermission):
    """Holders of ``check_access`` (a host agent): these lists are about every user."""

    code = "capability_required"

    def has_permission(self, request, view) -> bool:
        if capabilities.may_check_access(request.user, request.auth):
            return True
        self.message = capabilities.check_access_refusal(request.user, request.auth)
        return False


# --- certificates ---------------------------------------------------------------------------


class CertificateRequestSerializer(InputSerializer):
    public_key = serializers.CharField(
        max_length=16384, help_text="an OpenSSH public key: ed25519, ecdsa, or rsa with at least 3072 bits"
    )


class CertificateSerializer(serializers.Serializer):
    certificate = serializers.CharField(help_text="OpenSSH user certificate, one line (save as <key>-cert.pub)")
    principals = serializers.ListField(child=serializers.CharField(), help_text="login@resource-name")
    valid_after = serializers.DateTimeField()
    valid_before = serializers.DateTimeField(help_text="never later than the grant's expires_at")
    serial = serializers.IntegerField()
    key_id = serializers.CharField()


class GrantCertificateMixin:
    """Adds ``POST /grants/{id}/certificate/`` to the grant viewset."""

    @extend_schema(
        request=CertificateRequestSerializer,
        responses={201: CertificateSerializer},
        description=(
            "Sign a short-lived OpenSSH user certificate for the grant's owner. "
            "409 when the grant is not active; 403 when the caller is not its owner or no longer eligible."
        ),
    )
    @action(detail=True, methods=["post"])
    def certificate(self, request, pk=None):
        data = CertificateRequestSerializer(data=request.data)
        # The usual case, the owner asking for their own grant, costs the service's one read and one write:
        # the caller's view of grants (which loads what widens it) is asked only when the grant is not theirs.
        if request.user.is_active and str(pk).isdigit() and data.is_valid():
            try:
                issued = certificate_issue(
                    grant=int(pk), user=request.user, public_key=data.validated_data["public_key"]
                )
            except PermissionRefused as refused:
                if refused.code != NOT_OWNER:
                    raise
            else:
                return Response(_certificate_answer(issued), status=status.HTTP_201_CREATED)
        grant = self.get_object()  # 404 unless visible: own grants, all for auditors
        if grant.user_id != request.user.pk:
            raise PermissionRefused("only the grant's owner can get a certificate for it")
        data.is_valid(raise_exception=True)
        issued = certificate_issue(grant=grant, user=request.user, public_key=data.validated_data["public_key"])
        return Response(_certificate_answer(issued), status=status.HTTP_201_CREATED)


_DATETIME = serializers.DateTimeField()


def _certificate_answer(issued) -> dict:
    # What CertificateSerializer (the schema) says, without building a serializer on the hot path.
    return {
        "certificate": issued.certificate,
        "principals": issued.principals,
        "valid_after": _DATETIME.to_representation(issued.valid_after),
        "valid_before": _DATETIME.to_representation(issued.valid_before),
        "serial": issued.serial,
        "key_id": issued.key_id,
    }


# --- host side ------------------------------------------------------------------------------


class CAKeySerializer(serializers.Serializer):
    name = serializers.CharField()
    public_key = serializers.CharField()
    fingerprint = serializers.CharField()
    created_at = serializers.DateTimeField()
    signing = serializers.BooleanField()
    trusted_until = serializers.DateTimeField(allow_null=True)


class CAKeysSerializer(serializers.Serializer):
    keys = CAKeySerializer(many=True)


NO_SSH_CA = "no SSH CA yet: run manage.py ssh_ca init"


class SSHCAView(RestrictedAPIView):
    """Every trusted CA public key, ready for sshd's TrustedUserCAKeys.

    Before any CA exists the answer is a 404 in JSON whatever the format asked
    (a host's ``curl -f`` fails and keeps its file rather than writing an
    error into it); a GET never creates one.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    renderer_classes = [PlainTextRenderer, JSONRenderer]

    @extend_schema(
        parameters=[_FORMAT_PARAMETER],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="one OpenSSH public key per line"),
            (200, "application/json"): CAKeysSerializer,
            404: OpenApiResponse(description=NO_SSH_CA),
        },
    )
    def get(self, request):
        now = timezone.now()
        cas = ssh_cas_trusted(at=now)
        if not cas:
            return JsonResponse({"detail": NO_SSH_CA, "code": "no_ssh_ca"}, status=status.HTTP_404_NOT_FOUND)
        if _wants_json(request):
            keys = [
                {
                    "name": ca.name,
                    "public_key": ca.public_key,
                    "fingerprint": ca.fingerprint,
                    "created_at": ca.created_at,
                    "signing": ca.retired_at is None or ca.retired_at > now,
                    "trusted_until": ca.trusted_until,
                }
                for ca in cas
            ]
            return Response(CAKeysSerializer({"keys": keys}).data)
        return _lines([ca.public_key for ca in cas])


class PrincipalsSerializer(serializers.Serializer):
    resource = serializers.CharField()
    principals = serializers.ListField(child=serializers.CharField())


class ResourceSSHPrincipalsView(RestrictedAPIView):
    """Lines for a host's AuthorizedPrincipalsFile: the principals that name this host."""

    permission_classes = [IsHostAgent]
    renderer_classes = [PlainTextRenderer, JSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("ref", str, OpenApiParameter.PATH, description="resource id, or the name of a node"),
            OpenApiParameter("login", str, description="only the principals for this login (sshd's %u)"),
            _FORMAT_PARAMETER,
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="one principal (login@name) per line"),
            (200, "application/json"): PrincipalsSerializer,
        },
    )
    def get(self, request, ref: str):
        resource = resource_get(ref if ref.isascii() and ref.isdigit() else f"{Resource.Kind.NODE}/{ref}")
        login = request.query_params.get("login")
        principals = resource_ssh_principals(resource=resource, login=login.strip() if login is not None else None)
        if _wants_json(request):
            return Response(PrincipalsSerializer({"resource": resource.ref, "principals": principals}).data)
        return _lines(principals)


class RevokedKeysSerializer(serializers.Serializer):
    keys = serializers.ListField(child=serializers.CharField())


class RevokedKeysView(RestrictedAPIView):
    """Public keys of certificates whose access ended early, for sshd's RevokedKeys."""

    permission_classes = [IsHostAgent]
    renderer_classes = [PlainTextRenderer, JSONRenderer]

    @extend_schema(
        parameters=[_FORMAT_PARAMETER],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="one OpenSSH public key per line"),
            (200, "application/json"): RevokedKeysSerializer,
        },
    )
    def get(self, request):
        keys = ssh_revoked_public_keys()
        if _wants_json(request):
            return Response(RevokedKeysSerializer({"keys": keys}).data)
        return _lines(keys)
