"""Issue 6: the paper's split (prepare), cross-validation, calibration, FLOPs, the results table, confounds, the
leakage guard and the dense SIFT baseline."""
import csv
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from conftest import REPO, small_config, subprocess_env
from jfacediag import calibration, dataset, flops, leakage, report, train
from jfacediag.data import prepare, splits, toy

DSF_FOLDERS = ("Beta-thalassemia", "Hyperthyroidism", "Down syndrome", "Leprosy", "Healthy")


# == prepare ==========================================================================================================
def _dsf_like(root, per_class=70):
  rng = np.random.default_rng(0)
  for c, name in enumerate(DSF_FOLDERS):
    os.makedirs(root / name)
    for i in range(per_class):
      arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
      Image.fromarray(arr).save(root / name / f"{name[:4].lower()}{i} ({c}).jpg")
  (root / "Leprosy" / "broken.jpg").write_bytes(b"not a jpeg")


def _listing(dst):
  return sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs)


def test_prepare_gives_the_paper_split_and_reruns_identically(tmp_path, capsys):
  src, dst = tmp_path / "DSF", tmp_path / "dsf-multi"
  _dsf_like(src)
  assert prepare.main(["--src", str(src), "--dst", str(dst), "--task", "multi"]) == 0
  out = capsys.readouterr().out
  assert "unreadable: Leprosy/broken.jpg" in out and "seed 0" in out
  for part, n in (("train", 40), ("test", 30)):
    for cls in prepare.TASKS["multi"]:
      assert len(os.listdir(dst / part / cls)) == n, (part, cls)
  first = _listing(dst)
  record = json.loads((dst / "prepare.json").read_text())
  assert record["seed"] == 0 and len(record["sha256"]) == 5 * 70
  assert prepare.main(["--src", str(src), "--dst", str(dst), "--task", "multi"]) == 0  # Rerun: same files.
  assert _listing(dst) == first and json.loads((dst / "prepare.json").read_text())["split"] == record["split"]
  assert prepare.main(["--src", str(src), "--dst", str(dst), "--task", "multi", "--seed", "1"]) == 2  # Refused.
  assert "other settings" in capsys.readouterr().err
  assert prepare.main(["--src", str(src), "--dst", str(tmp_path / "bin"), "--task", "binary"]) == 0
  assert sorted(os.listdir(tmp_path / "bin" / "train")) == ["beta_thalassemia", "healthy"]
  # The trainer reads the prepared folder as the paper's fixed split.
  layout, _classes, rows = splits.scan(str(tmp_path / "bin"), show_progress=False)
  assert layout == "folders" and sum(r.split == "test" for r in rows) == 60


# == calibration =======================================================================================================
def test_calibration_lowers_ece_of_an_over_confident_model():
  rng = np.random.default_rng(0)

  def logits(n):
    y = rng.integers(0, 3, n)
    z = rng.normal(0, 1, (n, 3))
    z[np.arange(n), y] += 1.0
    return 6.0 * z, y  # Right ~65% of the time, with near-one-hot softmaxes.
  (held, y_held), (test, y_test) = logits(400), logits(400)
  cal = calibration.fit("temperature", held, y_held, 3)
  before, after = calibration.softmax(test), cal(test)
  assert cal.params["temperature"] > 2 and not cal.params["at_bound"]
  assert calibration.ece(after, y_test) < 0.5 * calibration.ece(before, y_test)
  assert calibration.brier(after, y_test) < calibration.brier(before, y_test)
  assert (after.argmax(1) == before.argmax(1)).all()  # Temperature never changes the decision.
  # A held-out set that is all confidently right cannot calibrate: no sharpening to T = 0.1, T stays 1.
  perfect = calibration.fit("temperature", np.eye(3)[y_held] * 8.0, y_held, 3)
  assert perfect.kind == "none" and "nothing to calibrate" in perfect.describe()
  np.testing.assert_allclose(perfect(test), calibration.softmax(test))
  # Platt scaling of binary SVM margins in the folded (-m, m) form.
  y = rng.integers(0, 2, 600)
  m = 5.0 * (rng.normal(0, 1, 600) + (2 * y - 1) * 0.8)
  margins = np.stack([-m, m], 1)
  platt = calibration.fit("platt", margins[:300], y[:300], 2)
  assert calibration.ece(platt(margins[300:]), y[300:]) < 0.5 * calibration.ece(calibration.softmax(
      margins[300:]), y[300:])
  assert calibration.fit("temperature", held[:0], y_held[:0], 3).kind == "none"


