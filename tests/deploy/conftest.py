"""Deployment files read the way a container engine reads them, for the deployment checks.

- `parse_dockerfile`: a Dockerfile's final stage, the image that runs: its base image
  (``${ARG}`` resolved from the ARGs before the first FROM), user, ENV, ENTRYPOINT/CMD,
  HEALTHCHECK, COPY sources from the build context and EXPOSE (exec forms and
  ``key=value`` ENV, which is what ours use); every stage's base, and the COPY sources of
  every stage, since any stage reads the build context.
- `compose_services`: each service of ``docker-compose.yml`` with the command its
  container runs (the image's ENTRYPOINT, then ``command:`` or the image's CMD) and the
  environment it sees (the image's ENV overlaid by ``environment:``, with ``${VAR:-x}``
  interpolated from the variables given), plus its health check.

Tests get them as fixtures, like the root conftest's helpers.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


class MissingVariable(Exception):
    """Compose's ``${VAR:?message}`` with VAR unset or empty: Compose stops with `message`."""


@dataclass
class Dockerfile:
    path: Path
    base: str = ""
    user: str = "root"
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)  # exec form, without "CMD"
    copies: list[list[str]] = field(default_factory=list)  # sources of each COPY
    runs: list[str] = field(default_factory=list)  # RUN commands (shell form)
    expose: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)  # each stage's base image, in order
    arguments: dict[str, str] = field(default_factory=dict)  # ARGs before the first FROM


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    pairs = []
    for entry in logical:
        word, _, rest = entry.partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def parse_dockerfile(path: Path) -> Dockerfile:
    parsed = Dockerfile(path)
    for instruction, arguments in _instructions(path.read_text()):
        if instruction == "ARG" and not parsed.stages:
            name, _, default = arguments.partition("=")
            parsed.arguments[name] = default
        elif instruction == "FROM":
            base = re.sub(
                r"\$\{(\w+)\}", lambda m: parsed.arguments[m.group(1)], arguments.split()[0]
            )
            # A new stage: what the image runs is the last one's alone.
            parsed.stages.append(base)
            parsed.base, parsed.user, parsed.env = base, "root", {}
            parsed.entrypoint, parsed.cmd, parsed.healthcheck, parsed.expose = [], [], [], []
        elif instruction == "USER":
            parsed.user = arguments
        elif instruction == "ENV":
            for pair in shlex.split(arguments):
                key, sep, value = pair.partition("=")
                assert sep, f"{path}: ENV {pair!r} is not key=value"
                parsed.env[key] = value
        elif instruction == "ENTRYPOINT":
            parsed.entrypoint = _exec_form(arguments)
        elif instruction == "CMD":
            parsed.cmd = _exec_form(arguments)
        elif instruction == "HEALTHCHECK":
            _, _, command = arguments.partition("CMD ")
            parsed.healthcheck = _exec_form(command.strip())
        elif instruction == "COPY" and "--from=" not in arguments:  # not from a stage
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            parsed.copies.append(words[:-1])
        elif instruction == "RUN":
            parsed.runs.append(arguments)
        elif instruction == "EXPOSE":
            parsed.expose.extend(arguments.split())
    return parsed


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``,
    ``${VAR?message}``, ``$VAR`` and ``$$``; a required variable missing raises
    `MissingVariable`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3) or ""
        if operator == ":-":
            return variables.get(name) or default
        if operator == "-":
            return variables.get(name, default)
        if (operator == ":?" and not variables.get(name)) or (
            operator == "?" and name not in variables
        ):
            raise MissingVariable(f"{name}: {default}")
        return variables.get(name, "")

    return _VARIABLE.sub(replace, value)


@dataclass
class ComposeService:
    name: str
    spec: dict[str, Any]
    dockerfile: Dockerfile | None
    command: list[str]
    environment: dict[str, str]
    healthcheck: list[str]  # exec form, without "CMD"


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def _environment(spec: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    raw = spec.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {key: interpolate(str(value), variables) for key, value in raw.items()}


def compose_services(variables: Mapping[str, str] | None = None) -> dict[str, ComposeService]:
    variables = variables or {}
    services = {}
    for name, spec in load_compose()["services"].items():
        dockerfile = None
        build = spec.get("build")
        if build is not None:
            context = ROOT / build.get("context", ".")
            dockerfile = parse_dockerfile(context / build.get("dockerfile", "Dockerfile"))
        environment = dict(dockerfile.env) if dockerfile else {}
        environment.update(_environment(spec, variables))
        entrypoint = dockerfile.entrypoint if dockerfile else []
        command = spec.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if command is None:
            command = dockerfile.cmd if dockerfile else []
        test = (spec.get("healthcheck") or {}).get("test") or []
        if test and test[0] == "CMD":
            test = test[1:]
        elif not test and dockerfile:
            test = dockerfile.healthcheck
        services[name] = ComposeService(
            name, spec, dockerfile, [*entrypoint, *command], environment, list(test)
        )
    return services


@pytest.fixture
def compose() -> Callable[..., dict[str, ComposeService]]:
    """``compose(variables)``: the services of docker-compose.yml; see `compose_services`."""
    return compose_services


@pytest.fixture
def missing_variable() -> type[Exception]:
    """What `compose` raises for a required variable that is not set (`MissingVariable`)."""
    return MissingVariable


@pytest.fixture
def compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML data (anchors and merge keys resolved)."""
    return load_compose()


@pytest.fixture
def dockerfile() -> Callable[[Path], Dockerfile]:
    """``dockerfile(path)``: see `parse_dockerfile`."""
    return parse_dockerfile
