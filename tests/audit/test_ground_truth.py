"""audit.ground_truth: one row per method the audit ran or skipped, numbers read from the right games."""

from __future__ import annotations

from faceaudit.audit.ground_truth import ground_truth


def test_rows_for_every_method_ran_or_skipped_with_the_games_numbers() -> None:
    audit = {
        "methods": {"gradient": {"region_mass": 0.25}, "rise": {}},
        "methods_skipped": {"pairwise_sim": "needs global average pooling"},
        "games": {"pointing_game": {"summary": {"gradient": {"hit_rate": 0.5}, "random": {"hit_rate": 0.1}}},
                  "inpainting_game": {"summary": {"rise": {"sr_at_far_0.05": 0.75, "sr_at_far_0.01": 0.5},
                                                  "oracle": {"sr_at_far_0.05": 1.0}}}},
    }
    rows = {row["method"]: row for row in ground_truth(audit)}
    assert list(rows) == ["gradient", "pairwise_sim", "rise", "random", "oracle"]
    assert rows["gradient"] == {"method": "gradient", "region_mass": 0.25, "pointing_hit_rate": 0.5,
                                "inpainting_sr": None, "skipped": None}
    assert rows["rise"]["inpainting_sr"] == 0.75 and rows["rise"]["region_mass"] is None
    assert rows["pairwise_sim"]["skipped"] == "needs global average pooling"
    assert rows["random"]["pointing_hit_rate"] == 0.1 and rows["oracle"]["inpainting_sr"] == 1.0


def test_an_audit_without_games_still_lists_its_methods() -> None:
    rows = ground_truth({"methods": {"occlusion": {"region_mass": 0.5}}, "games": {}})
    assert rows == [{"method": "occlusion", "region_mass": 0.5, "pointing_hit_rate": None, "inpainting_sr": None,
                     "skipped": None}]