# == FLOPs =============================================================================================================
@pytest.mark.parametrize("backbone,paper_g", [("vgg16", 15.47), ("vgg_face", 15.47),
                                              pytest.param("resnet50_vggface2", 3.87, marks=pytest.mark.slow),
                                              pytest.param("senet50_vggface2", 3.88, marks=pytest.mark.slow)])
def test_flops_match_the_papers_table(backbone, paper_g):
  cost = flops.forward_cost(backbone, 224, 2)  # Traced and compiled from abstract shapes: nothing runs.
  print(f"{backbone}: {cost['macs'] / 1e9:.3f} G multiply-adds (paper {paper_g} G), "
        f"XLA {cost['xla_flops'] / 1e9:.2f} G")
  assert cost["macs"] / 1e9 == pytest.approx(paper_g, rel=0.006)
  # XLA counts 2 per multiply-add without the taps on zero padding: a few % under 2 x MACs (flops.py).
  assert 0.95 < cost["xla_flops"] / (2 * cost["macs"]) < 1.0


@pytest.mark.slow
def test_torchvision_resnet50_costs_more_than_the_papers():
  assert flops.forward_cost("resnet50", 224, 2)["macs"] / 1e9 == pytest.approx(4.09, rel=0.01)


# == dsift, report table, confounds ====================================================================================
@pytest.fixture(scope="module")
def dsift_runs(toy_dir, tmp_path_factory):
  """Two finished dense SIFT runs (linear, chi2) on the toy folder, the first with a metadata CSV."""
  base = tmp_path_factory.mktemp("dsift")
  meta = base / "meta.csv"
  with open(meta, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["file", "ethnicity", "sex"])
    for cls in sorted(os.listdir(toy_dir)):
      for i, name in enumerate(sorted(os.listdir(toy_dir / cls))):
        w.writerow([f"{cls}/{name}", {"a_circle": "X", "b_square": "Y"}.get(cls, "Z"), "FM"[i % 2]])
  out = {}
  for kernel in ("linear", "chi2"):
    c = small_config(toy_dir, method="dsift", **{"dsift.kernel": kernel, "dsift.vocabulary": 32})
    c.eval.paper_row = f"dsift_{kernel}/binary"
    if kernel == "linear":
      c.eval.metadata = str(meta)
    out[kernel] = (str(base / kernel), train.run(c, str(base / kernel)))
  return out


def test_dsift_baseline_learns_the_toy_shapes(dsift_runs):
  for kernel, (workdir, m) in dsift_runs.items():
    assert m["accuracy"]["value"] >= 0.8, (kernel, m["accuracy"])
    assert m["calibration"]["method"] == "platt"
    assert os.path.exists(os.path.join(workdir, "dsift_model.npz"))


def test_confounds_warn_for_an_attribute_that_predicts_the_label(dsift_runs):
  m = dsift_runs["linear"][1]
  attrs = m["confounds"]["attributes"]
  assert attrs["ethnicity"]["attribute_only_accuracy"] == 1.0 and attrs["ethnicity"]["chi2_p"] < 1e-6
  assert attrs["sex"]["attribute_only_accuracy"] <= attrs["sex"]["majority_rate"]
  warnings = m["confounds"]["warnings"]
  assert len(warnings) == 1 and warnings[0].startswith("ethnicity")
  md = open(os.path.join(dsift_runs["linear"][0], "report", "report.md")).read()
  assert "## Confounds" in md and "| X |" in md


def test_report_table_renders_two_finished_runs(dsift_runs, tmp_path, capsys):
  out = tmp_path / "results"
  assert report.main([d for d, _ in dsift_runs.values()] + [str(tmp_path / "missing"), "--out", str(out)]) == 0
  md = (tmp_path / "results.md").read_text()
  assert "DSIFT + SVM linear" in md and "DSIFT + SVM chi2" in md
  assert "71.7 / 67.6 / 83.3 / 60.0 / 74.6" in md  # The paper's Table 3 row beside ours.
  rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
  assert len(rows) == 2 and rows[0]["paper_accuracy"] == "71.7"
  assert float(rows[0]["accuracy_low"]) <= float(rows[0]["accuracy"]) <= float(rows[0]["accuracy_high"])
  assert "skipped" in capsys.readouterr().err


