"""Talking to mail servers: connections, logged in, with TLS per account."""
