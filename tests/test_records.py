"""Aligned faces as a TFDS dataset of TFRecord shards (jfacediag.data.build, data/records.py): what it writes, that
TFDS reads it, that the training stream is a pure function of the step read by TensorFlow ops, and that a run on it
equals the folder's checks (split, classes, leakage, alignment), locally and through TensorFlow's ram:// files."""
import csv
import io
import json
import os
import shutil

import numpy as np
import pytest

from conftest import lfw_folder, small_config
from jfacediag import build, dataset, predict, train
from jfacediag.align import folder as aligner
from jfacediag.data import images, pipeline, records
from jfacediag.models.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
  """24 LFW faces and 24 non-face patches (scikit-image's LFW subset), aligned arcface112 with centre fallbacks."""
  raw = lfw_folder(tmp_path_factory, 24)
  (raw / "face" / "broken.png").write_bytes(b"not a png")
  out = tmp_path_factory.mktemp("aligned") / "a"
  aligner.align(str(raw), str(out), aligner.Options(style="arcface112", fallback="center"))
  return out


@pytest.fixture(scope="module")
def built(aligned, tmp_path_factory):
  out = tmp_path_factory.mktemp("records") / "ds"
  index = build.build(str(aligned), str(out), shard_size=10)
  return out, index


def test_the_builder_writes_shards_tfds_loads_with_every_face_and_its_facts(aligned, built):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  out, index = built
  assert index["classes"] == ["face", "non_face"] and len(index["records"]) == 48 and index["style"] == "arcface112"
  assert len(index["shards"]) == 5 and index["shard_lengths"] == [10, 10, 10, 10, 8]
  assert [s[0] for s in index["skipped"]] == ["[not aligned] face/broken.png"]
  ds = tfds.builder_from_directory(str(out)).as_dataset(split="faces")
  seen = {}
  for ex in ds.as_numpy_iterator():
    seen[ex["file"].decode()] = ex
  assert sorted(seen) == sorted(r[0] for r in index["records"])
  f = "non_face/005.png"
  np.testing.assert_array_equal(seen[f]["image"], images.load_rgb(os.path.join(aligned, f)))  # The PNG, lossless.
  assert seen[f]["label"] == 1 and seen[f]["image"].shape == (112, 112, 3)
  fallback = {r[0] for r in index["records"] if r[5]}
  assert fallback and all(seen[g]["fallback"] == 1 for g in fallback)
  assert len({r[4] for r in index["records"]}) <= 48  # Identity groups from the leakage guard.
  with pytest.raises(ValueError, match="already holds a dataset"):
    build.build(str(aligned), str(out))
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    build.build(str(aligned / "nowhere"), str(out.parent / "x"))
  with pytest.raises(ValueError, match="not aligned by jfacediag.align .*pass --style"):
    build.build(str(aligned / "face"), str(out.parent / "y"))


def test_the_record_stream_is_a_pure_function_of_the_step_and_covers_each_epoch(aligned, built):
  out, index = built
  files = [r[0] for r in index["records"] if r[0].startswith("face/")][:20]
  loc = records.locate(str(out), files)
  order, samples = records.train_sample_order(loc, 8, 3, 0, 10)  # 80 samples: 4 epochs of 20.
  assert samples.reshape(-1).tolist() == list(range(80))  # Augmentation seeds: the sample's place in the stream.
  for e in range(4):
    assert sorted(order.reshape(-1)[20 * e:20 * (e + 1)]) == list(range(20))
  late, _ = records.train_sample_order(loc, 8, 3, 6, 4)
  np.testing.assert_array_equal(order[6:], late)
  pp = Preprocessing(112, 112, "RGB", (127.5,) * 3, (128.0,) * 3).for_crops()
  cfg = small_config("x").input
  labels = np.zeros(len(files), np.int32)
  whole = [b["image"] for b in pipeline.train_batches(str(out), files, labels, pp, cfg, 8, 3, 0, 4)]
  resumed = [b["image"] for b in pipeline.train_batches(str(out), files, labels, pp, cfg, 8, 3, 2, 2)]
  np.testing.assert_array_equal(whole[2], resumed[0])
  np.testing.assert_array_equal(whole[3], resumed[1])
  steps, it = pipeline.eval_batches(str(out), files, labels, pp, 8)
  got = [b for b in it]
  assert steps == 3 and sum(int(b["mask"].sum()) for b in got) == 20
  idx = np.concatenate([b["index"][b["mask"] > 0] for b in got])
  assert sorted(idx) == list(range(20))
  # Each eval row is the record of its index: the same pixels as the aligned PNG, preprocessed as the folder's.
  _, folder_it = pipeline.eval_batches(str(aligned), files, labels, pp, 8)
  by_index = {int(i): img for b in folder_it for i, img in zip(b["index"], b["image"]) if i >= 0}
  for b in got:
    for i, img in zip(b["index"], b["image"]):
      if i >= 0:
        np.testing.assert_allclose(img, by_index[int(i)], atol=1e-5)


