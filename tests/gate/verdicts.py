"""A hand-made gate verdict (passing and failing checks, a pipe in a name) for the report tests."""

from __future__ import annotations

from faceaudit.gate.compare import Check, GateResult

RESULT = GateResult(
    checks=(
        Check("same dataset", "dataset.manifest_sha256", True, None, None, "equal", "manifest sha256 cdcd"),
        Check("hiding <AUC> & co", "games.hiding_game.summary.ebp.auc_accuracy", False, 0.8, 0.7,
              "drop <= 0.05 (higher is better)", "drop 0.1 > max_drop 0.05"),
        Check("hiding <AUC> & co", "games.hiding_game.summary.rise.auc_accuracy", True, 0.7, 0.7,
              "drop <= 0.05 (higher is better)", "drop 0"),
        Check("gap | pipes", "a_vs_b l1", False, None, 0.4, "<= 0.3", "gap 0.4 > max 0.3"),
    ),
    baseline="base.onnx (sha256 abab)", candidate="cand.onnx (sha256 efef)", policy="policy.yaml",
    notes=("the audits ran with different options: seed",),
)
