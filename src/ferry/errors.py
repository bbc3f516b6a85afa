"""The one exception tree of ferry.

Every error carries the exit code the CLI returns and whether a sync attempt that failed with it
may be retried from the last committed state.

Exit codes: 0 success, 1 the connector reported failure, 2 invalid input, 3 a connector crashed
or the runtime failed, 130 stopped (SIGINT/SIGTERM).
"""

from __future__ import annotations

EXIT_CONNECTOR_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_CRASHED = 3
EXIT_CANCELLED = 130


class FerryError(Exception):
    """Base of every error ferry raises on purpose."""

    exit_code: int = EXIT_CRASHED
    retryable: bool = False
    # The connector's own classification (`config_error`, `transient_error`, ...), if it gave one.
    failure_type: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FerryError):
    """Invalid input: usage, a config or connection file, an unknown connector."""

    exit_code = EXIT_INVALID_INPUT


class ConnectorNotFound(ConfigError):
    """A connector reference resolves to nothing runnable."""


class ConnectorFailed(FerryError):
    """The connector ran and reported failure (check FAILED, a config_error trace)."""

    exit_code = EXIT_CONNECTOR_FAILED

    def __init__(self, message: str, *, failure_type: str | None = None) -> None:
        super().__init__(message)
        self.failure_type = failure_type
        self.retryable = failure_type == "transient_error"


class ConnectorCrashed(FerryError):
    """The connector exited abnormally or vanished; a fresh attempt may succeed."""

    retryable = True

    def __init__(
        self, message: str, *, exit_code: int | None = None, stderr_tail: str = ""
    ) -> None:
        if stderr_tail:
            # The first line names the cause on its own; the tail follows for context.
            last = next((line for line in reversed(stderr_tail.splitlines()) if line.strip()), "")
            message = f"{message}: {last.strip()}\n--- last stderr lines ---\n{stderr_tail}"
        super().__init__(message)
        self.process_exit_code = exit_code


class IdleTimeout(ConnectorCrashed):
    """A connector gave no sign of life for longer than its idle timeout; it was stopped."""


class ProtocolViolation(FerryError):
    """A connector broke the protocol (a record for an unknown stream, a state out of order)."""


class RecordCountMismatch(ProtocolViolation):
    """The destination confirmed other record counts than ferry sent (`--strict-counts`)."""


class DecodeError(ProtocolViolation):
    """Bytes that are not a valid AirbyteMessage."""


class RuntimeUnavailable(FerryError):
    """The runtime (Docker, Podman, Kubernetes) cannot be reached or cannot run the connector."""


class ImageUnavailable(RuntimeUnavailable):
    """An image is missing and the pull policy does not allow, or failed, to fetch it."""


class InstallError(FerryError):
    """Installing a connector failed; nothing was left behind."""

    exit_code = EXIT_INVALID_INPUT


class StoreError(FerryError):
    """The state store cannot be opened or written."""


class Cancelled(FerryError):
    """ferry was asked to stop (SIGINT/SIGTERM); committed state is kept."""

    exit_code = EXIT_CANCELLED


class InternalError(FerryError):
    """ferry broke one of its own rules (a bug to report), never the user's input."""
