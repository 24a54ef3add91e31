"""Typed errors. Each carries a machine-readable reason code and says what to do."""

from __future__ import annotations


class DhowError(Exception):
    """Base of every error Dhow raises on purpose."""

    reason: str = "dhow_error"

    def __init__(self, message: str, *, hint: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "hint": self.hint}


class ConfigError(DhowError):
    """A setting is missing or malformed."""

    reason = "config_invalid"


class RegionNotAllowed(ConfigError):
    """A region or location outside the UAE allow-list was asked for."""

    reason = "region_not_allowed"


class EventParseError(DhowError):
    """A trigger payload is not one of the shapes Dhow understands."""

    reason = "event_unparseable"


class WorkInProgress(DhowError):
    """Another delivery is doing the same work right now; retry later."""

    reason = "work_in_progress"


class DeploymentInProgress(WorkInProgress):
    """The serving target already has a deployment running; this one waits for its end."""

    reason = "deployment_in_progress"


class ObjectMissing(DhowError):
    """The object named by an event no longer exists in storage."""

    reason = "object_missing"


class PlatformError(DhowError):
    """The local platform could not be started, reached or stopped."""

    reason = "platform_error"


class UnknownModelVersion(DhowError):
    """A model version number that the dataset's registry does not have."""

    reason = "unknown_model_version"
