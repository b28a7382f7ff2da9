"""Request and response bodies, laid out like the routes: one module per route module
(webhooks, test_send, deliveries, events, platform, tenants_admin, portal_sessions) and
`common` for what they share (the RFC 3339 type, ids, the JSON object bound, strict requests).

The same models validate input and feed the OpenAPI document, so the two cannot drift.
"""
