"""How to reach a host's actor system: its Thespian base, its root actor's names, its admin.

Shared by the launcher (which starts the system) and the HTTP bridge (which talks to it), so
neither imports the other, and the bridge imports no actor class.
"""

from __future__ import annotations

import socket

BASE = "multiprocTCPBase"
SUPERVISOR_CLASS = "clarion.node.supervisor.Supervisor"  # created by name in a new process
SUPERVISOR_NAME = "clarion-supervisor"  # its globalName: how a bridge finds it


def admin_running(port: int, host: str = "127.0.0.1") -> bool:
    """Is something listening on the admin port? (Asking Thespian would start an admin.)"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
