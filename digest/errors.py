"""Errors of the digest package, for the person who must act on them.

    DigestError                 base: anything the CLI reports as a message, never a traceback
    ├── ContentError            content could not be checked at all (no content/ folder, ...)
    │   └── ContentInvalid      `digest check` found errors; carries every diagnostic at once
    ├── YamlInputError          one YAML file cannot be read safely (syntax, encoding, size,
    │                           aliases, nesting); carries the file, line and column
    ├── UsageError              a command was called with arguments that cannot work
    ├── ReferenceRunError       a reference implementation failed, timed out or left
    │                           its outputs incomplete
    ├── FetchError              a web request for `digest new --arxiv/--url` failed: network,
    │   │                       timeout, HTTP status or a response that cannot be read
    │   └── RateLimited         the server answered 429/503 and asks to wait longer than we do
    ├── MailSettingsError       mail settings cannot produce a correct message
    ├── AddressInvalid          an address that cannot be stored or sent to (never shown in the message)
    ├── StoreError              the subscriber store cannot be opened, migrated or reached
    │   └── SendInProgress      another sender holds the claim on an issue and channel
    ├── DeliveryError           sending cannot go on now (server unreachable, login refused)
    │   └── SendPaused          permanent failures passed the configured share
    ├── ComplaintRateTooHigh    `digest send` will not start an issue: the previous one's complaint
    │                           rate is at or over 0.3 % (exit 5; --ignore-complaints overrides)
    ├── ServeError              `digest serve` cannot start: a setting, the secret file, the port
    └── RequestRefused          `digest serve` refuses one request (4xx/5xx): carries the status
                                and the Korean message the reader sees

Each message says what is wrong and how to fix it, in one line where it can.
"""

from __future__ import annotations

from dataclasses import dataclass


class DigestError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits non-zero."""

    exit_code = 2


class ContentError(DigestError):
    """Raised when the content folder itself is missing or unreadable."""


class ContentInvalid(ContentError):
    """Raised when validation found errors; ``diagnostics`` lists all of them."""

    exit_code = 1

    def __init__(self, diagnostics):
        self.diagnostics = list(diagnostics)
        errors = sum(1 for d in self.diagnostics if d.severity == "error")
        super().__init__(f"content has {errors} error(s); run `digest check` to see them")


@dataclass
class YamlInputError(DigestError):
    """Raised by the safe YAML reader; ``line`` and ``col`` are 1-based."""

    path: str
    line: int
    col: int
    message: str
    hint: str = ""

    def __post_init__(self):
        super().__init__(f"{self.path}:{self.line}:{self.col}: {self.message}")


class UsageError(DigestError):
    """Raised when a command's arguments cannot work (unknown week, missing value, ...)."""


class ReferenceRunError(DigestError):
    """Raised when a reference implementation fails, times out or misses outputs."""


class FetchError(DigestError):
    """Raised when metadata cannot be fetched; the message names the URL and what to do."""

    exit_code = 3


class RateLimited(FetchError):
    """Raised when the server asks us to come back later; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MailSettingsError(DigestError):
    """Raised when mail settings cannot produce a correct message (see the message for which)."""


class AddressInvalid(DigestError):
    """Raised for an address that cannot be stored or sent to; the message says why, never the address."""


class StoreError(DigestError):
    """Raised when the subscriber store cannot be opened or migrated."""


class SendInProgress(StoreError):
    """Raised when another sender holds the claim on an issue and channel."""


class DeliveryError(DigestError):
    """Raised when sending cannot go on now (server unreachable, TLS or login refused); rerun later."""

    exit_code = 75  # EX_TEMPFAIL: the same command, later, continues


class SendPaused(DeliveryError):
    """Raised when permanent failures pass the configured share of the first recipients."""


class ComplaintRateTooHigh(DigestError):
    """Raised before a new issue is sent when the previous issue's complaint rate is at or over the limit."""

    exit_code = 5  # not 75: running it again later changes nothing until the operator decides


class ServeError(DigestError):
    """Raised when `digest serve` cannot start; the message names the setting or file to fix."""


class RequestRefused(DigestError):
    """Raised inside `digest serve` to answer one request with ``status`` and a Korean ``message``."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