# == cross-validation ==================================================================================================
def _cv_cmd(workdir, data, *args):
  return [sys.executable, "-m", "jfacediag.cv", "--config", f"{REPO}/configs/toy.py:method=dsift", "--workdir",
          str(workdir), "--folds", "5", "--repeats", "1", "--config.data.generate=", f"--config.data.dir={data}",
          "--config.model.input_size=32", "--config.dsift.vocabulary=16", *args]


def _cv(workdir, data, *args):
  r = subprocess.run(_cv_cmd(workdir, data, *args), capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                     timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r.stdout


@pytest.mark.slow
def test_cv_partitions_never_tests_on_training_images_and_resumes_after_a_kill(tmp_path):
  data = tmp_path / "data"
  toy.make_folder(str(data), num_classes=3, per_class=15, size=32, seed=2)
  wd = tmp_path / "cv"
  proc = subprocess.Popen(_cv_cmd(wd, data), env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and len(list(wd.glob("folds/*/cv_fold_done.json"))) < 2:
    time.sleep(0.02)
  proc.kill()  # SIGKILL: no chance to clean up.
  proc.wait()
  killed_after = len(list(wd.glob("folds/*/cv_fold_done.json")))
  assert 2 <= killed_after < 5, killed_after
  first = (wd / "folds" / "r00_f0" / "report" / "metrics.json").stat().st_mtime_ns
  out = _cv(wd, data, "--parallel", "2", "--max_folds", "2")  # Two of the missing folds, in 2 processes ...
  assert f"{killed_after} of 5 folds already done; running {min(2, 5 - killed_after)}" in out
  out = _cv(wd, data)  # ... then the rest, here.
  assert f"{min(5, killed_after + 2)} of 5 folds already done" in out
  assert (wd / "folds" / "r00_f0" / "report" / "metrics.json").stat().st_mtime_ns == first  # Never rerun.
  res = json.loads((wd / "cv.json").read_text())
  assert res["finished"] == 5
  tested = []
  for f in range(5):
    rows, _, _ = splits.read(str(wd / "folds" / f"r00_f{f}"))
    test = {r.file for r in rows if r.split == "test"}
    assert test and not test & {r.file for r in rows if r.split == "train"}
    tested += sorted(test)
  assert len(tested) == len(set(tested)) == 45  # The fold test sets partition the data.
  acc = res["summary"]["accuracy"]
  assert acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1] and acc["folds"] == 5
  assert res["ensemble"]["images"] == 45 and "Fold ensemble" in (wd / "cv.md").read_text()
  assert all(json.loads((wd / "folds" / f"r00_f{f}" / "config.json").read_text())["svm"]["select_C"]
             for f in range(5))  # C chosen by inner CV on the training fold.


def test_cv_finetune_folds_select_on_an_inner_validation_split(toy_dir, tmp_path):
  """DTL1 folds hold out part of the training fold for the epoch (best checkpoint) and calibration."""
  from jfacediag import cv  # pylint: disable=g-import-not-at-top
  base = small_config(toy_dir)
  tested = []
  for f in range(3):
    c = cv.fold_config(base, str(toy_dir), 1, f, 3, 0.2, "")
    assert c.train.report_checkpoint == "best" and c.data.val_fraction == 0.2 and c.data.split_seed == 1
    rows, _, _ = dataset.load_split(c, str(toy_dir), str(tmp_path / f"f{f}"))
    by = {s: {r.file for r in rows if r.split == s} for s in ("train", "val", "test")}
    assert by["val"] and by["train"] and not (by["test"] & (by["train"] | by["val"])) and not by["val"] & by["train"]
    tested += sorted(by["test"])
  assert len(tested) == len(set(tested)) == 108


# == leakage guard =====================================================================================================
@pytest.fixture(scope="module")
def faces():
  """Distinct people (LFW subset faces, upsampled), a duplicate pair and two different shots of one person."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  lfw = data.lfw_subset()[:12]
  people = [np.asarray(Image.fromarray((255 * f).astype(np.uint8)).resize((100, 100), Image.BICUBIC).convert("RGB"))
            for f in lfw]
  dup = io.BytesIO()  # The duplicate: a re-encoded (JPEG 60) and resized (70%) copy of person 0.
  Image.fromarray(people[0]).resize((70, 70), Image.BILINEAR).save(dup, "JPEG", quality=60)
  astro = data.astronaut()
  shot_a = astro[30:230, 140:320]  # Eileen Collins, head and shoulders ...
  shot_b = np.asarray(Image.fromarray(astro[0:300, 60:400]).rotate(8, resample=Image.BILINEAR)
                      .resize((200, 176)))  # ... and a wider, rotated, rescaled shot.
  return {"people": people, "dup": dup.getvalue(), "shot_a": shot_a, "shot_b": shot_b}


def _face_folder(root, faces, layout):
  """Class `a` holds person 0, its duplicate and the two astronaut shots; the rest are spread over a and b."""
  def put(rel, img):
    os.makedirs(os.path.dirname(root / rel), exist_ok=True)
    (root / rel).write_bytes(img) if isinstance(img, bytes) else Image.fromarray(img).save(root / rel)
  tr, te = ("train/", "test/") if layout == "folders" else ("", "")
  put(f"{tr}a/p00.png", faces["people"][0])
  put(f"{te}a/p00_copy.jpg", faces["dup"])
  put(f"{tr}a/astro_1.png", faces["shot_a"])
  put(f"{te}a/astro_2.png", faces["shot_b"])
  for i, img in enumerate(faces["people"][1:], 1):
    put(f"{(tr, te)[i % 2]}{'ab'[i % 2]}/p{i:02d}.png", img)


def _leak_config(root, **kw):
  c = small_config(root, method="svm", **kw)
  c.leakage.embedder = "builtin:sface"
  return c


@pytest.mark.slow
def test_leakage_guard_finds_planted_duplicate_and_same_photo_pair(faces, tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "cache"))
  root = tmp_path / "fixed"
  _face_folder(root, faces, "folders")
  rows, _, leak = dataset.load_split(_leak_config(root, **{"data.split": "auto"}), str(root), str(tmp_path / "wd"))
  cross = {frozenset((p["a"], p["b"])): p for p in leak["top_cross_split"]}
  print("\n".join(leakage.summary_lines(leak)))
  assert cross[frozenset(("test/a/p00_copy.jpg", "train/a/p00.png"))]["kind"] == "near"
  # Two crops of one photo (the second wider, rotated 8 degrees, rescaled): the same photo, not just one person.
  same = cross[frozenset(("test/a/astro_2.png", "train/a/astro_1.png"))]
  assert same["kind"] == "same_photo" and same["inliers"] >= 15 and same["score"] >= 0.5
  assert not any(p["kind"] in ("same_person", "same_photo") and "astro" not in p["a"] for p in cross.values()), cross
  assert leak["cross_split"]["near"] == 1 and leak["cross_split"]["same_photo"] == 1
  for name in (leakage.LEAKAGE_FILE, leakage.PAIRS_FILE, leakage.SHEET_FILE):
    assert os.path.exists(tmp_path / "wd" / name), name

  # A flat folder split at random: group_by=identity keeps both pairs on one side for every seed; without it some
  # seed separates them (the check can fail).
  flat = tmp_path / "flat"
  _face_folder(flat, faces, "flat")
  separated = False
  for seed in range(4):
    kw = {"data.split": "fraction", "data.test_fraction": 0.5, "data.split_seed": seed,
          "leakage.cache": str(tmp_path / "pairs.json.gz")}
    rows, _, leak = dataset.load_split(_leak_config(flat, **kw, **{"data.group_by": "identity"}), str(flat),
                                     str(tmp_path / f"g{seed}"))
    where = {r.file: r.split for r in rows}
    assert where["a/p00.png"] == where["a/p00_copy.jpg"] and where["a/astro_1.png"] == where["a/astro_2.png"]
    assert not sum(leak["cross_split"].values())
    rows, _, leak = dataset.load_split(_leak_config(flat, **kw), str(flat), str(tmp_path / f"n{seed}"))
    separated |= bool(sum(leak["cross_split"].values()))
  assert separated
