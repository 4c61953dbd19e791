"""Hold a command's JSON output to its documented schema: valid, and nothing in it the schema leaves out."""

from __future__ import annotations

from typing import Any

import jsonschema


def undocumented(doc: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys the output has and the schema does not describe (the documented shape must be the whole shape)."""
    found: list[str] = []
    if isinstance(doc, dict) and "properties" in schema:
        for key, value in doc.items():
            if key not in schema["properties"]:
                found.append(f"{where}/{key}")
            else:
                found += undocumented(value, schema["properties"][key], f"{where}/{key}")
    elif isinstance(doc, list) and "items" in schema:
        for value in doc:
            found += undocumented(value, schema["items"], f"{where}[]")
    return found


def check_shape(doc: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(doc)
    missing = undocumented(doc, schema)
    assert not missing, f"fields not in the schema: {missing}"
