"""Refuse NUL characters at the door.

PostgreSQL cannot store or compare a string holding a NUL character, so one
in a path, a query parameter, a header or a posted form reaching a query is a
server error. Refused here, before any view, as a 400 naming where it was:
JSON on the API, a plain page elsewhere. The API's bodies are checked by its
parsers (``jitportal.parsers``), since reading them here would consume them.
"""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from jitportal.parsers import NUL_MESSAGE

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _field_with_nul(request: HttpRequest, *, api: bool) -> str | None:
    if "\x00" in request.path_info:
        return "path"
    # Headers too: a token or a session cookie is looked up in the database.
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
            return key.removeprefix("HTTP_").replace("_", "-").title()
    params = [request.GET]
    if not api and request.method == "POST" and request.content_type in _FORM_TYPES:
        params.append(request.POST)
    for query in params:
        for key, values in query.lists():
            if "\x00" in key:
                return key.replace("\x00", "\\x00")
            if any("\x00" in value for value in values):
                return key
    return None


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = request.path_info.startswith("/api/")
        try:
            field = _field_with_nul(request, api=api)
        except SuspiciousOperation as exc:
            if not api:
                raise  # Django's own 400 page
            # Too many query parameters: the API answers in JSON, as for a body that is too large.
            return JsonResponse({"detail": str(exc)}, status=400)
        if field is None:
            return self.get_response(request)
        if api:
            return JsonResponse({field: [NUL_MESSAGE]}, status=400)
        body = f"Bad request: {field}: {NUL_MESSAGE}\n"
        return HttpResponseBadRequest(body, content_type="text/plain; charset=utf-8")
