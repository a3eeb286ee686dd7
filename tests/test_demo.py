"""The README's first command: configs/demo.py through the CLI, offline, with real SFace weights and real faces."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env


@pytest.mark.slow
def test_demo_runs_end_to_end_and_dtl2_beats_the_majority_rate(tmp_path):
  # Quick mode: 1 fine-tuning epoch and 200 bootstrap resamples; the same code path. No --workdir: runs/demo-quick.
  env = subprocess_env(JFACEDIAG_CACHE=str(tmp_path / "cache"))
  proc = subprocess.run([sys.executable, "-m", "jfacediag.train", "--config",
                         os.path.join(REPO, "configs/demo.py") + ":quick"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = tmp_path / "runs" / "demo-quick"
  assert "--workdir not given: using runs/demo-quick" in proc.stdout
  with open(workdir / "data" / "aligned" / "align.json", encoding="utf-8") as f:
    align = json.load(f)
  counts = align["last_run"]
  assert align["settings"]["style"] == "arcface112" and counts["aligned"] + counts["no_face"] == 200
  comparison = json.loads((workdir / "comparison.json").read_text())
  assert list(comparison) == ["svm", "finetune"] and (workdir / "report.md").exists()
  assert all(set(c["roc_auc"]) >= {"value", "ci95"} for c in comparison.values())  # As in metrics.json.
  for method in ("svm", "finetune"):
    report = workdir / method / "report"
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png", "report.md"):
      assert (report / name).exists(), f"{method}: {name} missing"
    assert (report / "curves.png").exists() == (method == "finetune")  # No empty axes for the SVM.
    m = json.loads((report / "metrics.json").read_text())
    assert m["num_test"] == 80 and m["majority_rate"] == 0.5 and m["run"]["init_checkpoint"] == "builtin:sface"
    # Calibrated on held-out training data (DTL1: the 20% validation split; DTL2: cross-validated margins).
    assert m["calibration"]["method"] == {"svm": "platt", "finetune": "temperature"}[method]
    leak = json.loads((workdir / method / "leakage.json").read_text())
    # Real faces through the identity check: the aligned crops as they are, centre-crop fallbacks left out.
    assert leak["identity"]["embedder"] == "builtin:sface" and leak["files"] == 200
    assert leak["identity"]["faces_compared"] + leak["no_face"] == 200 and leak["identity"]["faces_compared"] >= 100
    print(f"demo {method}: leakage {leak['pairs']}, across the split {leak['cross_split']}; "
          f"threshold {leak['identity']['threshold']:.3f}; calibration {m['calibration']}")
    print(f"demo {method}: accuracy {m['accuracy']}")
    md = (report / "report.md").read_text()
    # The truth about alignment: centre-crop fallbacks counted per class, and whether a face was found is the class.
    assert "Aligned by jfacediag.align (style arcface112" in md and "aligned." not in md.split("## Skipped")[1]
    assert "WARNING: whether a face was found differs between the classes" in md, md.split("## Alignment")[1][:600]
    assert m["run"]["alignment"]["p_value"] < 0.05
  dtl2 = json.loads((workdir / "svm" / "report" / "metrics.json").read_text())["accuracy"]
  # Above the majority-class rate, and so is the lower end of both 95% intervals.
  assert min(dtl2["ci95"][0], dtl2["clopper_pearson95"][0]) > 0.5
