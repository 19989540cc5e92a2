"""Email delivery over SMTP with the standard library's `smtplib`: the failover for SendGrid.

Owns turning a Clarion email message dict into one RFC 5322 message (text, plus an HTML
alternative) and one SMTP transaction (MAIL, RCPT, DATA), and every possible outcome (reply
code, refused connection, timeout, lost connection, bad input) into a `DeliveryResult`.
`send()` never raises. Retry policy belongs to the delivery actor; the one retry made here is
on a pooled connection found dead on reuse (see below), which is not a delivery retry.

Connections are kept open between sends (a handshake, EHLO, STARTTLS and AUTH cost several
round trips; measured 400-750 messages/s over one reused connection against 230-500 with a
connection per message). Idle connections wait in a LIFO queue of at most `pool_size`; each is
used by one thread at a time, so `send()` is thread-safe. A server drops idle sessions after a
while (aiosmtpd and Postfix after 300 s) and a restart drops them all: a pooled connection
that turns out closed (`SMTPServerDisconnected`, or a `421` reply) before the message content
was sent is discarded, together with the idle connections behind it (older still, so most
likely dead too), and the send is made again once on a fresh connection. Once the content has
been sent, a lost connection may hide an accepted message, so it is reported
(`connection_error`) and not resent here.

smtplib turns a socket timeout while it waits for a reply into `SMTPServerDisconnected`
("Connection unexpectedly closed: timed out"); the timeout is found in the exception's
context and reported as `timeout`. `timeout` bounds the connect and each socket operation, not
the whole transaction.
"""

from __future__ import annotations

import base64
import email.policy
import logging
import math
import queue
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid, parseaddr

from .base import DeliveryResult, failure

logger = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")

# Built with 7-bit transfer encodings (quoted-printable/base64 for non-ASCII text) so the
# message never needs the server's 8BITMIME; CRLF line endings, as SMTP wants them.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
# For an address that is not ASCII (RFC 6531): UTF-8 headers, sent with SMTPUTF8.
_POLICY_UTF8 = email.policy.SMTPUTF8

# Headers tying the message (and bounces quoting it) back to Clarion's ids.
ID_HEADERS = (("notification_id", "X-Clarion-Notification-Id"), ("request_id", "X-Clarion-Request-Id"))


