"""Email over SMTP (aiosmtplib): one connection per delivery lane, kept open between sends and
between rounds, reconnected after an error.

A 5xx reply is a bounce (permanent); 4xx replies, refused connections, timeouts and a failed login
are transient (the server or our configuration may recover)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate

import aiosmtplib

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


def to_message(email: Email) -> Message:
    # The compat32 MIMEText rather than EmailMessage: its header parsing costs more than the rest of a
    # send, and these headers are ours; _one_line and Header do the checking and encoding it would.
    message = MIMEText(email.text, "plain", "utf-8")
    message["From"] = formataddr((_one_line(email.from_name), email.from_email), charset="utf-8")
    message["To"] = _one_line(email.to)
    message["Subject"] = _header(email.subject)
    message["Message-ID"] = email.message_id
    message["Date"] = formatdate(usegmt=True)
    message["Auto-Submitted"] = "auto-generated"
    return message


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
        message = to_message(email)
        for attempt in (1, 2):
            reused = self.smtp is not None and self.smtp.is_connected
            if not reused:
                self.drop()
                self.smtp = await self._connect()
            assert self.smtp is not None
            try:
                await self.smtp.send_message(message, sender=email.from_email, recipients=[email.to])
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
