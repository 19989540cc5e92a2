"""Supervision's plain code: the policies (circuit breaker, backoff, retry, restart intensity,
alert rules), the metrics every process records, and the cluster model (what a host runs and
advertises, its heartbeats, placement, the actor transport's bind and allow-list).

It imports nothing of Clarion but `config`, so the actors and the HTTP layer can use it; the
Supervisor actor and the launcher that apply it sit above the actors, in `clarion.node`
(tests/test_layering.py checks the direction of every import).
"""
