"""Inventory rules: a resource's kind, name and labels are checked once, the same for every caller."""

from __future__ import annotations

import pytest

from accounts.policy.parse import parse_document
from accounts.services import role_clean_selector
from inventory.services import resource_upsert, validate_labels
from jitportal.errors import DomainError

pytestmark = pytest.mark.django_db


def refusal(call) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("kind", "name", "field"),
    [("server", "web-1", "kind"), ("node", "   ", "name"), ("node", "x" * 254, "name")],
)
def test_the_policy_file_and_the_service_refuse_a_resource_in_the_same_words(kind, name, field):
    by_service = refusal(lambda: resource_upsert(kind=kind, name=name))
    by_policy = refusal(lambda: parse_document({"resources": [{"kind": kind, "name": name}]}))

    assert by_service.field == field
    assert by_policy.message.endswith(f".{field}: {by_service.message}")


def test_resource_labels_and_role_selectors_share_the_label_key_rule():
    resource = refusal(lambda: validate_labels({"-bad": "x"}))
    selector = refusal(lambda: role_clean_selector({"-bad": ["x"]}))

    assert resource.message == selector.message == "label key '-bad' is not valid (letters, digits, '.', '_', '-', '/')"
    assert role_clean_selector({"tier": [1, "2"]}) == {"tier": ["1", "2"]}
    assert validate_labels({"tier": 1}) == {"tier": "1"}
    assert "is not a label value" in refusal(lambda: role_clean_selector({"tier": [True]})).message
