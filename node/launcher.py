"""Starting and stopping Clarion's actor system (never from a uvicorn worker).

`start_actor_system` runs `python -m clarion.node.launcher` in a new session with its output
in files: that process starts Thespian's admin (a fork, so it must have no threads yet), creates
the Supervisor, configures it, waits for `SystemReady` and exits; the admin and the actors keep
running. The admin starts a session of its own, and every actor process stays in its process
group, which the Supervisor reports: `stop_actor_system` reaps that group, so no actor survives,
even after a `kill -9` of the admin.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clarion.config.logging import thespian_log_defs
from clarion.config.settings import Settings, load_settings, settings_to_env
from clarion.supervision import cluster
from clarion.supervision.cluster import convention_env
from clarion.supervision.actor_system import BASE, SUPERVISOR_CLASS, SUPERVISOR_NAME, admin_running
from clarion.supervision.transport_security import secure_transport

log = logging.getLogger(__name__)



class LauncherError(Exception):
    """The actor system did not start (the message says why and where the log is)."""


def capabilities(settings: Settings) -> dict[str, object]:
    """The admin port, and in a cluster the convention to join and what this host offers."""
    return cluster.node_capabilities(settings)


def secure(settings: Settings) -> None:
    """Before this process first touches Thespian: its actor sockets (and those of every process
    it forks: the admin and all actors) listen on the node's address only and admit only the
    cluster's peers (supervision/transport_security.py)."""
    secure_transport(settings.node_address, settings.cluster_peer_networks)


def _launch(settings: Settings, timeout: float) -> None:
    """Body of the launcher process."""
    from thespian.actors import ActorSystem

    from clarion.actors.messages import Configure, SystemReady

    secure(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_defs = thespian_log_defs(settings.log_level, str(settings.state_dir / "actors.log"))
    system = ActorSystem(BASE, capabilities(settings), logDefs=log_defs)
    supervisor = system.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_NAME)
    system.tell(supervisor, Configure("supervisor"))  # it reads its settings as we did
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = system.listen(max(0.1, deadline - time.monotonic()))
        if isinstance(answer, SystemReady):
            _pgid_file(settings).write_text(str(answer.process_group))
            print(f"actor system ready: {', '.join(answer.children)};"
                  f" process group {answer.process_group}", flush=True)
            return
    raise LauncherError(f"the actors did not report ready within {timeout:.0f} s")


def _pgid_file(settings: Settings) -> Path:
    """Where the launcher notes the actor system's process group (for `actors stop`)."""
    return settings.state_dir / f"actors-{settings.actor_port}.pgid"


def metrics_dir(settings: Settings) -> Path:
    """Where every Clarion process of this installation writes its metric samples."""
    return (settings.state_dir / "metrics").resolve()


def reset_metrics_dir(settings: Settings) -> Path:
    """A fresh metrics folder for a new run (samples of old processes would count again)."""
    import shutil

    folder = metrics_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_actor_system(settings: Settings, timeout: float = 60.0) -> int:
    """Start the actor system; return the process group id of all its processes."""
    if admin_running(settings.actor_port, settings.node_address):
        raise LauncherError(
            f"something already listens on the actor port {settings.actor_port}: another"
            " Clarion (stop it with `clarion actors stop`) or another program;"
            " set CLARION_ACTOR_PORT to use another port"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    output = settings.state_dir / "actor-system.out"
    # The launcher reads its settings from the environment: hand it exactly ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(settings_to_env(settings))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(reset_metrics_dir(settings))
    if settings.convention is not None:
        env.update(convention_env(settings))
    # Thespian's own diagnostics go to a file of ours instead of /tmp.
    env.setdefault("THESPLOG_FILE", str((settings.state_dir / "thespian.log").resolve()))
    env.setdefault("THESPLOG_THRESHOLD", "WARNING")
    with open(output, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clarion.node.launcher", str(timeout)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        try:
            code = proc.wait(timeout + 15)
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        stop_actor_system(settings)  # the group the Supervisor reported, if it got that far
        _reap_group(proc.pid, 5.0)
        tail = Path(output).read_text(errors="replace").splitlines()[-15:]
        raise LauncherError("the actor system did not start; end of " + str(output) + ":\n"
                            + "\n".join(tail))
    return int(_pgid_file(settings).read_text())


def stop_actor_system(settings: Settings, pgid: int | None = None, grace: float = 10.0) -> None:
    """Shut the actor system down in order, then make sure no process of it is left."""
    pgid_file = _pgid_file(settings)
    if pgid is None and pgid_file.exists():
        pgid = int(pgid_file.read_text() or 0) or None
    if admin_running(settings.actor_port, settings.node_address):
        from thespian.actors import ActorSystem

        secure(settings)
        try:
            ActorSystem(BASE, {"Admin Port": settings.actor_port}).shutdown()
        except Exception as exc:  # noqa: BLE001 - the process group clean-up below still runs
            log.warning("orderly actor shutdown failed", extra={"error": repr(exc)})
    if pgid:
        _reap_group(pgid, grace)
    pgid_file.unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap_group(pgid: int, grace: float) -> None:
    """Wait for the group to exit; SIGTERM it halfway through `grace`, SIGKILL at the end."""
    start = time.monotonic()
    termed = False
    while _group_alive(pgid):
        waited = time.monotonic() - start
        try:
            if waited > grace:
                os.killpg(pgid, signal.SIGKILL)
            elif waited > grace / 2 and not termed:
                os.killpg(pgid, signal.SIGTERM)
                termed = True
        except ProcessLookupError:
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    timeout = float(args[0]) if args else 60.0
    try:
        _launch(load_settings(), timeout)
    except Exception as exc:  # noqa: BLE001 - report and fail; stop_actor_system cleans up
        print(f"launcher failed: {exc!r}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
