"""The `dhow` click group and what every verb shares: settings resolution, --json and
--progress, and the one place that turns an error into a message and an exit code.

Exit codes: 0 success, 1 the pipeline said no (e.g. an upload was rejected),
2 usage or configuration error, 3 timed out waiting, 4 the platform is unreachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TextIO

import click

from shared.errors import DhowError, PlatformError
from shared.settings import Settings

EXIT_REJECTED, EXIT_CONFIG, EXIT_TIMEOUT, EXIT_PLATFORM = 1, 2, 3, 4


def emit(as_json: bool, payload: Any, text: Callable[[], None]) -> None:
    """A verb's answer: ``payload`` as JSON with --json, else what ``text`` prints."""
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        text()


def exit_code(exc: DhowError) -> int:
    """The exit code of a failure, from its reason's category: a platform reason (the
    platform unreachable, a race: try again) is 4; bad data or configuration (the person
    must change the input or a setting) is 2."""
    return EXIT_PLATFORM if exc.retried else EXIT_CONFIG


def fail(as_json: bool, exc: DhowError) -> NoReturn:
    """Report ``exc`` (its reason, message and what to do) and exit: the one place an
    error becomes an exit code (``exit_code``)."""
    if as_json:
        click.echo(json.dumps({"ok": False, "error": exc.as_dict()}, indent=2))
    else:
        click.secho(f"error [{exc.reason}]: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  what to do: {exc.hint}", err=True)
    sys.exit(exit_code(exc))


@contextlib.contextmanager
def cli_errors(as_json: bool, doing: str) -> Iterator[None]:
    """Dhow's own errors as they are; anything else (an SDK's connection error, mostly)
    as the platform being unreachable, with what to check."""
    try:
        yield
    except DhowError as exc:
        fail(as_json, exc)
    except Exception as exc:
        fail(
            as_json,
            PlatformError(f"{doing}: {exc}", hint="is the stack up? try `dhow local status`"),
        )


def resolve_settings() -> Settings:
    """Settings from the environment; pointed at the local platform when it is up
    and no endpoint was given explicitly.

    Verbs call it as ``app.resolve_settings()``, never a copy imported by name, so that
    one substitution (a test's) reaches every verb."""
    # The local platform's kits (DHOW_KIT=local-aws / local-azure, which its processes'
    # environments carry) are registered by importing dhow_local; imported here, not at
    # the top, so that `dhow --help` pays for none of it.
    import dhow_local  # noqa: F401

    settings = Settings.from_env()
    if settings.aws_endpoint_url or settings.azure_storage_connection_string:
        return settings
    from dhow_local.control import LOCAL_CREDENTIALS
    from dhow_local.kit import recorded_kit
    from dhow_local.platform import PlatformState

    state = PlatformState.load()
    if state.endpoint and state.mode:
        for k, v in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(k, v)
        return recorded_kit(state.cloud).emulated(settings)
    return settings


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dhow")
def main() -> None:
    """Dhow: uploads become validated datasets, trained models and monitored
    endpoints, in UAE regions only (AWS me-central-1, Azure uaenorth/uaecentral)."""


progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: when stderr is a terminal; never with --json).",
)


def progress_stream(as_json: bool, progress: bool | None) -> TextIO | None:
    """Where progress goes: stderr, and only for a person (a terminal, or --progress), so
    that stdout stays the command's answer and --json stays parseable."""
    if as_json or progress is False:
        return None
    stream = sys.stderr
    return stream if progress or stream.isatty() else None
