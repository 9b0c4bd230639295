"""report.html: one self-contained file, every picture embedded, no network address."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.audit.report import write_report
from faceaudit.audit.run import run_audit
from faceaudit.errors import InvalidRequest
from faceaudit.testing.zoo import planted_region_classifier
from tests.conftest import prepared


@pytest.fixture(scope="module")
def audit_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    lines = ["image,class,group"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(f"{i}.png,0,{'x' if i % 2 else 'y & <z>'}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = prepared(planted_region_classifier(), {"kind": "classifier", "output_type": "probabilities"})
    return run_audit(model, folder, tmp_path_factory.mktemp("out"), methods=["gradient"],
                     games=["deletion", "confidence"], options={"cms": {"patch": 4, "stride": 4},
                                                                 "games": {"deletion": {"steps": 8}}})


def test_report_is_self_contained(audit_json: Path) -> None:
    report = write_report(audit_json)
    assert report == audit_json.parent / "report.html"
    text = report.read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', text)
    audit = json.loads(audit_json.read_text(encoding="utf-8"))
    # CMS overall + 2 groups + 1 difference, per image the face and one map, one curve (deletion).
    assert len(sources) == 4 + 2 * len(audit["images"]) + 1
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|<link|<script|@import|url\(", text)
    assert "y &amp; &lt;z&gt;" in text and "<z>" not in text  # group values are escaped
    for name in ("deletion", "confidence", "gradient"):
        assert name in text


def test_report_refuses_what_is_not_an_audit(tmp_path: Path) -> None:
    (tmp_path / "audit.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        write_report(tmp_path / "audit.json")
    assert caught.value.field == "audit"
