"""The client's network address, as every per-client defence sees it."""

from __future__ import annotations

import ipaddress

from django.conf import settings


def client_address(request) -> str | None:
    """The address of whoever sent ``request``: one rule for the throttle and the lockout.

    ``X-Forwarded-For`` is anyone's to write, so it counts only when
    ``JITPORTAL_TRUSTED_PROXIES`` says how many proxies of ours append to it:
    the entry that many places from the right is the one the outermost of them
    saw (the same rule as DRF's ``NUM_PROXIES``). Otherwise, or when that entry
    is not an address, it is the peer of the connection.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.JITPORTAL_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies <= 0 or not forwarded.strip():
        return remote
    hops = [hop.strip() for hop in forwarded.split(",")]
    candidate = hops[-min(proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        # Our proxies write addresses; anything else came from the client.
        return remote
