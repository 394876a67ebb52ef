"""Email over SMTP (aiosmtplib): one connection per delivery lane, kept open between sends and
between rounds, reconnected after an error.

A 5xx reply is a bounce (permanent); 4xx replies, refused connections, timeouts and a failed login
are transient (the server or our configuration may recover)."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.header import Header
from email.policy import compat32
from email.utils import formataddr, formatdate

import aiosmtplib
import aiosmtplib.email

from services.notify.adapters.base import (
    Email,
    Outbound,
    PermanentFailure,
    Send,
    TransientFailure,
    compose_email,
)
from services.notify.settings import NotifySettings


def _one_line(value: str) -> str:
    """Header values from payloads never carry a line break (no header injection)."""
    return " ".join(value.splitlines()).strip()


def _header(value: str) -> str:
    value = _one_line(value)
    return value if value.isascii() else Header(value, "utf-8").encode()


# compat32 folds a header as the email package's generator would, with SMTP's line ending.
_FOLD = compat32.clone(linesep="\r\n")
_BODY_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n'
)


def _header_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}\r\n"
    if len(line) <= 80 and line.isascii() and "\n" not in value:
        return line.encode("ascii")
    return _FOLD.fold_binary(name, value)  # long, pre-folded or not ASCII: the generator's folding


def to_bytes(email: Email) -> bytes:
    """The message as it goes on the wire: the bytes the email package's generator made of the
    compat32 MIMEText this used to build (text/plain in UTF-8, base64 body, the same headers in the
    same order), written directly. Building and flattening the Message object cost more CPU than
    the rest of a send; the headers are ours: _one_line and Header do the checking and encoding."""
    headers = (
        ("From", formataddr((_one_line(email.from_name), email.from_email), charset="utf-8")),
        ("To", _one_line(email.to)),
        ("Subject", _header(email.subject)),
        ("Message-ID", email.message_id),
        ("Date", formatdate(usegmt=True)),
        ("Auto-Submitted", "auto-generated"),
    )
    body = base64.encodebytes(email.text.encode("utf-8")).replace(b"\n", b"\r\n")
    return b"".join((_BODY_HEADERS, *(_header_line(n, v) for n, v in headers), b"\r\n", body))


# A plain addr-spec (local@domain, no quoting, comments or display name) is used as it is; anything
# else goes through aiosmtplib's parser, which finds the address in "Name <a@b>" and refuses what
# cannot go on an SMTP command line. sendmail() parsed both addresses four times per message, a
# fifth of a send's CPU.
_PLAIN_ADDRESS = re.compile(r'[^\s<>()\[\],;:"\\@]+@[^\s<>()\[\],;:"\\@]+')


def envelope_address(address: str) -> str:
    return address if _PLAIN_ADDRESS.fullmatch(address) else _parsed_address(address)


@functools.lru_cache(maxsize=256)
def _parsed_address(address: str) -> str:
    return aiosmtplib.email.parse_address(address)  # ValueError: not fit for a command line


async def _transaction(smtp: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes) -> None:
    """One mail transaction (MAIL, RCPT, DATA) with aiosmtplib's public commands, raising what its
    sendmail() raises: SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError."""
    sender, recipient = envelope_address(sender), envelope_address(recipient)
    utf8 = not (sender + recipient).isascii()
    if smtp.is_ehlo_or_helo_needed:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()
    options: list[bytes] = []
    if utf8:
        if not smtp.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        options.append(b"SMTPUTF8")
    if smtp.supports_extension("size"):
        options.append(b"SIZE=%d" % len(message))
    encoding = "utf-8" if utf8 else "ascii"
    reply = await smtp.execute_command(b"MAIL", b"FROM:<%s>" % sender.encode(encoding), *options)
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await smtp.execute_command(b"RCPT", b"TO:<%s>" % recipient.encode(encoding))
    if reply.code not in (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)]
        )
    await smtp.data(message)


def _reply_failure(error: aiosmtplib.SMTPResponseException) -> TransientFailure | PermanentFailure:
    text = f"SMTP {error.code} {error.message}".strip()
    if error.code >= 500 and not isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return PermanentFailure(text, bounced=True)
    return TransientFailure(text)


class _Lane:
    def __init__(self, adapter: SmtpAdapter, smtp: aiosmtplib.SMTP | None) -> None:
        self.adapter = adapter
        self.smtp = smtp

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.adapter.settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            use_tls=settings.smtp_use_tls,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
        try:
            await smtp.connect()  # also STARTTLS and login, when configured
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Refused greeting, failed login or no server: nothing about this message, so transient.
            smtp.close()
            raise TransientFailure(
                f"cannot connect to SMTP {settings.smtp_host}:{settings.smtp_port}: {exc or type(exc).__name__}"
            ) from exc
        return smtp

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    async def send(self, row: Outbound) -> None:
        email = compose_email(row, self.adapter.settings)
        message = to_bytes(email)
        for attempt in (1, 2):
            reused = self.smtp is not None and self.smtp.is_connected
            if not reused:
                self.drop()
                self.smtp = await self._connect()
            assert self.smtp is not None
            try:
                await _transaction(self.smtp, email.from_email, email.to, message)
                return
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self.drop()
                codes = [r.code for r in exc.recipients]
                text = "; ".join(f"SMTP {r.code} {r.message}" for r in exc.recipients)
                if codes and all(code >= 500 for code in codes):
                    raise PermanentFailure(text, bounced=True) from exc
                raise TransientFailure(text) from exc
            except aiosmtplib.SMTPServerDisconnected as exc:
                self.drop()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: one more try on a fresh one
                raise TransientFailure(f"SMTP server disconnected: {exc}") from exc
            except aiosmtplib.SMTPResponseException as exc:
                self.drop()
                raise _reply_failure(exc) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                self.drop()
                raise TransientFailure(f"SMTP send failed: {exc or type(exc).__name__}") from exc


class SmtpAdapter:
    name = "smtp"

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        # Connections of finished lanes, reused by the next round's lanes.
        self._idle: list[aiosmtplib.SMTP] = []

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[Send]:
        lane = _Lane(self, self._idle.pop() if self._idle else None)
        try:
            yield lane.send
        finally:
            if (
                lane.smtp is not None
                and lane.smtp.is_connected
                and len(self._idle) < self.settings.outbox_concurrency
            ):
                self._idle.append(lane.smtp)
            else:
                lane.drop()

    async def close(self) -> None:
        while self._idle:
            smtp = self._idle.pop()
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
