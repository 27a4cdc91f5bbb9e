"""API plumbing shared by every app: input serializers, pagination and error shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jitportal.errors import DomainError

logger = logging.getLogger(__name__)


class InputSerializer(serializers.Serializer):
    """Base of every input serializer: a field it does not know is an error, never ignored.

    A typo (``"durration": "2h"``) would otherwise be dropped and the default
    used in silence.
    """

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            known = {name for name, field in self.fields.items() if not field.read_only}
            # A form post (the browsable API) also carries Django's CSRF token, which is no field.
            unknown = sorted(str(key) for key in data if key not in known and key != "csrfmiddlewaretoken")
            if unknown:
                raise ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _refusal(detail: str, code: str, status_code: int, **kwargs) -> Response:
    return Response({"detail": detail, "code": code}, status=status_code, **kwargs)


def exception_handler(exc, context):
    """DRF's handler plus domain errors, so a refused rule is a 4xx, never a 500.

    Every refusal with a ``detail`` also carries a stable ``code`` (the domain
    error's, or DRF's own such as ``not_authenticated``); field errors keep
    DRF's shape, ``{field: [message]}``, where the field names what to fix.
    """
    if isinstance(exc, DomainError):
        if exc.field and exc.status_code == status.HTTP_400_BAD_REQUEST:
            return Response({exc.field: [exc.message]}, status=exc.status_code)
        return _refusal(exc.message, exc.code, exc.status_code)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "message_dict"):
            return Response(exc.message_dict, status=status.HTTP_400_BAD_REQUEST)
        return _refusal(" ".join(exc.messages), "invalid", status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return _refusal(
            "the request body is larger than this server accepts", "too_large", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, SuspiciousOperation):  # too many fields or files: Django's own 400, as JSON
        return _refusal(str(exc), "invalid", status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, APIException) and isinstance(response.data, dict):
        detail = response.data.get("detail")
        if isinstance(detail, str) and "code" not in response.data:
            response.data["code"] = getattr(detail, "code", None) or exc.default_code
    return response
