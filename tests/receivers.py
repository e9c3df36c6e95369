"""Real receivers for the alert tests, on 127.0.0.1: an HTTP server that records webhook POSTs, and an
SMTP server (aiosmtpd) that records mail, optionally with STARTTLS and a login.

Not a conftest: imported explicitly by the tests that need them (`from receivers import ...`).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Post:
    path: str
    body: dict
    headers: dict


class WebhookReceiver:
    """Records every POST; `answers` is a list of HTTP statuses to give in turn (then 200), `delay_s`
    how long to wait before answering (a timeout test)."""

    def __init__(self, answers: list[int] | None = None, delay_s: float = 0.0):
        self.posts: list[Post] = []
        self.requests = 0  # every request, answered or not
        self.answers = list(answers or [])
        self.delay_s = delay_s
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the library's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests += 1
                    status = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if status == 200:
                    with receiver._lock:
                        receiver.posts.append(Post(self.path, json.loads(raw), dict(self.headers)))
                body = b"ok" if status == 200 else b"server error"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: `mails` received; `tls` (cert, key) offers STARTTLS and requires it;
    `login` (user, password) requires that login (only over TLS, as aiosmtpd insists)."""

    tls: tuple[Path, Path] | None = None
    login: tuple[str, str] | None = None
    mails: list[Mail] = field(default_factory=list)
    port: int = 0

    def __enter__(self) -> SmtpReceiver:
        from aiosmtpd.controller import Controller

        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                message = message_from_bytes(envelope.content, policy=policy.default)
                receiver.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
                return "250 OK"

        options = {}
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            options.update(tls_context=context, require_starttls=True)
        if self.login:
            user, password = self.login

            def authenticate(server, session, envelope, mechanism, auth_data):
                from aiosmtpd.smtp import AuthResult

                ok = auth_data.login.decode() == user and auth_data.password.decode() == password
                return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 or 535

            # PLAIN only: after a refused PLAIN, smtplib tries LOGIN with an initial response that aiosmtpd
            # waits on until the client times out
            options.update(authenticator=authenticate, auth_required=True, auth_require_tls=bool(self.tls),
                           auth_exclude_mechanism=["LOGIN"])
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, server_hostname="localhost",
                                     **options)
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
