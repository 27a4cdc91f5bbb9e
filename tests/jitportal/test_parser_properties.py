"""Every parser of input either returns a value or raises the project's own error.

Durations, label selectors, resource references, date-times and request
bodies are parsed from whatever a client sends; anything else they raise
(ValueError from int(), RecursionError, a database error) would be a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timedelta

import pytest
from django import forms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.exceptions import ParseError, ValidationError

from inventory.filters import LabelSelectorField
from inventory.selectors import resource_get, resources_resolve
from jitportal.durations import parse_duration
from jitportal.errors import DomainError
from jitportal.fields import DateTimeField, DateTimeFormField, IsoDateTimeFormField
from jitportal.parsers import JSONParser
from tests.conftest import make_resource

# Derandomized and without an example database: the same cases on every run, nothing written to disk.
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Text a client may send, weighted towards what the parsers look for.
# Non-ASCII digits on purpose: the parsers must refuse what str.isdigit() accepts.
digits = st.sampled_from("0123456789²¹³٣۵߀०")  # noqa: RUF001
pieces = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    digits,
    st.sampled_from(["h", "m", "s", "ms", "d", ".", "-", "+", "=", ",", "/", ":", "T", "Z", " ", "\x00", "e", "node"]),
)
texts = st.lists(pieces, max_size=8).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


@SETTINGS
@given(value=st.one_of(texts, st.integers(), st.floats(), st.booleans(), st.none(), st.timedeltas()))
def test_durations_parse_or_raise_value_error(value):
    try:
        result = parse_duration(value)
    except ValueError:
        return
    assert isinstance(result, timedelta) and result.total_seconds() >= 1


@SETTINGS
@given(value=st.one_of(texts, st.lists(texts, max_size=4)))
def test_label_selectors_parse_or_raise_validation_error(value):
    try:
        pairs = LabelSelectorField().clean(value)
    except forms.ValidationError:
        return
    assert all(isinstance(key, str) and key for key, _ in pairs)


@pytest.mark.django_db
@SETTINGS
@given(refs=st.lists(st.one_of(texts, st.integers(), json_values), max_size=4))
def test_resource_refs_resolve_or_raise_domain_error(refs):
    make_resource("web-1", labels={"env": "prod"})
    try:
        resolved = resources_resolve(refs)
    except DomainError as exc:
        # A property over arbitrary input: either outcome is allowed, but a refusal names its field.
        assert exc.field == "resources"  # noqa: PT017
    else:
        assert len(resolved) == len(refs)
    for ref in refs:
        with contextlib.suppress(DomainError):
            resource_get(ref)


@SETTINGS
@given(value=st.one_of(texts, st.datetimes(timezones=st.timezones() | st.none()).map(datetime.isoformat)))
def test_date_times_parse_or_raise_validation_error(value):
    for field in (IsoDateTimeFormField(required=False), DateTimeFormField(required=False)):
        with contextlib.suppress(forms.ValidationError):
            field.clean(value)
    with contextlib.suppress(serializers.ValidationError):
        DateTimeField().run_validation(value)


@SETTINGS
@given(body=st.one_of(json_values.map(json.dumps), texts, st.integers(1, 5000).map(lambda n: "[" * n + "]" * n)))
def test_json_bodies_parse_or_raise_parse_or_validation_error(body):
    with contextlib.suppress(ParseError, ValidationError):
        JSONParser().parse(io.BytesIO(body.encode()), parser_context={})
