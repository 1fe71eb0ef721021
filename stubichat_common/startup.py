"""Loading settings at start-up: a broken configuration stops the process with a
sentence naming the setting, instead of serving in a broken state."""

from __future__ import annotations

import sys
from typing import Protocol, TypeVar

from pydantic import ValidationError


class StartupChecked(Protocol):
    def startup_problems(self) -> list[str]: ...


S = TypeVar("S", bound=StartupChecked)


def configuration_errors(error: ValidationError) -> list[str]:
    """One sentence per invalid setting, named as operators write it."""
    sentences = []
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ())).upper()
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        sentences.append(f"{name}: {message}" if name else message)
    return sentences


def load_settings(settings_class: type[S], service: str) -> S:
    """The settings from the environment, or exit 2 with what is wrong."""
    try:
        settings = settings_class()
        problems = settings.startup_problems()
    except ValidationError as error:
        problems = configuration_errors(error)
    if problems:
        for problem in problems:
            print(f"{service}: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return settings
