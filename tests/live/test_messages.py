"""``streamo.v1``'s messages only gain fields: every field of the recorded schemas
(``v1_schema.json``) is still there with the same schema, and a client message gains no
required field, so a rename or a removal fails here instead of in someone's client.

After adding a field, record it: ``python tests/live/test_messages.py``."""

from __future__ import annotations

import json
from pathlib import Path

from streamo.live.messages import CLIENT_MESSAGE, PROTOCOL, SERVER_MESSAGE

SNAPSHOT = Path(__file__).with_name("v1_schema.json")


def current() -> dict:
    return {"protocol": PROTOCOL, "client": CLIENT_MESSAGE.json_schema(), "server": SERVER_MESSAGE.json_schema()}


def _models(schema: dict) -> dict[str, dict]:
    return schema.get("$defs", {})


def test_v1_fields_are_never_renamed_or_removed():
    recorded, now = json.loads(SNAPSHOT.read_text(encoding="utf-8")), current()
    assert now["protocol"] == recorded["protocol"] == "streamo.v1"
    missing = []
    for side in ("client", "server"):
        models = _models(now[side])
        for name, model in _models(recorded[side]).items():
            if name not in models:
                missing.append(f"{side} {name}")
                continue
            properties = models[name].get("properties", {})
            missing += [f"{side} {name}.{field}" for field, schema in model.get("properties", {}).items()
                        if properties.get(field) != schema]
            if side == "client":
                missing += [f"client {name}.{field} (newly required)"
                            for field in set(models[name].get("required", [])) - set(model.get("required", []))]
    assert missing == [], "streamo.v1 only gains fields: a changed field needs a new subprotocol version"


def test_the_snapshot_records_the_old_frame_limit():
    """``max_frame_pixels`` was renamed ``max_frame_side`` once; both are in ``ready.limits`` now."""
    limits = _models(json.loads(SNAPSHOT.read_text(encoding="utf-8"))["server"])["Limits"]["properties"]
    assert {"max_frame_pixels", "max_frame_side"} <= set(limits)


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