def test_a_run_on_records_checks_splits_like_the_folder_and_reports_alignment(aligned, built, tmp_path):
  out, _ = built
  c = small_config(out, method="svm", epochs=1.0, size=32)
  c.data.split, c.data.test_fraction = "fraction", 0.5
  c.leakage.check = True
  result = train.run(c, str(tmp_path / "wd"))
  folder = small_config(aligned, method="svm", epochs=1.0, size=32)
  folder.data.split, folder.data.test_fraction = "fraction", 0.5
  folder.leakage.check = True
  reference = train.run(folder, str(tmp_path / "wd-folder"))
  assert result["num_test"] == reference["num_test"] == 24
  assert result["accuracy"]["value"] == pytest.approx(reference["accuracy"]["value"])
  md = (tmp_path / "wd" / "report" / "report.md").read_text()
  assert "Aligned by jfacediag.align (style arcface112" in md and "broken.png" in md
  manifest = (tmp_path / "wd" / "manifest.csv").read_text()
  assert manifest == (tmp_path / "wd-folder" / "manifest.csv").read_text()
  # predict on a records run: its training images come from the records (the far-from-training and seen checks).
  rows = list(csv.DictReader(io.StringIO(manifest)))
  trained = next(r["file"] for r in rows if r["split"] == "train" and r["file"].startswith("face/"))
  tested = next(r["file"] for r in rows if r["split"] == "test" and r["file"].startswith("face/"))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.open(aligned / trained).save(tmp_path / "copy.png")  # Another name, the same pixels.
  shutil.copy(aligned / tested, tmp_path / "test.png")
  out = tmp_path / "preds"
  assert predict.main(["--run", str(tmp_path / "wd"), "--images", str(tmp_path / "copy.png"),
                       str(tmp_path / "test.png"), "--out", str(out), "--align", "none"]) == 0
  got = {os.path.basename(r["source"]): r for r in csv.DictReader(open(out / "predictions.csv", encoding="utf-8"))}
  assert got["copy.png"]["seen_in_training"] == "1" and trained in got["copy.png"]["seen_reason"]
  assert got["test.png"]["seen_in_training"] == "0" and got["test.png"]["far_from_training"] in ("0", "1")
  # Cross-validation reads the records too: 2 folds of DTL2, every face tested once.
  from jfacediag import cv  # pylint: disable=g-import-not-at-top
  result, ok = cv.run(c, str(tmp_path / "cv"), cv.Options(folds=2, repeats=1))
  assert ok
  assert result["finished"] == result["total"] == 2
  assert sum(f["test"] for f in result["per_fold"]) == 48


