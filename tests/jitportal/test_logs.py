"""JSON log lines and the request id: in Django, through a real gunicorn, and into a real Celery worker."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery import Celery
from django.core.exceptions import ImproperlyConfigured

from jitportal.logs import JsonFormatter, RequestIdFilter, log_format, logging_config, request_id

REPO = Path(__file__).resolve().parents[2]
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def record(message: str, *args, name: str = "jitportal.test", level: int = logging.WARNING, exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, message, args, exc_info)


def test_a_json_line_names_time_level_logger_message_and_request_id():
    token = request_id.set("req-42")
    try:
        entry = record("granted %s\nto %s", "web-1", "alice")
        RequestIdFilter().filter(entry)
    finally:
        request_id.reset(token)
    line = JsonFormatter().format(entry)
    assert "\n" not in line
    parsed = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", parsed.pop("time"))
    assert parsed == {
        "level": "WARNING",
        "logger": "jitportal.test",
        "message": "granted web-1\nto alice",
        "request_id": "req-42",
    }


def test_a_json_line_outside_a_request_has_no_request_id_and_carries_the_exception():
    try:
        raise ValueError("the broker said no")
    except ValueError:
        entry = record("sweep failed", level=logging.ERROR, exc_info=sys.exc_info())
    RequestIdFilter().filter(entry)
    parsed = json.loads(JsonFormatter().format(entry))
    assert "request_id" not in parsed
    assert parsed["level"] == "ERROR"
    assert parsed["exception"].startswith("Traceback (most recent call last):")
    assert parsed["exception"].endswith("ValueError: the broker said no")


def test_the_log_format_is_text_or_json_and_anything_else_names_the_variable():
    assert log_format(None) == "text"
    assert log_format(" JSON ") == "json"
    with pytest.raises(ImproperlyConfigured, match="JITPORTAL_LOG_FORMAT='xml'"):
        log_format("xml")
    json_config = logging_config(log_format="json", level="INFO")
    assert json_config["handlers"]["console"]["formatter"] == "json"
    assert "formatter" not in logging_config(log_format="text", level="INFO")["handlers"]["console"]


@pytest.fixture
def json_lines_of():
    """Collects what a logger writes, through the same filter and formatter as production."""
    attached: list[tuple[logging.Logger, logging.Handler]] = []

    def attach(name: str) -> io.StringIO:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        attached.append((logger, handler))
        return stream

    yield attach
    for logger, handler in attached:
        logger.removeHandler(handler)


@pytest.mark.django_db
def test_a_safe_request_id_is_kept_answered_and_on_the_lines_logged_for_the_request(client, json_lines_of):
    stream = json_lines_of("django.request")
    response = client.get("/no-such-page/", headers={"X-Request-ID": "lb-7f3a.2:x"})
    assert response.status_code == 404
    assert response["X-Request-ID"] == "lb-7f3a.2:x"
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["logger"] == "django.request"
    assert line["message"] == "Not Found: /no-such-page/"
    assert line["request_id"] == "lb-7f3a.2:x"
    # Cleared once the response is done: a later line is not blamed on this request.
    assert request_id.get() is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "offered",
    ["x" * 65, "two words", "id\nforged-line", "-starts-with-a-dash", "", "ümlaut"],
)
def test_an_unsafe_or_missing_request_id_is_replaced_by_a_generated_one(client, offered):
    first = client.get("/api/v1/", headers={"X-Request-ID": offered})
    second = client.get("/api/v1/", headers={"X-Request-ID": offered})
    assert GENERATED_ID.fullmatch(first["X-Request-ID"])
    assert GENERATED_ID.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "JITPORTAL_", "CACHE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="jitportal.settings",
        DJANGO_SECRET_KEY="log-test-secret-key-0123456789-not-for-production",
        JITPORTAL_ENCRYPTION_KEYS="dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OWE=",
        JITPORTAL_AUDIT_KEY="log-test-audit-key-not-for-production",
        JITPORTAL_AUDIT_SIGNING_KEY="dGVzdC1vbmx5LWF1ZGl0LXNpZ25pbmcta2V5LTMyYgo=",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        JITPORTAL_DATA_DIR=str(tmp_path),  # the filesystem broker's folders too
        JITPORTAL_LOG_FORMAT="json",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    return env


def json_lines(path: Path, *, not_logged: tuple[str, ...] = ()) -> list[dict]:
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(not_logged)]
    for line in lines:
        assert line.startswith("{"), f"not a JSON line: {line!r}"
    return [json.loads(line) for line in lines]


def get_until_served(url: str, server: subprocess.Popen, headers: dict[str, str]) -> urllib.error.HTTPError:
    """The error answer to a GET, once the server listens (it is started just before)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        except urllib.error.HTTPError as answer:
            return answer
        except OSError:
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not answer in 30s"
            time.sleep(0.2)
        else:
            raise AssertionError(f"{url} answered with a success")


