"""The server the HTTP benchmarks start: production settings, plus a trivial authenticated view as the floor."""

from jitportal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
