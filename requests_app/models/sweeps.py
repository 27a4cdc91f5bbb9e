"""What each background sweep last did, so its lag can be read and alerted on."""

from __future__ import annotations

from django.db import models


class SweepRun(models.Model):
    """The latest run of one sweep (one row per sweep, updated in place).

    ``lag_seconds`` is how late the oldest due row was when the run handled it
    (zero when nothing was due); ``max_lag_seconds`` is the worst seen since
    the row was created, for benchmarks and dashboards.
    """

    name = models.CharField(max_length=64, primary_key=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    rows = models.PositiveIntegerField(default=0)
    lag_seconds = models.FloatField(default=0)
    max_lag_seconds = models.FloatField(default=0)
    runs = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (lag {self.lag_seconds:.1f}s)"
