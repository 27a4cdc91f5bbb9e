"""SSH credentials: the certificate authority, user certificates and the endpoints hosts ask.

How a certificate is scoped (DESIGN.md, "Credentials"):

- principals are ``login@resource-name`` for each login of the grant's role and
  each SSH server the grant covers, so a host whose ``AuthorizedPrincipalsFile``
  lists only the principals naming itself refuses certificates for other hosts
  (``hosts``);
- ``valid_before`` is never later than the grant's ``expires_at`` (``certificates``);
- hosts refuse the subject keys of certificates whose access ended early
  (``hosts.ssh_revoked_public_keys``, for sshd's ``RevokedKeys``).

Imports point keys <- ca, hosts <- certificates <- api.
"""
