"""At the door: a request id for every request, and NUL characters refused.

``RequestIdMiddleware`` comes first, so every response (a redirect to HTTPS
included) names its id and every line logged while serving it carries it.

PostgreSQL cannot store or compare a string holding a NUL character, so one
in a path, a query parameter, a header or a posted form reaching a query is a
server error. Refused here, before any view, as a 400 naming where it was:
JSON on the API, a plain page elsewhere. The API's bodies are checked by its
parsers (``jitportal.parsers``), since reading them here would consume them.
"""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from jitportal.logs import new_request_id, request_id, safe_request_id
from jitportal.parsers import NUL_MESSAGE

REQUEST_ID_HEADER = "X-Request-ID"

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


class RequestIdMiddleware:
    """Takes the caller's ``X-Request-ID`` when it is a safe short token, else makes one.

    A proxy in front usually sets the header, so its logs and ours share the
    id. The id only correlates log lines; nothing decides access by it, so a
    client choosing its own is harmless, and anything not a plain token is
    replaced rather than written into logs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = safe_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        # Not reset on the way out: Django logs a 4xx or 5xx ("Not Found: ...")
        # after the middleware has returned. ``request_finished`` clears it.
        request_id.set(rid)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response


def _forget_request_id(**kwargs) -> None:
    request_id.set(None)


request_finished.connect(_forget_request_id, dispatch_uid="jitportal.forget_request_id")


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
