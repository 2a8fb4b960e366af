"""`sllm deploy`, `sllm delete` and `sllm models`: the admin API (`sllm.api.admin`) from a shell.

They talk to a running coordinator's front door (``--url``, default ``http://127.0.0.1:8080``,
the HTTP_PORT default) with the admin key (``--admin-key``, default the ADMIN_KEY
environment variable), and need nothing else: the standard library's HTTP client, no
extra installed. Errors print the server's message and exit 1; an unreachable server exits 1
naming the URL.

``sllm deploy NAME --source SRC [--engine E] [--set key=value ...] [--wait]``: ``--set``
sets an engine option (``--set dtype=float32 --set max_model_len=512``; a value that
reads as JSON, a number or ``true``, is taken as that); ``--files FILE`` gives the files of
an http(s) source (a JSON list of path, size and sha256); ``--wait`` waits until the model
is ready (exit 0) or failed (exit 1, with the error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sllm.catalog import DEFAULT_ENGINE

DEFAULT_URL = "http://127.0.0.1:8080"
# Describing a source (hashing a local directory, listing a hub repository) takes seconds
# to minutes for a large checkpoint.
DEFAULT_WAIT_S = 600.0
WAIT_POLL_S = 0.2
REQUEST_TIMEOUT_S = 30.0
# A drain waits for running requests (`sllm.api.admin.DRAIN_TIMEOUT_S`) before answering.
DELETE_TIMEOUT_S = 180.0
EXIT_FAILED = 1


class AdminError(Exception):
    """The server refused (its message) or could not be reached."""


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=DEFAULT_URL, help=f"the front door (default {DEFAULT_URL})"
    )
    common.add_argument(
        "--admin-key",
        default=None,
        help="the coordinator's ADMIN_KEY (default: the ADMIN_KEY environment variable)",
    )

    deploy = sub.add_parser(
        "deploy",
        parents=[common],
        help="deploy a model on a running cluster",
        description="Register a model with the coordinator's registry. Its source is "
        "described (files listed and hashed) in the background; --wait waits until it "
        "is ready to serve.",
    )
    deploy.add_argument("name", help="the model's name, as requests will name it")
    deploy.add_argument(
        "--source",
        default="",
        help="an absolute directory, an http(s):// URL or a Hugging Face id (org/name[@rev])",
    )
    deploy.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        help=f"sim, transformers or vllm (default {DEFAULT_ENGINE})",
    )
    deploy.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine option, e.g. dtype=float32 (repeatable)",
    )
    deploy.add_argument("--files", help="JSON file listing the files of an http(s) source")
    deploy.add_argument("--size-bytes", type=int, help="a sim model's size in bytes")
    deploy.add_argument(
        "--keep-alive",
        type=float,
        help="seconds it stays loaded once idle (default: each worker's KEEP_ALIVE)",
    )
    deploy.add_argument("--wait", action="store_true", help="wait until ready or failed")
    deploy.add_argument(
        "--timeout", type=float, default=DEFAULT_WAIT_S, help="seconds --wait waits"
    )
    deploy.set_defaults(run=run_deploy)

    delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete a model from a running cluster",
        description="Delete a model. One with requests running is refused unless --drain: "
        "then new requests for it are refused and the running ones finish first.",
    )
    delete.add_argument("name")
    delete.add_argument("--drain", action="store_true", help="wait for running requests")
    delete.set_defaults(run=run_delete)

    models = sub.add_parser(
        "models",
        parents=[common],
        help="list the models of a running cluster, with their status",
        description="List every model of the coordinator's registry with its status "
        "(registered, downloading, ready, failed) and error.",
    )
    models.add_argument("--json", action="store_true", help="print the listing as JSON")
    models.set_defaults(run=run_models)


def run_deploy(args: argparse.Namespace) -> int:
    try:
        body: dict[str, Any] = {
            "name": args.name,
            "source": args.source,
            "engine": args.engine,
            "options": parse_options(args.options),
        }
        if args.files:
            with open(args.files, encoding="utf-8") as file:
                body["files"] = json.load(file)
        if args.size_bytes is not None:
            body["size_bytes"] = args.size_bytes
        if args.keep_alive is not None:
            body["keep_alive_s"] = args.keep_alive
        entry = _call(args, "POST", "/admin/v1/models", body)
        print(f"{entry['name']}: {entry['status']}")
        if not args.wait:
            return 0
        deadline = time.monotonic() + args.timeout
        while entry["status"] in ("registered", "downloading"):
            if time.monotonic() > deadline:
                print(f"sllm: {args.name} is still {entry['status']} after {args.timeout:g} s")
                return EXIT_FAILED
            time.sleep(WAIT_POLL_S)
            entry = _find(args, args.name)
        print(
            f"{entry['name']}: {entry['status']}"
            + (f": {entry['error']}" if entry["error"] else "")
        )
        return 0 if entry["status"] == "ready" else EXIT_FAILED
    except (AdminError, ValueError, OSError) as error:
        print(f"sllm: {error}", file=sys.stderr)
        return EXIT_FAILED


def run_delete(args: argparse.Namespace) -> int:
    path = "/admin/v1/models/" + urllib.parse.quote(args.name, safe="/")
    if args.drain:
        path += "?drain=true"
    try:
        _call(args, "DELETE", path, timeout_s=DELETE_TIMEOUT_S)
    except AdminError as error:
        print(f"sllm: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.name}: deleted")
    return 0


def run_models(args: argparse.Namespace) -> int:
    try:
        listing = _call(args, "GET", "/admin/v1/models")["data"]
    except AdminError as error:
        print(f"sllm: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    rows = [("NAME", "STATUS", "ENGINE", "SIZE", "SOURCE / ERROR")]
    for entry in listing:
        size = entry.get("size_bytes")
        shown = f"{size / 1e9:.2f} GB" if isinstance(size, int) else "-"
        rows.append(
            (
                entry["name"],
                entry["status"],
                entry.get("engine", ""),
                shown,
                entry["error"] or entry.get("source", "") or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        padded = [row[column].ljust(widths[column]) for column in range(4)]
        print("  ".join([*padded, row[4]]))
    return 0


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs as engine options; a value that is JSON (a number, true, a
    list) is taken as that, anything else as a string. Raises ValueError naming a bad pair."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return options


def _find(args: argparse.Namespace, name: str) -> dict[str, Any]:
    for entry in _call(args, "GET", "/admin/v1/models")["data"]:
        if entry["name"] == name:
            return dict(entry)
    raise AdminError(f"{name} is no longer in the registry")


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> dict[str, Any]:
    key = args.admin_key or os.environ.get("ADMIN_KEY", "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as error:
        raise AdminError(f"{error.code}: {_message_of(error)}") from None
    except urllib.error.URLError as error:
        raise AdminError(f"cannot reach {args.url}: {error.reason}") from None


def _message_of(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return error.reason or "no message"
