"""Throwaway Google service-account files for talking to the simulator.

Owns generating a service-account JSON that google-auth accepts: a fresh RSA
key and a `token_uri` pointing at the simulator's OAuth2 endpoint, so no real
Google credential is ever needed (or leaked) in tests and local runs.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def write_service_account(path: str | Path, token_uri: str, project_id: str = "clarion-sim") -> Path:
    """Writes a service-account JSON with a new RSA-2048 key to `path` (mode 0600) and returns it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_key_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        # google-auth reads PKCS#8 ("BEGIN PRIVATE KEY"), the format Google issues.
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    client_email = f"clarion@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start: a private key must never be world-readable,
    # not even between open() and a later chmod().
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")
    # O_CREAT's mode is ignored when the file already existed.
    os.chmod(target, 0o600)
    return target
