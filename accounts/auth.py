"""API token authentication: knox's, without a write on the request path.

knox's ``TokenAuthentication`` reads every token of the caller and deletes the
expired ones on each request, one more query per call on the hottest paths
(the access check, certificates). Here an expired token is refused as it is
read, and ``tokens_delete_expired`` (a beat sweep) removes the rows.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication


class TokenAuthentication(KnoxTokenAuthentication):
    def _cleanup_token(self, auth_token) -> bool:
        # True skips the token: expired is refused at once whether or not the sweep has run.
        return auth_token.expiry is not None and auth_token.expiry <= timezone.now()


class TokenScheme(KnoxTokenScheme):
    """The API schema documents this class as the knox token scheme it is."""

    target_class = "accounts.auth.TokenAuthentication"
