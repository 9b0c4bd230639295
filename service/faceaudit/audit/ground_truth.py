"""The ground-truth table of an audit.json: per method, how much of its maps lies on the planted part.

Columns (None where the audit has no such number):
    region_mass         mean share of the map's positive mass inside each image's region (audit.run)
    pointing_hit_rate   the pointing game's hit rate: map maximum inside the region or within its tolerance
                        (15 px by default; ties counted fractionally): compare with the `random` row
    inpainting_sr       inpainting game success rate at a 5 % false-alarm rate (embedding models)
    skipped             why the method made no maps (methods=["all"]: it refused the model), else None
Every method the audit ran or skipped has a row, by name (the Audit RPC's Struct keeps no order),
then the games' reference series (random, oracle) where played. Reads a parsed audit.json; touches no file.
"""

from __future__ import annotations

from typing import Any

FAR = "sr_at_far_0.05"
REFERENCES = ("random", "oracle")  # the games' own series: chance level and the best map possible


def ground_truth(audit: dict[str, Any]) -> list[dict[str, Any]]:
    games = audit.get("games", {})
    pointing = games.get("pointing_game", {}).get("summary", {})
    inpainting = games.get("inpainting_game", {}).get("summary", {})
    methods = audit.get("methods", {})
    skipped = audit.get("methods_skipped", {})
    rows = [{"method": name, "region_mass": methods.get(name, {}).get("region_mass"),
             "pointing_hit_rate": pointing.get(name, {}).get("hit_rate"),
             "inpainting_sr": inpainting.get(name, {}).get(FAR), "skipped": skipped.get(name)}
            for name in sorted({*methods, *skipped})]
    rows += [{"method": name, "region_mass": None, "pointing_hit_rate": pointing.get(name, {}).get("hit_rate"),
              "inpainting_sr": inpainting.get(name, {}).get(FAR), "skipped": None}
             for name in REFERENCES if name in pointing or name in inpainting]
    return rows
