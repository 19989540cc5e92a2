"""Clarion's actors (Thespian, multiprocTCPBase) and every message they exchange (`messages`).

One actor per module: gateway, users, templates, publisher, email_delivery, push_delivery. The
Supervisor that creates them lives in `clarion.node.supervisor`.
"""
