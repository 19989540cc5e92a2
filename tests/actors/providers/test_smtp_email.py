"""The SMTP email provider, driven through the standard library's smtplib against a real local
SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.actors.providers.smtp_email import SmtpEmailProvider
from tests.actors.providers.leaks import no_thread_left

FROM = "Clarion <no-reply@example.com>"
USERNAME = "clarion"
PASSWORD = "smtp-password-do-not-leak"

# The AUTH tests run without TLS on purpose (a local server without a certificate).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


class RecordingHandler:
    """Records every accepted message and every EHLO (one per session without STARTTLS); can answer
    chosen recipients (`rcpt_replies`), the next MAIL commands (`mail_replies`) and DATA
    (`data_reply`) with a given reply, or drop the connection once a message is in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.ehlos = 0
        self.quits = 0
        self.transports: list = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.mail_replies: list[str] = []  # answered to the next MAIL commands, one each
        self.drop_after_data = False  # accept the message, then close the connection unanswered
        self.encrypted: list[bool] = []  # per accepted message: whether its session used TLS

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.encrypted.clear()
            self.transports.clear()
            self.ehlos = self.quits = 0
            self.rcpt_replies.clear()
            self.data_reply = None
            self.mail_replies.clear()
            self.drop_after_data = False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802 - aiosmtpd's hook name
        session.host_name = hostname  # the 5-argument hook must set it, or MAIL is refused
        with self.lock:
            self.ehlos += 1
            self.transports.append(server.transport)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        with self.lock:
            reply = self.mail_replies.pop(0) if self.mail_replies else None
        if reply is not None:
            if reply.startswith("421"):
                # 421: the server closes the channel, after the reply (which is written first).
                asyncio.get_running_loop().call_soon(server.transport.close)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_reply is not None:
            return self.data_reply
        # As a mailbox stores it: SMTP's CRLF line endings become the platform's.
        raw = envelope.original_content.replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
            # session.ssl is set by STARTTLS only; the transport knows about implicit TLS too.
            self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        if self.drop_after_data:
            server.transport.close()  # before the reply: the client never learns the outcome
        return "250 2.0.0 queued"

    async def handle_QUIT(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.quits += 1
        return "221 Bye"

    def drop_connections(self, controller: Controller) -> None:
        """Closes every client connection from the server side, as an idle timeout would."""
        with self.lock:
            transports, self.transports = self.transports, []
        done = threading.Event()

        def close_all() -> None:
            for transport in transports:
                transport.close()
            done.set()

        controller.loop.call_soon_threadsafe(close_all)
        assert done.wait(5)


def _free_port() -> int:
    # aiosmtpd's Controller cannot bind port 0 (it then connects to port 0 to check itself).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def smtp_server(handler: RecordingHandler, port: int | None = None, **smtp_kwargs) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=port or _free_port(), **smtp_kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def module_server() -> Iterator[tuple[Controller, RecordingHandler]]:
    handler = RecordingHandler()
    with smtp_server(handler) as controller:
        yield controller, handler


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails a test that leaves threads behind (the module's SMTP server started before it)."""
    with no_thread_left():
        yield


@pytest.fixture
def server(module_server: tuple[Controller, RecordingHandler]) -> tuple[Controller, RecordingHandler]:
    module_server[1].reset()
    return module_server


@pytest.fixture
def handler(server: tuple[Controller, RecordingHandler]) -> RecordingHandler:
    return server[1]


@pytest.fixture
def smtp(server: tuple[Controller, RecordingHandler]) -> Iterator[SmtpEmailProvider]:
    provider = SmtpEmailProvider("127.0.0.1", server[0].port, FROM, security="none", timeout=2.0)
    yield provider
    provider.close()


def _email(to: str = "alice@example.com", **extra) -> dict:
    return {"notification_id": "n-1", "request_id": "r-1", "channel": "email", "to": to,
            "subject": "Your order shipped", "body": "Hello Alice,\nyour order is on its way.\n", **extra}


def test_the_provider_satisfies_the_provider_protocol(smtp: SmtpEmailProvider) -> None:
    assert isinstance(smtp, Provider)
    assert (smtp.channel, smtp.name) == ("email", "smtp")


def test_a_text_email_arrives_with_its_headers_and_body(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    result = smtp.send(_email())

    [(mail_from, rcpt_tos, msg)] = handler.messages
    assert result == DeliveryResult(ok=True, provider_message_id=msg["Message-ID"])
    assert result.provider_message_id.startswith("<") and result.provider_message_id.endswith("@example.com>")
    assert (mail_from, rcpt_tos) == ("no-reply@example.com", ["alice@example.com"])
    assert (msg["From"], msg["To"], msg["Subject"]) == (FROM, "alice@example.com", "Your order shipped")
    assert msg["Date"] and msg["X-Clarion-Notification-Id"] == "n-1" and msg["X-Clarion-Request-Id"] == "r-1"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Hello Alice,\nyour order is on its way.\n"


def test_a_text_and_html_email_is_multipart_alternative(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    result = smtp.send(_email(html_body="<p>Hello <b>Alice</b></p>", request_id=None))

    assert result.ok
    [(_, _, msg)] = handler.messages
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert (text.get_content_type(), text.get_content()) == ("text/plain", "Hello Alice,\nyour order is on its way.\n")
    assert (html.get_content_type(), html.get_content().strip()) == ("text/html", "<p>Hello <b>Alice</b></p>")
    assert msg["X-Clarion-Notification-Id"] == "n-1" and "X-Clarion-Request-Id" not in msg


def test_lone_dots_and_non_ascii_text_survive_the_trip(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    body = "line one\n.\n..two dots\nZoë says héllo ✓\n"
    assert smtp.send(_email(to="Zoë Example <zoe@example.com>", subject="Grüße ✓", body=body)).ok

    [(_, rcpt_tos, msg)] = handler.messages
    assert rcpt_tos == ["zoe@example.com"]
    assert (msg["To"], msg["Subject"], msg.get_content()) == ("Zoë Example <zoe@example.com>", "Grüße ✓", body)


def test_a_non_ascii_address_goes_out_with_smtputf8(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    assert smtp.send(_email(to="josé@example.com")).ok

    [(_, rcpt_tos, msg)] = handler.messages
    assert (rcpt_tos, msg["To"]) == (["josé@example.com"], "josé@example.com")


def test_a_non_ascii_address_to_a_server_without_smtputf8_is_permanent() -> None:
    handler = RecordingHandler()
    with smtp_server(handler, enable_SMTPUTF8=False) as controller:
        provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="none", timeout=2.0)
        try:
            result = provider.send(_email(to="josé@example.com"))
            assert provider.send(_email()).ok  # the connection stays usable
        finally:
            provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_unsupported", True)
    assert handler.ehlos == 1 and len(handler.messages) == 1


def test_two_sends_share_one_smtp_session(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    first, second = smtp.send(_email()), smtp.send(_email(to="bob@example.com"))

    assert first.ok and second.ok and first.provider_message_id != second.provider_message_id
    assert handler.ehlos == 1
    assert [rcpt for _, rcpt, _ in handler.messages] == [["alice@example.com"], ["bob@example.com"]]


def test_close_quits_the_pooled_connections(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    assert smtp.send(_email()).ok
    smtp.close()
    deadline = time.monotonic() + 2
    while handler.quits < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.quits == 1
    assert smtp.send(_email()).ok  # still usable, on a connection of its own


def test_a_550_recipient_is_permanent(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    handler.rcpt_replies["bounce@example.com"] = "550 5.1.1 no such user"

    result = smtp.send(_email(to="bounce@example.com"))

    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_550", True)
    assert "550 5.1.1 no such user" in result.error and result.provider_message_id is None
    # The refusal leaves the session usable: the next message goes over the same connection.
    assert smtp.send(_email()).ok
    assert handler.ehlos == 1 and len(handler.messages) == 1


def test_a_451_recipient_is_transient(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    handler.rcpt_replies["later@example.com"] = "451 4.3.0 try later"

    result = smtp.send(_email(to="later@example.com"))

    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_451", False)
    assert "try later" in result.error


@pytest.mark.parametrize(("reply", "code", "permanent"), [
    ("554 5.6.0 message rejected", "smtp_554", True),
    ("452 4.3.1 insufficient system storage", "smtp_452", False),
])
def test_a_refused_data_is_mapped_by_its_code(handler: RecordingHandler, smtp: SmtpEmailProvider,
                                              reply: str, code: str, permanent: bool) -> None:
    handler.data_reply = reply

    result = smtp.send(_email())

    assert (result.ok, result.error_code, result.permanent) == (False, code, permanent)
    assert reply in result.error
    handler.data_reply = None
    assert smtp.send(_email()).ok and handler.ehlos == 1


@pytest.mark.parametrize("to", ["not-an-address", "", "a@example.com, b@example.com", "x@example.com\r\nBcc: y@example.com", None])
def test_an_invalid_to_is_permanent_without_connecting(to: object) -> None:
    # A closed port: a connection attempt would give connection_error instead.
    provider = SmtpEmailProvider("127.0.0.1", _free_port(), FROM, security="none", timeout=1.0)
    try:
        result = provider.send(_email(to=to))
    finally:
        provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_invalid_message", True)


def test_a_header_injection_in_the_subject_is_an_invalid_message(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    result = smtp.send(_email(subject="hi\r\nBcc: victim@example.com"))

    assert (result.error_code, result.permanent) == ("smtp_invalid_message", True)
    assert handler.messages == [] and handler.ehlos == 0


def test_a_closed_port_is_a_connection_error() -> None:
    provider = SmtpEmailProvider("127.0.0.1", _free_port(), FROM, security="none", timeout=1.0)
    try:
        result = provider.send(_email())
    finally:
        provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)


def test_a_server_that_never_answers_is_a_timeout_within_the_timeout() -> None:
    # Listening without ever accepting: the kernel completes the handshake, no greeting ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        provider = SmtpEmailProvider("127.0.0.1", silent.getsockname()[1], FROM, security="none", timeout=0.5)
        try:
            start = time.monotonic()
            result = provider.send(_email())
            elapsed = time.monotonic() - start
        finally:
            provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "timeout", False)
    assert 0.4 <= elapsed < 2.0


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (USERNAME.encode(), PASSWORD.encode())
    if ok:
        return AuthResult(success=True, auth_data=auth_data)
    # handled=False makes aiosmtpd send `message` (the default, handled=True, sends no reply at all).
    # The reply echoes the password given, so scrubbing is put to the test.
    given = auth_data.password.decode() if isinstance(auth_data, LoginPassword) else "?"
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad credentials: {given}")


@pytest.fixture
def auth_server() -> Iterator[tuple[Controller, RecordingHandler]]:
    handler = RecordingHandler()
    with smtp_server(handler, auth_required=True, auth_require_tls=False, authenticator=_authenticator) as controller:
        yield controller, handler


def test_a_wrong_password_is_a_permanent_auth_failure_that_never_shows_the_password(
        auth_server: tuple[Controller, RecordingHandler]) -> None:
    controller, handler = auth_server
    wrong = "wrong-" + PASSWORD
    provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, username=USERNAME, password=wrong,
                                 security="none", timeout=2.0)
    try:
        result = provider.send(_email())
    finally:
        provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_auth_failed", True)
    assert "535" in result.error and "[redacted]" in result.error
    assert wrong not in result.error and PASSWORD not in result.error
    assert wrong not in repr(provider) and handler.messages == []


def test_the_right_password_authenticates_and_delivers(auth_server: tuple[Controller, RecordingHandler]) -> None:
    controller, handler = auth_server
    provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, username=USERNAME, password=PASSWORD,
                                 security="none", timeout=2.0)
    try:
        assert provider.send(_email()).ok and provider.send(_email()).ok
    finally:
        provider.close()
    assert len(handler.messages) == 2 and handler.ehlos == 1


def test_no_credentials_on_a_server_requiring_auth_is_permanent(auth_server: tuple[Controller, RecordingHandler]) -> None:
    controller, _ = auth_server
    provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="none", timeout=2.0)
    try:
        result = provider.send(_email())
    finally:
        provider.close()
    assert (result.error_code, result.permanent) == ("smtp_530", True)


def test_twenty_concurrent_sends_from_eight_threads_all_arrive(server: tuple[Controller, RecordingHandler]) -> None:
    controller, handler = server
    provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="none", timeout=5.0, pool_size=8)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda i: provider.send(_email(to=f"user{i}@example.com")), range(20)))
    finally:
        provider.close()
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert len({r.provider_message_id for r in results}) == 20
    assert sorted(rcpt[0] for _, rcpt, _ in handler.messages) == sorted(f"user{i}@example.com" for i in range(20))
    assert 1 <= handler.ehlos <= 8  # connections were reused, never more than the threads


def test_a_connection_the_server_dropped_while_idle_is_replaced_transparently(
        server: tuple[Controller, RecordingHandler], smtp: SmtpEmailProvider) -> None:
    controller, handler = server
    assert smtp.send(_email()).ok
    handler.drop_connections(controller)

    result = smtp.send(_email(to="bob@example.com"))

    assert result.ok, result
    assert handler.ehlos == 2
    assert [rcpt for _, rcpt, _ in handler.messages] == [["alice@example.com"], ["bob@example.com"]]


def test_a_421_on_a_pooled_connection_is_replaced_transparently(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    assert smtp.send(_email()).ok
    handler.mail_replies.append("421 4.4.2 idle too long, closing")

    result = smtp.send(_email(to="bob@example.com"))

    assert result.ok, result
    assert handler.ehlos == 2 and len(handler.messages) == 2


def test_a_421_on_a_new_connection_is_transient(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    handler.mail_replies.append("421 4.3.2 shutting down")

    result = smtp.send(_email())

    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_421", False)
    assert handler.messages == []


def test_a_connection_lost_after_the_content_was_sent_is_not_resent(handler: RecordingHandler, smtp: SmtpEmailProvider) -> None:
    assert smtp.send(_email()).ok  # the next send reuses this connection: a retry would be allowed
    handler.drop_after_data = True

    result = smtp.send(_email(to="bob@example.com"))

    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)
    # The server had the message: sending it again would have delivered it twice.
    assert [rcpt for _, rcpt, _ in handler.messages] == [["alice@example.com"], ["bob@example.com"]]
    assert handler.ehlos == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clarion test smtp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def _server_tls(certificate: tuple[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_starttls_then_auth_delivers_over_tls(certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The provider verifies certificates against the default CA store, which SSL_CERT_FILE names.
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    handler = RecordingHandler()
    # AUTH is offered only once encrypted (auth_require_tls defaults to True).
    with smtp_server(handler, tls_context=_server_tls(certificate), require_starttls=True, auth_required=True,
                     authenticator=_authenticator) as controller:
        provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, username=USERNAME, password=PASSWORD,
                                     security="starttls", timeout=2.0)
        try:
            assert provider.send(_email()).ok and provider.send(_email()).ok
        finally:
            provider.close()
    assert handler.encrypted == [True, True]
    assert handler.ehlos == 2  # one session: EHLO, STARTTLS, EHLO again


def test_implicit_tls_delivers(certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    handler = RecordingHandler()
    with smtp_server(handler, ssl_context=_server_tls(certificate)) as controller:
        provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="tls", timeout=2.0)
        try:
            assert provider.send(_email()).ok
        finally:
            provider.close()
    assert handler.encrypted == [True]


def test_an_untrusted_certificate_is_a_connection_error(certificate: tuple[str, str]) -> None:
    handler = RecordingHandler()
    with smtp_server(handler, ssl_context=_server_tls(certificate)) as controller:
        provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="tls", timeout=2.0)
        try:
            result = provider.send(_email())
        finally:
            provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)
    assert "CERTIFICATE_VERIFY_FAILED" in result.error and handler.messages == []


def test_starttls_required_but_not_offered_is_permanent(server: tuple[Controller, RecordingHandler]) -> None:
    controller, handler = server
    provider = SmtpEmailProvider("127.0.0.1", controller.port, FROM, security="starttls", timeout=2.0)
    try:
        result = provider.send(_email())
    finally:
        provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "smtp_unsupported", True)
    assert "STARTTLS" in result.error and handler.messages == []


def test_a_server_restart_between_sends_is_transparent() -> None:
    handler = RecordingHandler()
    port = _free_port()
    provider = SmtpEmailProvider("127.0.0.1", port, FROM, security="none", timeout=2.0)
    try:
        with smtp_server(handler, port=port):
            # Two connections in the pool, both to die with the server.
            with ThreadPoolExecutor(max_workers=2) as pool:
                barrier = threading.Barrier(2)
                assert all(pool.map(lambda i: (barrier.wait(), provider.send(_email()))[1].ok, range(2)))
        with smtp_server(handler, port=port):
            ehlos = handler.ehlos
            assert provider.send(_email(to="bob@example.com")).ok
            # One reconnection: the other dead idle connection was dropped, not tried.
            assert provider.send(_email(to="carol@example.com")).ok
            assert handler.ehlos == ehlos + 1
    finally:
        provider.close()
    assert [rcpt[0] for _, rcpt, _ in handler.messages][-2:] == ["bob@example.com", "carol@example.com"]


def test_a_dead_server_after_a_pooled_send_is_a_connection_error() -> None:
    handler = RecordingHandler()
    port = _free_port()
    provider = SmtpEmailProvider("127.0.0.1", port, FROM, security="none", timeout=1.0)
    try:
        with smtp_server(handler, port=port):
            assert provider.send(_email()).ok
        result = provider.send(_email())  # the pooled connection is dead, and so is the retry
    finally:
        provider.close()
    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)


@pytest.mark.parametrize("kwargs", [
    {"host": ""},
    {"port": 0},
    {"port": 70000},
    {"port": "25"},
    {"from_email": "no-at-sign"},
    {"security": "ssl"},
    {"username": "u"},
    {"password": "p"},
    {"timeout": 0},
    {"timeout": float("inf")},
    {"pool_size": 0},
])
def test_invalid_arguments_are_refused(kwargs: dict) -> None:
    args = {"host": "127.0.0.1", "port": 25, "from_email": FROM, **kwargs}
    with pytest.raises(ValueError):
        SmtpEmailProvider(args.pop("host"), args.pop("port"), args.pop("from_email"), **args)


def test_the_repr_never_shows_the_password() -> None:
    provider = SmtpEmailProvider("smtp.example.com", 587, FROM, username=USERNAME, password=PASSWORD)
    assert PASSWORD not in repr(provider) and "smtp.example.com" in repr(provider)