class _ConfigError(Exception):
    """A failure no retry can fix without changing the provider's configuration."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Mail:
    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    message_id: str
    data: bytes  # the DATA payload: CRLF lines, dot-stuffed, ending in CRLF.CRLF
    smtputf8: bool  # the envelope or headers need the server's SMTPUTF8


class _Progress:
    """How far a transaction got: once the content is on the wire it may have been accepted."""

    content_sent = False


class SmtpEmailProvider:
    """Sends one email per `send()` call over pooled SMTP connections; thread-safe."""

    channel = "email"
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        from_email: str,
        *,
        username: str | None = None,
        password: str | None = None,
        security: str = "starttls",
        timeout: float = 5.0,
        pool_size: int = 8,
    ) -> None:
        """`security`: "starttls" (plain connect, then STARTTLS, required; port 587), "tls"
        (TLS from the first byte; port 465) or "none" (cleartext: a local relay or tests).
        Certificates are verified against the system's CA store and `host`.
        `username`/`password`: AUTH after the TLS handshake, both or neither.
        `timeout`: seconds for the connect and for each socket operation.
        `pool_size`: idle connections kept open; size it to the worker threads calling `send()`
        at once (beyond it, a connection is closed after its send)."""
        if not isinstance(host, str) or not host.strip():
            raise ValueError("host is required")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
        if not isinstance(from_email, str) or "@" not in parseaddr(from_email)[1] or _has_line_break(from_email):
            raise ValueError(f"from_email is not an email address: {from_email!r}")
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
        if (username is None) != (password is None) or username == "" or password == "":
            raise ValueError("username and password go together: give both (non-empty) or neither")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            # LifoQueue(maxsize=0) would be unbounded.
            raise ValueError(f"pool_size must be an integer >= 1, not {pool_size!r}")
        self._host = host.strip()
        self._port = port
        self._from_email = from_email
        self._sender = parseaddr(from_email)[1]
        # Message-IDs on the sender's domain; make_msgid() alone looks up the local FQDN (DNS).
        self._msgid_domain = self._sender.rpartition("@")[2]
        self._username = username
        self._password = password
        self._security = security
        self._timeout = float(timeout)
        self._pool_size = pool_size
        self._tls = ssl.create_default_context() if security != "none" else None
        # Once: smtplib would otherwise resolve the local FQDN on every new connection.
        self._local_hostname = socket.getfqdn()
        self._secrets = _secret_forms(username, password)
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue(maxsize=pool_size)
        self._lock = threading.Lock()  # orders check-ins against close()
        self._closed = False
        if username is not None and security == "none":
            logger.warning("SMTP credentials for %s:%s will be sent without TLS (security='none')", self._host, port)

    def __repr__(self) -> str:
        # Never the password: reprs end up in logs and tracebacks.
        return (f"SmtpEmailProvider(host={self._host!r}, port={self._port!r}, from_email={self._from_email!r},"
                f" security={self._security!r}, username={self._username!r})")

    def send(self, message: dict) -> DeliveryResult:
        try:
            return self._send(message)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            logger.exception("unexpected error in SMTP provider")
            return self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Quits the idle connections; a connection in use is closed when its send ends, and
        any later send uses a connection of its own."""
        with self._lock:
            self._closed = True
        for conn in self._drain():
            self._quit(conn)

    # -- one send -------------------------------------------------------------------------

    def _send(self, message: dict) -> DeliveryResult:
        try:
            mail = self._build(message)
        except Exception as exc:  # noqa: BLE001 - any error building the message means bad input
            return self._fail("smtp_invalid_message", f"cannot build mail: {type(exc).__name__}: {exc}", permanent=True)
        try:
            self._deliver(mail)
        except _ConfigError as exc:
            return self._fail(exc.code, str(exc), permanent=True)
        except smtplib.SMTPAuthenticationError as exc:
            # A subclass of SMTPResponseException: test it first. Configuration, not the message.
            return self._fail("smtp_auth_failed", f"authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}",
                              permanent=True)
        except smtplib.SMTPRecipientsRefused as exc:
            refusals = list(exc.recipients.values())
            code = refusals[0][0]
            text = "; ".join(f"{addr}: {_reply(c, r)}" for addr, (c, r) in exc.recipients.items())
            return self._fail(f"smtp_{code}", f"recipient refused: {text}",
                              permanent=all(_is_permanent(c) for c, _ in refusals))
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused (MAIL), SMTPDataError (DATA), SMTPConnectError (greeting),
            # SMTPHeloError (EHLO/HELO) and any other reply-code error.
            what = {smtplib.SMTPSenderRefused: "sender refused", smtplib.SMTPDataError: "message refused",
                    smtplib.SMTPConnectError: "connection refused by server",
                    smtplib.SMTPHeloError: "greeting refused"}.get(type(exc), "server error")
            return self._fail(f"smtp_{exc.smtp_code}", f"{what}: {_reply(exc.smtp_code, exc.smtp_error)}",
                              permanent=_is_permanent(exc.smtp_code))
        except smtplib.SMTPNotSupportedError as exc:
            # STARTTLS or SMTPUTF8 not offered: this server cannot take this (kind of) message.
            return self._fail("smtp_unsupported", f"server lacks a needed extension: {exc}", permanent=True)
        except smtplib.SMTPServerDisconnected as exc:
            if _timed_out(exc):
                return self._fail("timeout", f"no reply from {self._where()} within {self._timeout}s")
            return self._fail("connection_error", f"connection to {self._where()} lost: {exc}")
        except TimeoutError:
            # socket.timeout is TimeoutError: the connect (or a write) took longer than timeout.
            return self._fail("timeout", f"no connection to {self._where()} within {self._timeout}s")
        except OSError as exc:
            # Refused, unreachable, reset, DNS, TLS handshake or certificate failure.
            return self._fail("connection_error", f"cannot reach {self._where()}: {type(exc).__name__}: {exc}")
        return DeliveryResult(ok=True, provider_message_id=mail.message_id)

    def _build(self, message: dict) -> _Mail:
        to = message.get("to")
        if not isinstance(to, str) or _has_line_break(to):
            raise ValueError("'to' is not an email address")
        addresses = getaddresses([to])
        if len(addresses) != 1 or "@" not in addresses[0][1]:
            raise ValueError("'to' is not one email address")
        recipient = addresses[0][1]
        subject, body = message["subject"], message["body"]
        if not isinstance(subject, str) or not isinstance(body, str):
            raise ValueError("'subject' and 'body' must be strings")
        smtputf8 = not (recipient.isascii() and self._sender.isascii())
        msg = EmailMessage(policy=_POLICY_UTF8 if smtputf8 else _POLICY)
        # Header values with CR/LF raise ValueError here: no header injection.
        msg["From"] = self._from_email
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        message_id = make_msgid(domain=self._msgid_domain)
        msg["Message-ID"] = message_id
        for key, header in ID_HEADERS:
            if message.get(key) is not None:
                msg[header] = str(message[key])
        msg.set_content(body)
        html_body = message.get("html_body")
        if html_body:
            if not isinstance(html_body, str):
                raise ValueError("'html_body' must be a string")
            msg.add_alternative(html_body, subtype="html")
        return _Mail(self._sender, recipient, message_id, _data_payload(msg.as_bytes()), smtputf8)

    def _deliver(self, mail: _Mail) -> None:
        """One transaction; raises smtplib's exceptions (and OSError) as they come."""
        conn, reused = self._checkout()
        progress = _Progress()
        try:
            _transaction(conn, mail, progress)
        except Exception as exc:
            self._settle(conn, exc)
            if not (reused and not progress.content_sent and _is_stale(exc)):
                raise
            # The freshest idle connection was dead, so the older ones are too (a restart, an
            # idle timeout): drop them all, and make the send again, once, on a new connection.
            logger.info("pooled SMTP connection to %s was closed (%s); reconnecting", self._where(), exc)
            for old in self._drain():
                old.close()
            conn = self._open()
            progress = _Progress()
            try:
                _transaction(conn, mail, progress)
            except Exception as exc2:
                self._settle(conn, exc2)
                raise
        self._checkin(conn)

    # -- the pool -------------------------------------------------------------------------

    def _checkout(self) -> tuple[smtplib.SMTP, bool]:
        """An idle connection (reused=True) or a newly opened one."""
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            return self._open(), False

    def _checkin(self, conn: smtplib.SMTP) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self._idle.put_nowait(conn)
                    return
                except queue.Full:
                    pass
        self._quit(conn)

    def _settle(self, conn: smtplib.SMTP, exc: Exception) -> None:
        """After a failed transaction: keep a connection that is still in step with the server
        (a refusal, after RSET), close any other."""
        in_step = _reply_code(exc) not in (None, 421) or isinstance(exc, smtplib.SMTPNotSupportedError)
        if in_step and conn.sock is not None:
            try:
                if conn.rset()[0] == 250:
                    self._checkin(conn)
                    return
            except (smtplib.SMTPException, OSError):
                pass
        conn.close()

    def _drain(self) -> list[smtplib.SMTP]:
        conns = []
        while True:
            try:
                conns.append(self._idle.get_nowait())
            except queue.Empty:
                return conns

    def _open(self) -> smtplib.SMTP:
        """A connected, greeted (EHLO), secured and authenticated connection."""
        if self._security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(self._host, self._port, local_hostname=self._local_hostname,
                                                  timeout=self._timeout, context=self._tls)
        else:
            # Connects and reads the greeting; closes the socket itself if that fails.
            conn = smtplib.SMTP(self._host, self._port, local_hostname=self._local_hostname, timeout=self._timeout)
        try:
            conn.ehlo_or_helo_if_needed()
            if self._security == "starttls":
                if not conn.has_extn("starttls"):
                    raise _ConfigError("smtp_unsupported", f"{self._where()} does not offer STARTTLS"
                                       " (security='starttls'); use security='tls' or 'none'")
                conn.starttls(context=self._tls)
                conn.ehlo()  # the extensions may differ once encrypted (AUTH often appears only now)
            if self._username is not None:
                self._login(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _login(self, conn: smtplib.SMTP) -> None:
        assert self._username is not None and self._password is not None
        try:
            conn.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError:
            raise
        except smtplib.SMTPNotSupportedError as exc:
            raise _ConfigError("smtp_auth_failed", f"{self._where()} does not offer AUTH: {exc}") from None
        except smtplib.SMTPResponseException:
            raise
        except smtplib.SMTPException as exc:  # "No suitable authentication method found."
            raise _ConfigError("smtp_auth_failed", f"cannot authenticate to {self._where()}: {exc}") from None

    def _quit(self, conn: smtplib.SMTP) -> None:
        try:
            if conn.sock is not None:
                conn.sock.settimeout(min(self._timeout, 1.0))  # a dead server must not stall close()
            conn.quit()
        except Exception:  # noqa: BLE001 - best effort; quit() failing still needs the socket closed
            conn.close()

    # -- helpers --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"SMTP server {self._host}:{self._port}"

    def _fail(self, code: str, error: str, *, permanent: bool = False) -> DeliveryResult:
        return failure(code, error, permanent=permanent, secrets=self._secrets)


def _transaction(conn: smtplib.SMTP, mail: _Mail, progress: _Progress) -> None:
    """MAIL, RCPT, DATA: smtplib's sendmail() steps, spelled out to know whether the content
    went out before a failure."""
    options: tuple[str, ...] = ()
    if mail.smtputf8:
        if not conn.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError("SMTPUTF8 (needed for a non-ASCII address) is not offered")
        options = ("SMTPUTF8", "BODY=8BITMIME")
    code, reply = conn.mail(mail.sender, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, mail.sender)
    code, reply = conn.rcpt(mail.recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({mail.recipient: (code, reply)})
    code, reply = conn.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    progress.content_sent = True
    conn.send(mail.data)
    code, reply = conn.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _data_payload(raw: bytes) -> bytes:
    """The message as DATA carries it: CRLF line endings, leading dots doubled, then CRLF.CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reply_code(exc: BaseException) -> int | None:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        return next(iter(exc.recipients.values()))[0]
    return None


def _is_stale(exc: BaseException) -> bool:
    """A reused connection the server had closed: gone, or answering 421 (closing channel).
    A timeout is not: the server is there but slow, and a second try would double the wait."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return not _timed_out(exc)
    return _reply_code(exc) == 421


def _timed_out(exc: BaseException) -> bool:
    """Whether a socket timeout is behind `exc` (smtplib wraps it in SMTPServerDisconnected)."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, TimeoutError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _has_line_break(text: str) -> bool:
    return "\r" in text or "\n" in text


def _secret_forms(username: str | None, password: str | None) -> tuple[str, ...]:
    """The password as it may come back in a server's reply: plain, or base64 as AUTH LOGIN and
    AUTH PLAIN send it."""
    if not password:
        return ()
    forms = [password, base64.b64encode(password.encode()).decode()]
    if username is not None:
        forms.append(base64.b64encode(f"\0{username}\0{password}".encode()).decode())
    return tuple(forms)
