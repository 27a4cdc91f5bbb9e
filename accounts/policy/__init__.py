"""Policy as code: make groups, users, roles and resources match a YAML document.

The document names objects; each object it names is made to match it exactly
(a field it leaves out takes the model default, a user's groups and a role's
groups become exactly the listed ones), so the file is the source of truth for
what it names. Objects it does not name are left alone unless ``prune`` is
asked for, and then only in the sections the document lists (a document
without ``resources:`` never prunes resources; ``resources: []`` means "none").

Everything is checked before anything is written, and the whole apply is one
transaction: a bad entry changes nothing. A second apply of the same document
writes nothing.

This module does not audit; its entry point (the ``apply`` command) records
the ``PolicyResult`` in the audit log.
"""

from accounts.policy.parse import policy_load
from accounts.policy.result import Change, PolicyResult
from accounts.policy.writer import policy_apply

__all__ = ["Change", "PolicyResult", "policy_apply", "policy_load"]
