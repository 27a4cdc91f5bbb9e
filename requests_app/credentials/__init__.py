"""SSH credentials: the certificate authority, user certificates and the endpoints hosts ask."""
