"""The resource search's pages in the API: ``{"count", "count_exact", "next", "previous", "results"}``.

``next`` and ``previous`` carry a cursor (a position in (kind, name) order),
so following them costs the same on page 2000 as on page 1. ``page=N`` still
works for clients that number pages (an offset: deeper pages cost more).
``count`` stops at ``COUNT_CAP`` with ``count_exact: false`` unless the
caller asks ``count=exact``. A view with ``row_fields`` is given its page as
dicts of those fields (``QuerySet.values``) rather than model instances.
"""

from __future__ import annotations

from collections import OrderedDict

from rest_framework.exceptions import NotFound
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from inventory.pagination import COUNT_CAP, cursor_for, cursor_parse, few_first, keyset_page, matches_capped
from jitportal.errors import DomainError


class ResourcePagination(BasePagination):
    page_size = 50
    max_page_size = 500

    def page_size_of(self, request) -> int:
        # As DRF's page-number pagination: a size that is not a positive number is the default.
        text = request.query_params.get("page_size", "")
        if text.isascii() and text.isdigit() and int(text) > 0:
            return min(int(text), self.max_page_size)
        return self.page_size

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        size = self.page_size_of(request)
        counting = request.query_params.get("count", "")
        if counting not in ("", "exact"):
            raise DomainError("must be 'exact' (or left out for a count that stops early)", field="count")
        cursor = request.query_params.get("cursor")
        position = cursor_parse(cursor) if cursor else None
        if counting == "exact":
            self.count, self.count_exact = queryset.count(), True
        else:
            self.count, self.count_exact, ids = matches_capped(queryset)
            if self.count_exact:
                queryset = few_first(queryset, ids)
        fields = getattr(view, "row_fields", None)
        if fields:
            # Plain rows for a view that builds its own (no model instances, no serializer per row).
            queryset = queryset.values(*fields)
        page = request.query_params.get("page")
        if page is not None and "cursor" not in request.query_params:
            return self.paginate_by_number(queryset, page, size)
        found = keyset_page(queryset, position=position, size=size)
        url = remove_query_param(request.build_absolute_uri(), "page")
        self.next = replace_query_param(url, "cursor", cursor_for(found.next)) if found.next else None
        self.previous = (
            replace_query_param(url, "cursor", cursor_for(found.previous, backward=True)) if found.previous else None
        )
        return found.items

    def paginate_by_number(self, queryset, page: str, size: int) -> list:
        if not (page.isascii() and page.isdigit() and int(page) > 0):
            raise NotFound("Invalid page.")
        number = int(page)
        start = (number - 1) * size
        rows = list(queryset.order_by("kind", "name")[start : start + size + 1])
        if not rows and number > 1:
            raise NotFound("Invalid page.")
        url = self.request.build_absolute_uri()
        self.next = replace_query_param(url, "page", number + 1) if len(rows) > size else None
        self.previous = None
        if number > 1:
            self.previous = (
                remove_query_param(url, "page") if number == 2 else replace_query_param(url, "page", number - 1)
            )
        return rows[:size]

    def get_paginated_response(self, data):
        return Response(
            OrderedDict(
                [
                    ("count", self.count),
                    ("count_exact", self.count_exact),
                    ("next", self.next),
                    ("previous", self.previous),
                    ("results", data),
                ]
            )
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["count", "count_exact", "results"],
            "properties": {
                "count": {
                    "type": "integer",
                    "description": f"matches, counted up to {COUNT_CAP} unless count=exact",
                },
                "count_exact": {"type": "boolean", "description": f"false when there are more than {COUNT_CAP}"},
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        def param(name: str, kind: str, description: str) -> dict:
            return {
                "name": name,
                "required": False,
                "in": "query",
                "description": description,
                "schema": {"type": kind},
            }

        return [
            param("cursor", "string", "a position from a previous page's next or previous link"),
            param("page", "integer", "a page number (an offset: following next is cheaper)"),
            param("page_size", "integer", f"results per page, at most {self.max_page_size}"),
            param("count", "string", f"'exact' for the exact count instead of one that stops at {COUNT_CAP}"),
        ]
