"""openapi.yaml as data, and JSON Schema validators for its schemas (shared by the tests)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "openapi.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return data


def operation() -> dict[str, Any]:
    op: dict[str, Any] = spec()["paths"]["/start-session"]["post"]
    return op


def validator(name: str) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator (with format checks) for components/schemas/<name>."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec()["components"]}
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def response_examples() -> list[tuple[str, Any]]:
    """(status, example body) for every response example in the spec."""
    components = spec()["components"]["responses"]
    found: list[tuple[str, Any]] = []
    for status, entry in operation()["responses"].items():
        response = components[entry["$ref"].rsplit("/", 1)[1]] if "$ref" in entry else entry
        media = response["content"]["application/json"]
        if "example" in media:
            found.append((str(status), media["example"]))
        for example in media.get("examples", {}).values():
            found.append((str(status), example["value"]))
    return found


def request_examples() -> list[Any]:
    media = operation()["requestBody"]["content"]["application/json"]
    return [example["value"] for example in media["examples"].values()]
