"""SCIM 2.0 endpoints under /scim/v2/ (RFC 7644), for an identity provider's token holding ``scim``.

Hand-written on DRF rather than django-scim2: that library leaves
authentication to Django's middleware (a bearer API token would need a
middleware of our own beside DRF's), writes through adapters that ``save()``
models outside our services (no row lock, no audit event), and brings a
filter-grammar dependency for the one ``eq`` providers send. Here every view
derives from the restricting base, every write is a service in
``accounts.scim.services``, and every refusal is a SCIM error document
(``schemas``, ``status``, ``scimType``, ``detail``).
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db.models import Prefetch
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from accounts import capabilities
from accounts.auth import TokenAuthentication
from accounts.models import User
from accounts.scim import schema, services
from accounts.scim.attributes import ScimError, filter_q, is_id, operations_from_document, user_from_document
from jitportal.errors import DomainError
from jitportal.parsers import JSONParser
from jitportal.restricted import RestrictedAPIView

# Filterable attributes: name (lower case) -> (column, case-exact), as the schemas declare them.
USER_FILTERS = {"username": ("username", False), "externalid": ("external_id", True), "id": ("pk", True)}
GROUP_FILTERS = {"displayname": ("name", False), "id": ("pk", True)}


class ScimJSONRenderer(JSONRenderer):
    media_type = "application/scim+json"


class ScimJSONParser(JSONParser):
    media_type = "application/scim+json"


class BearerTokenAuthentication(TokenAuthentication):
    """The portal's API tokens, sent as ``Authorization: Bearer`` as SCIM clients do."""

    def authenticate_header(self, request) -> str:
        return "Bearer"


class MayUseScim(BasePermission):
    message = capabilities.refusal("scim")

    def has_permission(self, request, view) -> bool:
        return capabilities.may_use_scim(request.user)


def scim_exception_handler(exc, context):
    """Every refusal as a SCIM error document; nothing here answers in the portal API's own shape."""
    headers = {}
    scim_type = None
    if isinstance(exc, ScimError):
        status_code, detail, scim_type = exc.status_code, exc.message, exc.scim_type
    elif isinstance(exc, DomainError):
        status_code, detail = exc.status_code, exc.message
    elif isinstance(exc, Http404):
        status_code, detail = 404, "Not found."
    elif isinstance(exc, exceptions.ValidationError):
        status_code, detail, scim_type = 400, _first_message(exc.detail), "invalidValue"
    elif isinstance(exc, exceptions.APIException):
        status_code, detail = exc.status_code, str(exc.detail)
        if isinstance(exc, exceptions.ParseError):
            scim_type = "invalidSyntax"
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="scim"'
            status_code = 401
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait))
    else:
        return None
    document = schema.error_document(status=status_code, detail=detail, scim_type=scim_type)
    return Response(document, status=status_code, headers=headers)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_message(value)}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _pk(raw: str, kind: str) -> int:
    if not is_id(raw):
        raise ScimError(f"{kind} {raw} not found", status=404)
    return int(raw)


