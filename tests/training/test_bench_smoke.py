"""The bench command runs end to end (on the tiny model) and prints every table.

Timings are never asserted (the machine is noisy); this only proves `python -m bench`
works: workers start, speak the protocol, and the report has the expected rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "yoga"

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.mark.timeout(180)
@pytest.mark.skipif(not (DATA / "manifest.csv").exists(), reason="needs ../shared/data/yoga for the bench images")
def test_quick_bench_prints_every_table(tiny_model: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "results.json"
    out_md = tmp_path / "REPORT.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-reference", "--no-keras",
         "--model", str(tiny_model), "--variants-dir", str(tmp_path / "no-variants"),
         "--json", str(out_json), "--report", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = proc.stdout
    for heading in ("## Machine", "## Cold start", "## Warm end-to-end latency: handler",
                    "## Inference only, and the physical limit", "## Memory and size", "## Lambda sizing",
                    "## Import profile"):
        assert heading in md, heading
    # The tiny model is not one of the variants: it is benched as "shipped", 1 thread, in the
    # cold-start, two warm, inference and memory tables.
    assert md.count("| ours (LiteRT) | shipped | 1 |") >= 5
    assert "| vector extensions | AVX2 " in md and "assume **AVX2 at most**" in md
    assert "error:" not in md
    assert "missing" in proc.stderr  # the absent variants are named, not a crash

    results = json.loads(out_json.read_text())
    (cfg,) = [c for c in results["configs"] if not c.get("cold_only")]
    for extra in [c for c in results["configs"] if c.get("cold_only")]:  # the no-.pyc cold start
        assert extra["cold"]["n"] == 1, extra["cold"]
    assert cfg["cold"]["n"] == 1 and cfg["cold"]["answer"][0] in cfg_labels(results)
    assert set(cfg["warm"]["images"]) == {"photo-300.jpg", "phone-12mp.jpg", "alpha.png", "wide-nobody.jpg"}
    for res in cfg["warm"]["images"].values():
        assert res["handler_b64"]["n"] >= 1 and res["answer"][0] in cfg_labels(results)
    assert results["models"]["shipped"]["flops"]["flops"] > 0
    assert out_md.read_text().rstrip().endswith("-->")  # the hand-written notes marker closes it


def cfg_labels(results: dict) -> set[str]:
    return set(results["models"]["shipped"]["labels"])


DETECTOR = REPO / "model" / "pose_detection.tflite"


@pytest.mark.timeout(180)
@pytest.mark.skipif(not (DATA / "manifest.csv").exists(), reason="needs ../shared/data/yoga for the bench images")
def test_quick_bench_times_the_person_detector(tiny_model: Path, tmp_path: Path) -> None:
    """A model whose metadata asks for a person crop: the detector is its own stage, and the
    crop's added cost (issue 10's budget) is measured against a no-crop copy and judged."""
    if not DETECTOR.is_file():
        pytest.skip("model/pose_detection.tflite missing: run `bash .ci/setup`")
    from yogapose.metadata import PersonCrop

    model = tmp_path / "m" / tiny_model.name
    model.parent.mkdir()
    shutil.copyfile(tiny_model, model)
    shutil.copyfile(DETECTOR, model.parent / DETECTOR.name)
    meta = json.loads(tiny_model.with_suffix(".json").read_text())
    meta["preprocessing"]["person_crop"] = PersonCrop().to_dict()
    model.with_suffix(".json").write_text(json.dumps(meta))
    out_json = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-reference", "--no-keras", "--no-fetch",
         "--model", str(model), "--variants-dir", str(tmp_path / "no-variants"),
         "--json", str(out_json), "--report", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = proc.stdout
    assert "| image | stack | base64 | decode | detect | crop + resize |" in md
    assert "## The person crop: what it adds to a request" in md
    assert "| issue 10: detection + crop added to a warm 300 px JPEG, 1 thread |" in md
    assert "person detector load" in md  # cold-start anatomy
    assert "error:" not in md

    (cfg,) = [c for c in json.loads(out_json.read_text())["configs"] if not c.get("cold_only")]
    stage = cfg["warm"]["stages"]["photo-300.jpg"]
    assert stage["detect"]["median_ms"] > 0 and stage["crop_resize"]["n"] >= 3
    cost = cfg["warm"]["crop_cost"]["photo-300.jpg"]
    assert cost["with"]["n"] == cost["without"]["n"] == cost["added"]["n"] >= 1
    assert isinstance(cost["person_found"], bool)
