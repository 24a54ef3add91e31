"""Typed errors. Each carries a machine-readable reason code and says what to do.

The codes, their categories and their general hints are ``shared.reasons.Reason``; an
error's own ``hint`` says what to do about this one failure."""

from __future__ import annotations

from shared.reasons import Reason, is_retried


class DhowError(Exception):
    """Base of every error Dhow raises on purpose."""

    reason: Reason = Reason.DHOW_ERROR

    def __init__(self, message: str, *, hint: str = "", reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    @property
    def retried(self) -> bool:
        """Whether this failure is raised for its trigger to redeliver (its reason's
        category is ``platform``), rather than recorded and answered."""
        return is_retried(self.reason)

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "hint": self.hint}


class ConfigError(DhowError):
    """A setting is missing or malformed."""

    reason = Reason.CONFIG_INVALID


class RegionNotAllowed(ConfigError):
    """A region or location outside the UAE allow-list was asked for."""

    reason = Reason.REGION_NOT_ALLOWED


class EventParseError(DhowError):
    """A trigger payload is not one of the shapes Dhow understands."""

    reason = Reason.EVENT_UNPARSEABLE


class WorkInProgress(DhowError):
    """Another delivery is doing the same work right now; retry later."""

    reason = Reason.WORK_IN_PROGRESS


class DeploymentInProgress(WorkInProgress):
    """The serving target already has a deployment running; this one waits for its end."""

    reason = Reason.DEPLOYMENT_IN_PROGRESS


class ObjectMissing(DhowError):
    """The object named by an event no longer exists in storage."""

    reason = Reason.OBJECT_MISSING


class PlatformError(DhowError):
    """The local platform could not be started, reached or stopped."""

    reason = Reason.PLATFORM_ERROR


class UnknownModelVersion(DhowError):
    """A model version number that the dataset's registry does not have."""

    reason = Reason.UNKNOWN_MODEL_VERSION