def test_records_in_tensorflows_memory_file_system_train_as_a_bucket_would(aligned, tmp_path):
  url = "ram://jfacediag-test/ds"
  build.build(str(aligned), url, shard_size=16, leakage_check=False)
  assert records.is_records(url)
  c = small_config(url, method="finetune", epochs=1.0, size=32)
  c.data.split, c.data.test_fraction = "fraction", 0.5
  c.leakage.check = False
  result = train.run(c, str(tmp_path / "wd"))
  assert result["num_test"] == 24
  root = dataset.data_dir_for(c, str(tmp_path / "wd"))
  assert root == url
  log = json.loads((tmp_path / "wd" / "report" / "metrics.json").read_text())
  assert log["run"]["data_dir"] == url


def test_the_batched_augmentation_is_the_identity_at_rest_and_draws_per_step():
  from jfacediag import base_config  # pylint: disable=g-import-not-at-top
  from jfacediag.tf_import import tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 255, (3, 20, 20, 3)).astype(np.float32)
  rest = {"box": np.tile([0.0, 0.0, 1.0, 1.0], (3, 1)).astype(np.float32), "flip": np.array([False, True, False]),
          "brightness": np.zeros(3, np.float32), "contrast": np.ones(3, np.float32),
          "saturation": np.ones(3, np.float32)}
  y = records.augment_batch(tf().constant(x), rest, 20, 0.1).numpy()
  np.testing.assert_allclose(y[0], x[0], atol=1e-3)  # The whole box at the same size: every pixel kept.
  np.testing.assert_allclose(y[1], x[1][:, ::-1], atol=1e-3)  # Flipped, and only that.
  half = dict(rest, box=np.array([[0.0, 0.0, 0.5, 0.5]] * 3, np.float32))
  z = records.augment_batch(tf().constant(x), half, 10, 0.0).numpy()
  np.testing.assert_allclose(z[0], x[0, :10, :10], atol=1e-3)  # The top-left quarter, at its own size.
  cfg = base_config.get_config().input
  a = records.augment_params(cfg, 0, range(3, 5), 8)
  b = records.augment_params(cfg, 0, range(4, 5), 8)
  assert all(np.array_equal(a[k][8:], b[k]) for k in a)  # Step 4's draws do not depend on where the run started.
  area = (a["box"][:, 2] - a["box"][:, 0]) * (a["box"][:, 3] - a["box"][:, 1])
  assert (area >= cfg.rrc_min_area - 1e-6).all() and (area <= 1).all() and (a["box"] >= 0).all()


def test_raw_records_hold_the_same_pixels_and_refuse_mixed_sizes(aligned, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  out = tmp_path / "raw"
  index = build.build(str(aligned), str(out), shard_size=16, leakage_check=False, encoding="raw")
  assert index["encoding"] == "raw" and index["num_bytes"] > 48 * 112 * 112 * 3
  ex = next(e for e in tfds.builder_from_directory(str(out)).as_dataset(split="faces").as_numpy_iterator()
            if e["file"] == b"face/003.png")
  np.testing.assert_array_equal(ex["image"], images.load_rgb(os.path.join(aligned, "face/003.png")))
  files = [r[0] for r in index["records"]][:10]
  pp = Preprocessing(112, 112, "RGB", (127.5,) * 3, (128.0,) * 3).for_crops()
  labels = np.zeros(len(files), np.int32)
  got = {int(i): img for b in pipeline.eval_batches(str(out), files, labels, pp, 4)[1]
         for i, img in zip(b["index"], b["image"]) if i >= 0}
  want = {int(i): img for b in pipeline.eval_batches(str(aligned), files, labels, pp, 4)[1]
          for i, img in zip(b["index"], b["image"]) if i >= 0}
  assert sorted(got) == list(range(10)) and all(np.allclose(got[k], want[k], atol=1e-5) for k in got)
  odd = tmp_path / "odd"
  shutil.copytree(aligned, odd)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new("RGB", (100, 112)).save(odd / "face" / "000.png")
  with pytest.raises(ValueError, match="--encoding raw needs crops of one size"):
    build.build(str(odd), str(tmp_path / "odd_raw"), leakage_check=False, encoding="raw")
