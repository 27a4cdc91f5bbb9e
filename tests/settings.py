"""Settings for the test suite: production settings with a test key and fast hashing."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
# A fixed Fernet key for tests only.
os.environ.setdefault("JITPORTAL_ENCRYPTION_KEYS", "dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OWE=")
# Audit MAC and checkpoint signing keys for tests only (the signing key is 32 bytes of base64).
os.environ.setdefault("JITPORTAL_AUDIT_KEY", "test-only-audit-mac-key")
os.environ.setdefault("JITPORTAL_AUDIT_SIGNING_KEY", "dGVzdC1vbmx5LWF1ZGl0LXNpZ25pbmcta2V5LTMyYgo=")

from jitportal.settings import *  # noqa: F403

SECURE_SSL_REDIRECT = False
SECURE_HSTS_SECONDS = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
