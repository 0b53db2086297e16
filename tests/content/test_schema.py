"""The JSON Schema comes from the same records as the validator, and the committed copy is current."""

from __future__ import annotations

import json
from pathlib import Path

from digest.content.model import KINDS, Note
from digest.content.schema import all_schemas
from digest.content.validate import field_specs

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_model():
    for name, schema in all_schemas().items():
        committed = json.loads((ROOT / "schema" / name).read_text(encoding="utf-8"))
        assert committed == schema, f"schema/{name} is stale: run `digest schema --write schema`"


def test_note_schema_lists_every_field_and_kind():
    schema = all_schemas()["note.schema.json"]
    assert set(schema["properties"]) == set(field_specs(Note))
    assert schema["properties"]["kind"]["enum"] == list(KINDS)
    assert schema["additionalProperties"] is False
    assert {"title", "slug", "date", "kind", "sources", "summary", "body"} <= set(schema["required"])
