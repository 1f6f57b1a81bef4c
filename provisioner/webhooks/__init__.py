"""Webhooks (issue 23, docs/audit.md "Webhooks"): signed JSON notifications of run events, with an outbox.

signing: the signature header format (HMAC-SHA256 over timestamp + body) and its check (receivers, tests);
events: which event rows become which notification, for which webhook (global or one pool);
delivery: the outbox pump (events table -> outbox -> HTTP POST, retried with backoff, given up after N);
service: add / list / remove webhooks (the CLI's and the API's one entry).
"""
