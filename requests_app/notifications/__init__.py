"""Notifications of request and grant events: messages, formats per platform, the outbox and delivery."""
