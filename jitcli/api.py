"""A small client for the jitportal API v1 on the standard library's urllib.

Every failure becomes a ``CliError`` with one readable line: the portal's own
``detail`` or field errors when it sent them, otherwise what went wrong with
the connection.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from jitcli import __version__
from jitcli.errors import NOT_LOGGED_IN, CliError

TIMEOUT_SECONDS = 30
# Enough for any search a person reads in a terminal; the rest is counted, not fetched.
MAX_LIST_ITEMS = 1000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would turn a POST into a GET and could send the token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise CliError("the server URL is empty")
    if "://" not in url:
        url = "https://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"{url!r} is not an http(s) URL of a jitportal server")
    # The API lives under /api/v1/ of the portal: keep only scheme, host and any path prefix.
    return url.removesuffix("/api/v1")


def describe_error(status: int, body: Any, reason: str = "") -> str:
    """The portal's error body as one line: ``detail``, or ``field: message; …``."""
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return body["detail"]
        parts = []
        for field, messages in body.items():
            if isinstance(messages, list):
                messages = " ".join(str(m) for m in messages)
            parts.append(f"{field}: {messages}")
        if parts:
            return "; ".join(parts)
    if isinstance(body, list) and body:
        return " ".join(str(m) for m in body)
    if isinstance(body, str) and body.strip() and len(body) < 300 and "<" not in body:
        return body.strip().splitlines()[0]
    return f"the server answered HTTP {status} {reason}".strip()


class ApiError(CliError):
    def __init__(self, message: str, *, status: int, body: Any = None, exit_code: int = 1):
        super().__init__(message, exit_code=exit_code)
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        """The portal's machine-readable ``code`` for the refusal (``not_found``, …), or "" when it sent none."""
        if isinstance(self.body, dict) and isinstance(self.body.get("code"), str):
            return self.body["code"]
        return ""

    def field_errors(self, field: str) -> list[str]:
        if isinstance(self.body, dict) and isinstance(self.body.get(field), list):
            return [str(m) for m in self.body[field]]
        return []


class Api:
    def __init__(self, server: str, token: str | None = None, *, timeout: float = TIMEOUT_SECONDS):
        self.server = normalize_server(server)
        self.token = token
        self.timeout = timeout

    def url(self, path: str, params: dict | list | None = None) -> str:
        url = f"{self.server}/api/v1/{path.lstrip('/')}"
        if params:
            items = params.items() if isinstance(params, dict) else params
            query = [(k, v) for k, v in items if v not in (None, "")]
            if query:
                url += "?" + urllib.parse.urlencode(query)
        return url

    def request(self, method: str, path: str, *, params=None, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        # normalize_server admits only http(s) URLs, so no file: or custom scheme reaches urlopen.
        request = urllib.request.Request(self.url(path, params), data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", f"jit/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth and self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, auth=auth) from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise CliError(f"cannot reach {self.server}: {reason}") from None
        except TimeoutError:
            raise CliError(f"{self.server} did not answer within {self.timeout:g} seconds") from None
        except OSError as exc:
            raise CliError(f"cannot reach {self.server}: {exc.strerror or exc}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"{self.server} did not answer with JSON; is it a jitportal server?") from None

    def _http_error(self, exc: urllib.error.HTTPError, *, auth: bool) -> ApiError:
        if exc.code in (301, 302, 303, 307, 308):
            target = exc.headers.get("Location", "")
            return ApiError(
                f"the server redirects to {target}; log in with that address (jit login --server …)",
                status=exc.code,
            )
        try:
            raw = exc.read()
        except OSError:
            raw = b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        message = describe_error(exc.code, body, exc.reason or "")
        if exc.code == 401 and auth:
            return ApiError(
                f"the portal refused your token ({message}); run 'jit login' again",
                status=401,
                body=body,
                exit_code=NOT_LOGGED_IN,
            )
        if exc.code == 404 and body is None:
            message = f"{self.server} has no such API endpoint; is it a jitportal server?"
        return ApiError(message, status=exc.code, body=body)

    def get(self, path: str, params=None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, *, auth: bool = True) -> Any:
        return self.request("POST", path, body=body if body is not None else {}, auth=auth)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def get_all(self, path: str, params=None, *, limit: int = MAX_LIST_ITEMS) -> tuple[list, int | None]:
        """Every item of a paginated list, up to ``limit``; returns (items, total count).

        The total is None when the server stopped counting (``count_exact: false``): more than it says.
        """
        params = list(params.items() if isinstance(params, dict) else params or [])
        page, items, total = 1, [], 0
        while True:
            body = self.get(path, [*params, ("page", page), ("page_size", 500)])
            total = body.get("count", 0) if body.get("count_exact", True) else None
            items.extend(body.get("results", []))
            if not body.get("next") or len(items) >= limit:
                if total is None and not body.get("next"):
                    total = len(items)  # every item was listed, so their number is the count
                return items[:limit], total
            page += 1
