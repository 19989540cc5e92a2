"""Supervision: the root Supervisor actor, restart policy, and (later) breakers and backoff.

The policies are plain code that imports nothing of Clarion; the Supervisor imports the actors
it creates.
"""
