"""gunicorn's configuration module: ``gunicorn -c python:jitportal.gunicorn_config``.

Only the log format is set here, from ``JITPORTAL_LOG_FORMAT`` like Django's
and Celery's, so that gunicorn's own lines (start, worker exits, the access
log) are JSON too when asked. Bind address, workers and the rest stay on the
command line (README.md, *Production*).
"""

from __future__ import annotations

import os

from jitportal.logs import gunicorn_logconfig, log_format

logconfig_dict = gunicorn_logconfig(log_format=log_format(os.environ.get("JITPORTAL_LOG_FORMAT")))