# SCIM's own schemas (RFC 7643, served at /Schemas) describe these endpoints, not the portal's OpenAPI document.
@extend_schema(exclude=True)
class ScimView(RestrictedAPIView):
    """Base of the SCIM views: bearer tokens only (no session), capability ``scim``, SCIM's errors."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [MayUseScim]
    parser_classes = [ScimJSONParser, JSONParser]
    renderer_classes = [ScimJSONRenderer, JSONRenderer]
    # Provisioning touches every account: with the capability, every row; without, none.
    queryset = User.objects.none()

    def restrict(self, queryset, user):
        return queryset if capabilities.may_use_scim(user) else queryset.none()

    def get_exception_handler(self):
        return scim_exception_handler

    @property
    def base(self) -> str:
        return self.request.build_absolute_uri("/scim/v2").rstrip("/")

    def page(self, queryset, *, render) -> Response:
        """A ListResponse of ``queryset`` by ``startIndex`` (1-based) and ``count`` (RFC 7644 section 3.4.2.4)."""
        params = self.request.query_params
        start = _integer(params.get("startIndex"), default=1, name="startIndex")
        count = _integer(params.get("count"), default=schema.DEFAULT_COUNT, name="count")
        start, count = max(start, 1), min(max(count, 0), schema.MAX_COUNT)
        total = queryset.count()
        rows = list(queryset[start - 1 : start - 1 + count]) if count else []
        return Response(schema.list_document([render(row) for row in rows], total=total, start_index=start))

    def filtered(self, queryset, attributes):
        expression = self.request.query_params.get("filter")
        if expression is None:
            return queryset
        return queryset.filter(filter_q(expression, attributes))


def _integer(raw: str | None, *, default: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ScimError(f"{name} must be an integer", scim_type="invalidValue") from None


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ScimError("the body must be a JSON object", scim_type="invalidSyntax")
    return request.data


# --- users ----------------------------------------------------------------------------------

_USERS = User.objects.prefetch_related(Prefetch("groups", queryset=Group.objects.order_by("name")))


class UsersView(ScimView):
    queryset = _USERS.order_by("pk")

    def get(self, request):
        users = self.filtered(self.get_queryset(), USER_FILTERS)
        return self.page(users, render=lambda user: schema.user_document(user, base=self.base))

    def post(self, request):
        state = user_from_document(_body(request))
        user = services.scim_user_create(actor=request.user, state=state)
        return self.answer(user.pk, status.HTTP_201_CREATED)

    def answer(self, pk: int, status_code: int = status.HTTP_200_OK) -> Response:
        user = self.get_queryset().get(pk=pk)
        document = schema.user_document(user, base=self.base)
        return Response(document, status=status_code, headers={"Location": document["meta"]["location"]})


class UserView(UsersView):
    def get(self, request, pk):
        user = self.get_queryset().filter(pk=_pk(pk, "User")).first()
        if user is None:
            raise ScimError(f"User {pk} not found", status=404)
        return Response(schema.user_document(user, base=self.base))

    def put(self, request, pk):
        user = services.scim_user_replace(actor=request.user, user_id=_pk(pk, "User"), document=_body(request))
        return self.answer(user.pk)

    def patch(self, request, pk):
        operations = operations_from_document(_body(request))
        user = services.scim_user_patch(actor=request.user, user_id=_pk(pk, "User"), operations=operations)
        return self.answer(user.pk)

    def delete(self, request, pk):
        services.scim_user_deactivate(actor=request.user, user_id=_pk(pk, "User"))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def post(self, request, pk):  # type: ignore[override]
        raise exceptions.MethodNotAllowed("POST")


# --- groups ---------------------------------------------------------------------------------


class GroupsView(ScimView):
    queryset = Group.objects.order_by("pk")

    def listed(self):
        groups = self.get_queryset()
        if self.with_members():
            members = User.objects.only("pk", "username").order_by("pk")
            groups = groups.prefetch_related(Prefetch("user_set", queryset=members))
        return groups

    def with_members(self) -> bool:
        # Entra ID asks for groups without members when it only looks one up by name.
        excluded = self.request.query_params.get("excludedAttributes", "")
        return "members" not in {name.strip().lower() for name in excluded.split(",")}

    def render(self, group) -> dict:
        return schema.group_document(group, base=self.base, members=self.with_members())

    def get(self, request):
        return self.page(self.filtered(self.listed(), GROUP_FILTERS), render=self.render)

    def post(self, request):
        body = _body(request)
        name = next((value for key, value in body.items() if str(key).lower() == "displayname"), None)
        if isinstance(name, str) and Group.objects.filter(name__iexact=name.strip()).exists():
            raise ScimError(
                f"group {name!r} exists: find it with filter=displayName eq and PATCH its members",
                scim_type="uniqueness",
                status=409,
            )
        raise ScimError(
            "portal groups are declared in the policy file; SCIM manages the members of existing groups",
            status=403,
        )


class GroupView(GroupsView):
    def answer(self, pk: int) -> Response:
        group = self.listed().filter(pk=pk).first()
        if group is None:
            raise ScimError(f"Group {pk} not found", status=404)
        return Response(self.render(group))

    def get(self, request, pk):
        return self.answer(_pk(pk, "Group"))

    def put(self, request, pk):
        group = services.scim_group_replace(actor=request.user, group_id=_pk(pk, "Group"), document=_body(request))
        return self.answer(group.pk)

    def patch(self, request, pk):
        operations = operations_from_document(_body(request))
        group = services.scim_group_patch(actor=request.user, group_id=_pk(pk, "Group"), operations=operations)
        return self.answer(group.pk)

    def delete(self, request, pk):
        _pk(pk, "Group")
        raise ScimError("portal groups are declared in the policy file and cannot be deleted through SCIM", status=403)

    def post(self, request, pk):  # type: ignore[override]
        raise exceptions.MethodNotAllowed("POST")


# --- discovery ------------------------------------------------------------------------------


class ServiceProviderConfigView(ScimView):
    def get(self, request):
        return Response(schema.service_provider_config(base=self.base))


class ResourceTypesView(ScimView):
    def get(self, request, name=None):
        types = schema.resource_types(base=self.base)
        if name is None:
            return Response(schema.list_document(types, total=len(types), start_index=1))
        found = next((item for item in types if item["id"] == name), None)
        if found is None:
            raise ScimError(f"ResourceType {name} not found", status=404)
        return Response(found)


class SchemasView(ScimView):
    def get(self, request, name=None):
        documents = schema.schemas(base=self.base)
        if name is None:
            return Response(schema.list_document(documents, total=len(documents), start_index=1))
        found = next((item for item in documents if item["id"] == name), None)
        if found is None:
            raise ScimError(f"Schema {name} not found", status=404)
        return Response(found)
