"""Errors raised by the SmartMoving client.

Every message is written by this package, never copied from an httpx exception or a request, so
no message can carry the API key; server-provided text is redacted by the client before use.
"""

from __future__ import annotations


class SmartMovingError(Exception):
    """Base class: anything the SmartMoving client refuses to paper over."""


class ConfigurationError(SmartMovingError):
    """The settings are wrong (base URL, key): retrying cannot help, the operator must fix them."""


class AuthenticationError(ConfigurationError):
    """The API key was rejected (401). Retrying cannot help."""


class AuthorizationError(ConfigurationError):
    """The key is valid but not allowed to call this endpoint (403), e.g. Basic tier on premium."""


class EndpointNotFoundError(ConfigurationError):
    """A list endpoint every SmartMoving account has answered 404: the base URL points elsewhere."""

    def __init__(self, url: str, base_url: str) -> None:
        self.url = url
        self.base_url = base_url
        super().__init__(f"SmartMoving answered 404 Not Found for {url}")

    def __reduce__(self) -> tuple[type[EndpointNotFoundError], tuple[str, str]]:
        # Dagster pickles errors across process boundaries; the default would replay (message,).
        return (type(self), (self.url, self.base_url))


class EndpointUnavailableError(SmartMovingError):
    """One endpoint answered 404 or 403 while others answered from the same base URL and key.

    Not a ConfigurationError: the settings are right (the other endpoints prove it), the key's SmartMoving plan
    or permissions leave this endpoint out. Retrying cannot help, but the cycle's other work stands.
    """

    def __init__(self, path: str, status: int, answered: tuple[str, ...], detail: str = "") -> None:
        self.path = path
        self.status = status
        self.answered = answered
        self.detail = detail
        others = " and ".join(filter(None, [", ".join(answered[:-1]), answered[-1] if answered else ""]))
        if status == 403:
            message = (
                f"SmartMoving refused access to {path} (403): this key is not allowed that endpoint "
                f"({others} answered with the same key)"
            )
        else:
            message = (
                f"SmartMoving answered {status} Not Found for {path}: this key's SmartMoving plan may not include "
                f"{path} ({others} answered from the same base URL)"
            )
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self) -> tuple[type[EndpointUnavailableError], tuple[str, int, tuple[str, ...], str]]:
        # Dagster pickles errors across process boundaries; the default would replay (message,).
        return (type(self), (self.path, self.status, self.answered, self.detail))


class UnusableBaseURLError(ConfigurationError):
    """The base URL cannot be requested at all (no http(s) scheme, malformed)."""


class MissingSettingError(ConfigurationError):
    """The environment variable that should hold the tenant's base URL or key is unset or empty."""

    def __init__(self, variable: str, what: str) -> None:
        self.variable = variable
        self.what = what
        super().__init__(f"environment variable {variable} (the SmartMoving {what}) is not set")

    def __reduce__(self) -> tuple[type[MissingSettingError], tuple[str, str]]:
        # Dagster pickles errors across process boundaries; the default would replay (message,).
        return (type(self), (self.variable, self.what))


class QuotaExhaustedError(SmartMovingError):
    """The key's call quota is spent; retrying would only burn what is left of it."""


class UpstreamUnavailableError(SmartMovingError):
    """SmartMoving kept failing (5xx, 429, timeouts, dropped connections) after every retry."""


class DeadlineExceededError(SmartMovingError):
    """A top-level operation ran past its total time budget."""


class NotFoundError(SmartMovingError):
    """The API answered that the record does not exist (SmartMoving uses 400 for this; 404 on a record too)."""


class MalformedPayloadError(SmartMovingError):
    """The API answered 200 with a body the client cannot trust: invalid JSON or a missing field."""

    def __init__(self, endpoint: str, page: int | None, field: str, detail: str = "") -> None:
        self.endpoint = endpoint
        self.page = page
        self.field = field
        self.detail = detail
        where = f"{endpoint} page {page}" if page is not None else endpoint
        message = f"malformed SmartMoving payload from {where}: field {field!r}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self) -> tuple[type[MalformedPayloadError], tuple[str, int | None, str, str]]:
        # The default reduce replays args=(message,), which does not fit this __init__; Dagster
        # pickles errors across process boundaries.
        return (type(self), (self.endpoint, self.page, self.field, self.detail))
