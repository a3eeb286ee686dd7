"""python -m jfacediag.predict: the evaluation's numbers for the same files, flags, Grad-CAM, occlusion, regions."""
import csv
import json
import os

import numpy as np
from PIL import Image
import pytest

from conftest import small_config
from jfacediag import explain, predict, train


def _report_scores(workdir):
  with open(os.path.join(workdir, "report", "predictions.csv"), newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return {r["file"]: [float(v) for k, v in r.items() if k.startswith("score_")] for r in rows}


@pytest.fixture(scope="module")
def finetune_run(toy_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ft"))
  train.run(small_config(toy_dir, epochs=2.0), workdir)
  return workdir


def test_predictions_for_a_folder_match_the_evaluation(finetune_run, toy_dir, tmp_path):
  want = _report_scores(finetune_run)
  files = [os.path.join(str(toy_dir), f) for f in sorted(want)]
  out = tmp_path / "preds"
  assert predict.main(["--run", finetune_run, "--images", *files, "--out", str(out), "--align", "none",
                       "--batch", "16"]) == 0
  with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
    got = {os.path.relpath(r["source"], str(toy_dir)): r for r in csv.DictReader(f)}
  assert len(got) == len(want) == 36
  for name, scores in want.items():
    probs = [float(got[name][k]) for k in got[name] if k.startswith("prob_")]
    np.testing.assert_allclose(probs, scores, atol=1e-5)
  meta = json.loads((out / "predictions.json").read_text())
  assert meta["calibration"].startswith("none") and "not a medical device" in meta["note"]


@pytest.mark.slow
def test_no_face_is_flagged_and_unreadable_is_reported(finetune_run, toy_dir, tmp_path, capsys):
  photo = os.path.join(str(toy_dir), "a_circle", "0000.png")
  junk = tmp_path / "junk.jpg"
  junk.write_text("not an image")
  out = tmp_path / "preds"
  assert predict.main(["--run", finetune_run, "--images", photo, str(junk), "--out", str(out), "--align",
                       "arcface112", "--explain"]) == 0
  rows = list(csv.DictReader(open(out / "predictions.csv", newline="", encoding="utf-8")))
  assert rows[0]["no_face"] == "1" and rows[0]["top_class"] and rows[1]["error"] and not rows[1]["top_class"]
  printed = capsys.readouterr().out
  assert "NO FACE FOUND" in printed and "unreadable" in printed and "not a medical device" in printed
  assert len(list((out / "explain").glob("*_gradcam.png"))) == 1  # Maps, but no regions without landmarks.
  assert not (out / "regions.csv").exists()


def _quadrant_folder(root, per_class=40, size=64, seed=0):
  """Two classes that differ only by the colour of a square inside the top-left quadrant; a grey square of the same
  size sits in another quadrant of every image, so 'where an object is' does not locate the signal."""
  rng = np.random.default_rng(seed)
  for name, colour in (("a_red", (230, 40, 40)), ("b_blue", (40, 40, 230))):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      img = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
      y, x = rng.integers(6, size // 2 - 18, 2)  # Well inside the quadrant: 6..13 + 12 px at 64 px.
      img[y:y + 12, x:x + 12] = colour
      qy, qx = [(0, 1), (1, 0), (1, 1)][rng.integers(3)]
      y, x = rng.integers(6, size // 2 - 18, 2) + [qy * size // 2, qx * size // 2]
      img[y:y + 12, x:x + 12] = 128
      Image.fromarray(img).save(os.path.join(root, name, f"{i}.png"))


@pytest.mark.slow
def test_gradcam_and_occlusion_find_the_region_that_holds_the_signal(tmp_path):
  data = tmp_path / "data"
  _quadrant_folder(str(data))
  cfg = small_config(data, epochs=8.0, size=64, **{"data.train_per_class": 28, "data.test_per_class": 12,
                                                   "input.random_resized_crop": False, "input.flip": False})
  result = train.run(cfg, str(tmp_path / "wd"))
  assert result["accuracy"]["value"] >= 0.9
  run = predict.load_run(str(tmp_path / "wd"))
  rows = [{"source": f, "input": os.path.join(str(data), f), "no_face": 0, "error": "", "landmarks": None}
          for f in sorted(_report_scores(str(tmp_path / "wd")))]
  predict.predict_rows(run, rows, 16, 0.6)
  predict.explain_rows(run, rows, str(tmp_path / "out"), "predicted", 8, stride=4)
  cam_share = [r["maps"][r["top_class"]]["gradcam"][:32, :32].sum() / r["maps"][r["top_class"]]["gradcam"].sum()
               for r in rows]
  occ = [np.clip(r["maps"][r["top_class"]]["occlusion"], 0, None) for r in rows]
  occ_share = [o[:32, :32].sum() / max(o.sum(), 1e-9) for o in occ]
  print(f"Grad-CAM mass in the signal quadrant: mean {np.mean(cam_share):.2f}; occlusion: {np.mean(occ_share):.2f}")
  assert np.mean(cam_share) > 0.5 and np.mean(occ_share) > 0.5  # A quarter of the image; chance is 0.25.


@pytest.mark.slow
def test_regions_partition_a_template_face_and_svm_runs_explain_through_the_svm(toy_dir, tmp_path):
  masks = explain.region_masks(explain.template_landmarks(112), 112, 112)
  areas = {k: int(m.sum()) for k, m in masks.items()}
  assert set(areas) == set(explain.REGIONS) and min(areas.values()) > 50
  assert int(sum(m.astype(int) for m in masks.values()).max()) == 1  # No pixel in two regions.
  assert masks["eyes"][51, 38] and masks["mouth"][92, 56] and masks["forehead"][25, 56] and masks["nose"][71, 56]
  # DTL2: the head holds the folded SVM, so Grad-CAM differentiates its decision function (the margins).
  cfg = small_config(toy_dir, method="svm", size=64, **{"svm.select_C": False, "model.backbone": "resnet_tiny"})
  train.run(cfg, str(tmp_path / "svm"))
  run = predict.load_run(str(tmp_path / "svm"))
  want = _report_scores(str(tmp_path / "svm"))
  files = sorted(want)[:3]
  gradcam = explain.make_gradcam(run.model, run.variables, run.spec.cam_layer, (1, 64, 64, 3))
  x = np.stack([next(predict._batches([os.path.join(str(toy_dir), f)], run.pp, 1))[0][0] for f in files])
  cams, margins = gradcam(x, np.asarray([np.argmax(want[f]) for f in files], np.int32))
  np.testing.assert_allclose(np.asarray(margins), [want[f] for f in files], atol=1e-4)
  cams = np.asarray(cams)
  assert np.isfinite(cams).all() and cams.max() > 0
  rows = [{"source": f, "input": os.path.join(str(toy_dir), f), "no_face": 0, "error": "",
           "landmarks": explain.template_landmarks(64).tolist()} for f in files]
  predict.predict_rows(run, rows, 4, 0.6)
  table = predict.explain_rows(run, rows, str(tmp_path / "out"), "predicted", 16, ["x"] * len(rows))
  assert len(table) == 3 * len(explain.REGIONS)
  assert all(0 <= t["cam_share"] <= 1 for t in table)
  agg = predict.write_by_class(str(tmp_path / "out"), table)
  assert len(agg) == len(explain.REGIONS) and (tmp_path / "out" / "regions_by_class.png").exists()


@pytest.mark.slow
def test_photos_unlike_the_training_data_are_flagged(finetune_run, toy_dir, tmp_path, capsys):
  from skimage import data  # pylint: disable=g-import-not-at-top
  Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
  rows = list(csv.DictReader(open(os.path.join(finetune_run, "manifest.csv"), newline="", encoding="utf-8")))
  test = [os.path.join(str(toy_dir), r["file"]) for r in rows if r["split"] == "test"][:6]
  trained = [os.path.join(str(toy_dir), r["file"]) for r in rows if r["split"] == "train"][:1]
  copy = tmp_path / "copy_of_a_training_image.png"  # Another name and container, the same pixels.
  Image.open(trained[0]).save(copy)
  out = tmp_path / "preds"
  assert predict.main(["--run", finetune_run, "--images", *test, str(tmp_path / "astronaut.png"), str(copy),
                       "--out", str(out), "--align", "none", "--explain"]) == 0
  got = {os.path.basename(r["source"]): r for r in csv.DictReader(open(out / "predictions.csv", encoding="utf-8"))}
  print({k: (r["far_from_training"], r["far_reason"], r["seen_in_training"], r["nearest_train_cosine"])
         for k, r in got.items()})
  seen = got[copy.name]
  assert seen["seen_in_training"] == "1" and "the same pixels as training image" in seen["seen_reason"]
  assert all(got[os.path.basename(f)]["seen_in_training"] == "0" for f in test)  # Test images were never trained on.
  assert got["astronaut.png"]["far_from_training"] == "1" and "outside the training images'" in got[
      "astronaut.png"]["far_reason"]
  assert sum(got[os.path.basename(f)]["far_from_training"] == "1" for f in test) <= 1  # The run's own kind of image.
  said = capsys.readouterr().out
  assert "FAR FROM THE TRAINING DATA" in said and "IN THE RUN'S TRAINING DATA (the same pixels" in said
  assert len(list((out / "explain").glob("*_gradcam.png"))) == len(test) + 2