def test_gunicorn_and_django_write_only_json_lines_and_the_access_line_names_the_request(tmp_path):
    port = free_port()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:jitportal.gunicorn_config",
        "jitportal.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--access-logfile",
        "-",
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        server = subprocess.Popen(command, cwd=REPO, env=production_env(tmp_path), stdout=stdout, stderr=stderr)
        try:
            answer = get_until_served(f"http://127.0.0.1:{port}/no-such-page/", server, {"X-Request-ID": "edge-1234"})
            assert answer.code == 404
            assert answer.headers["X-Request-ID"] == "edge-1234"
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)

    lines = json_lines(out) + json_lines(err)
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers
    [access] = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert access["request_id"] == "edge-1234"
    assert '"GET /no-such-page/ HTTP/1.1" 404' in access["message"]
    [not_found] = [line for line in lines if line["logger"] == "django.request"]
    assert not_found["request_id"] == "edge-1234"
    assert all("request_id" not in line for line in lines if line["logger"] == "gunicorn.error")


# Loaded by the worker below with --include: a task that logs one line while it runs.
TASK_MODULE = """
import logging
from celery import shared_task

@shared_task(name="logtest.say")
def say(text):
    logging.getLogger("logtest").warning("said %s", text)
"""


def test_a_task_enqueued_during_a_request_logs_that_request_id_in_the_worker(tmp_path, monkeypatch):
    # Celery prefers this variable over the broker given below (the PostgreSQL run sets it).
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    (tmp_path / "logtest_tasks.py").write_text(TASK_MODULE)
    env = production_env(tmp_path)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{tmp_path}"
    env["JITPORTAL_CELERY_QUEUE"] = "logtest"
    # Celery warns before any logging is set up when it runs as root (CI does;
    # production runs workers under their own user, README.md).
    env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
    log = tmp_path / "worker.log"
    worker_command = [
        # --quiet: no banner, which is printed, not logged.
        *(sys.executable, "-m", "celery", "--quiet", "-A", "jitportal", "worker", "--include", "logtest_tasks"),
        *("--pool", "solo", "--loglevel", "INFO", "--without-mingle", "--without-gossip", "-Q", "logtest"),
    ]
    broker_dir = tmp_path / "broker"
    for folder in ("queue", "processed", "control"):
        (broker_dir / folder).mkdir(parents=True, exist_ok=True)
    # The same filesystem broker folders the worker's settings derive from JITPORTAL_DATA_DIR.
    # No Django fixup: it would run Django's system checks against this process's database.
    producer = Celery("producer", broker="filesystem://localhost//", fixups=[])
    producer.conf.broker_transport_options = {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
    }
    with log.open("wb") as output:
        worker = subprocess.Popen(worker_command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            token = request_id.set("web-req-99")
            try:
                producer.send_task("logtest.say", args=["inside"], queue="logtest")
            finally:
                request_id.reset(token)
            producer.send_task("logtest.say", args=["outside"], queue="logtest")
            deadline = time.monotonic() + 60
            while log.read_text().count("said ") < 2:
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)

    # Celery's signal handler prints its shutdown notice straight to stdout.
    lines = json_lines(log, not_logged=("worker: Warm shutdown",))
    said = {line["message"]: line for line in lines if line["logger"] == "logtest"}
    assert said["said inside"]["request_id"] == "web-req-99"
    assert "request_id" not in said["said outside"]
    # Celery's own line about the task, written while it ran, carries the id too.
    succeeded = [line for line in lines if "succeeded" in line["message"] and "request_id" in line]
    assert [line["request_id"] for line in succeeded] == ["web-req-99"]
