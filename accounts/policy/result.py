"""What an apply did, change by change."""

from __future__ import annotations

from dataclasses import dataclass, field

# --- result -------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One object the apply created, updated or deleted."""

    action: str  # "created" | "updated" | "deleted"
    kind: str  # "group" | "user" | "role" | "resource"
    name: str
    detail: str = ""

    @property
    def subject(self) -> str:
        text = f"{self.kind} {self.name}"
        return f"{text} ({self.detail})" if self.detail else text

    def __str__(self) -> str:
        return f"{self.action} {self.subject}"


@dataclass
class PolicyResult:
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def _subjects(self, action: str) -> list[str]:
        return [c.subject for c in self.changes if c.action == action]

    @property
    def created(self) -> list[str]:
        return self._subjects("created")

    @property
    def updated(self) -> list[str]:
        return self._subjects("updated")

    @property
    def deleted(self) -> list[str]:
        return self._subjects("deleted")

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes]

    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.deleted)} deleted"
