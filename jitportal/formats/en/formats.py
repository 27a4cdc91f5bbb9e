"""Dates and times as the admin shows them: always with their zone, like the portal pages."""

DATETIME_FORMAT = "M j, Y, H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
TIME_FORMAT = "H:i T"
