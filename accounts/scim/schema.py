"""SCIM 2.0 (RFC 7643) as the portal speaks it: the schema URNs, how a user and a group look, the discovery documents.

Only what the portal stores is described: a user's ``userName``,
``externalId``, ``name.givenName``/``familyName``, one email and ``active``; a
group's ``displayName`` and ``members``. An identity provider reads these
documents (``/ServiceProviderConfig``, ``/ResourceTypes``, ``/Schemas``) to
learn what it may send.
"""

from __future__ import annotations

from django.contrib.auth.models import Group

from accounts.models import User

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SERVICE_PROVIDER_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"

# A page of a list: what an identity provider gets without ``count``, and the most it may ask for.
DEFAULT_COUNT = 100
MAX_COUNT = 200


def user_document(user: User, *, base: str) -> dict:
    """``user`` as a SCIM User; ``user.groups`` should be prefetched (a list reads none per row)."""
    location = f"{base}/Users/{user.pk}"
    document: dict = {
        "schemas": [USER],
        "id": str(user.pk),
        "userName": user.username,
        "name": {
            "givenName": user.first_name,
            "familyName": user.last_name,
            "formatted": f"{user.first_name} {user.last_name}".strip(),
        },
        "displayName": f"{user.first_name} {user.last_name}".strip() or user.username,
        "active": user.is_active,
        "emails": [{"value": user.email, "type": "work", "primary": True}] if user.email else [],
        "groups": [
            {"value": str(group.pk), "display": group.name, "$ref": f"{base}/Groups/{group.pk}"}
            for group in user.groups.all()
        ],
        "meta": {"resourceType": "User", "created": user.date_joined.isoformat(), "location": location},
    }
    if user.external_id:
        document["externalId"] = user.external_id
    return document


def group_document(group: Group, *, base: str, members: bool = True) -> dict:
    """``group`` as a SCIM Group; ``group.user_set`` should be prefetched when ``members``."""
    document: dict = {
        "schemas": [GROUP],
        "id": str(group.pk),
        "displayName": group.name,
        "meta": {"resourceType": "Group", "location": f"{base}/Groups/{group.pk}"},
    }
    if members:
        document["members"] = [
            {"value": str(user.pk), "display": user.username, "$ref": f"{base}/Users/{user.pk}"}
            for user in group.user_set.all()
        ]
    return document


def list_document(resources: list[dict], *, total: int, start_index: int) -> dict:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "itemsPerPage": len(resources),
        "startIndex": start_index,
        "Resources": resources,
    }


def error_document(*, status: int, detail: str, scim_type: str | None = None) -> dict:
    document: dict = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        document["scimType"] = scim_type
    return document


# --- discovery (RFC 7644 section 4) ---------------------------------------------------------


def service_provider_config(*, base: str) -> dict:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Portal API token",
                "description": "Authorization: Bearer <an API token of a user holding the scim capability>",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"},
    }


def resource_types(*, base: str) -> list[dict]:
    return [
        {
            "schemas": [RESOURCE_TYPE],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "A person who may request access",
            "schema": USER,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"},
        },
        {
            "schemas": [RESOURCE_TYPE],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "A portal group (declared in the policy file); SCIM manages its members",
            "schema": GROUP,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/Group"},
        },
    ]


def _attribute(name: str, *, type_: str = "string", required: bool = False, **extra) -> dict:
    attribute = {
        "name": name,
        "type": type_,
        "multiValued": False,
        "required": required,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    attribute.update(extra)
    return attribute


def schemas(*, base: str) -> list[dict]:
    user_attributes = [
        _attribute("userName", required=True, uniqueness="server"),
        _attribute("externalId", caseExact=True, uniqueness="server"),
        _attribute(
            "name",
            type_="complex",
            subAttributes=[_attribute("givenName"), _attribute("familyName"), _attribute("formatted")],
        ),
        _attribute("displayName", mutability="readOnly"),
        _attribute("active", type_="boolean"),
        _attribute(
            "emails",
            type_="complex",
            multiValued=True,
            subAttributes=[_attribute("value"), _attribute("type"), _attribute("primary", type_="boolean")],
        ),
        _attribute(
            "groups",
            type_="complex",
            multiValued=True,
            mutability="readOnly",
            subAttributes=[_attribute("value", mutability="readOnly"), _attribute("display", mutability="readOnly")],
        ),
    ]
    group_attributes = [
        _attribute("displayName", required=True, mutability="immutable", uniqueness="server"),
        _attribute(
            "members",
            type_="complex",
            multiValued=True,
            subAttributes=[_attribute("value", mutability="immutable"), _attribute("display", mutability="readOnly")],
        ),
    ]
    return [
        {
            "schemas": [SCHEMA],
            "id": USER,
            "name": "User",
            "description": "User Account",
            "attributes": user_attributes,
            "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{USER}"},
        },
        {
            "schemas": [SCHEMA],
            "id": GROUP,
            "name": "Group",
            "description": "Group",
            "attributes": group_attributes,
            "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{GROUP}"},
        },
    ]
