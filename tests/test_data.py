import os

import jax
import numpy as np
from PIL import Image
import pytest

import badfiles
from jfacediag import base_config
from jfacediag.data import images, pipeline, splits, toy
from jfacediag.models.preprocessing import Preprocessing


def data_cfg(**kw):
  c = base_config.get_config().data
  c.update(kw)
  return c


# == images ============================================================================================================
def test_load_rgb_handles_every_awkward_file(tmp_path):
  _unreadable, readable = badfiles.write_all(str(tmp_path))
  for name, reason in badfiles.UNREADABLE.items():
    with pytest.raises(images.UnreadableImage, match=reason):
      images.load_rgb(str(tmp_path / name))
  for name in readable:
    arr = images.load_rgb(str(tmp_path / name))
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
  # EXIF orientation 6: a 60x40 (WxH) file displays as 40x60.
  assert images.load_rgb(str(tmp_path / "exif_rotated.jpg")).shape == (60, 40, 3)
  # 16-bit grey is rescaled, not clipped: the ramp spans 0..255.
  ramp = images.load_rgb(str(tmp_path / "sixteen_bit.png"))
  assert ramp.min() == 0 and ramp.max() == 255 and len(np.unique(ramp)) > 200
  # Half-transparent RGBA is composited onto black: every channel about halves.
  src = np.asarray(Image.open(tmp_path / "alpha.png"))[..., :3].astype(float)
  got = images.load_rgb(str(tmp_path / "alpha.png")).astype(float)
  assert np.abs(got - src * 128 / 255).max() <= 1.0
  gray = images.load_rgb(str(tmp_path / "grayscale.png"))
  assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


# == scan and splits ===================================================================================================
def test_scan_reports_unreadable_images_and_counts_non_image_files(tmp_path, capsys):
  toy.make_folder(str(tmp_path), num_classes=2, per_class=5, size=24)
  badfiles.write_all(str(tmp_path / "a_circle"))
  (tmp_path / "b_square" / "notes.txt").write_text("hello")
  (tmp_path / "b_square" / "README.md").write_text("# about these photos")
  (tmp_path / "b_square" / ".DS_Store").write_text("x")
  layout, classes, rows = splits.scan(str(tmp_path), show_progress=True)
  assert layout == "flat" and classes == ["a_circle", "b_square"]
  skipped = {r.file: r.reason for r in rows if r.split == "skipped"}
  assert set(skipped) == {f"a_circle/{n}" for n in badfiles.UNREADABLE}  # Unreadable images, not the README.
  assert len(rows) == 10 + len(badfiles.UNREADABLE) + len(badfiles.READABLE)
  out = capsys.readouterr()
  line = [s for s in (out.out + out.err).splitlines() if s.startswith("Ignored")]
  assert line == ["Ignored 2 file(s) in the class folders that are not images by their extension: "
                  "b_square/README.md, b_square/notes.txt."]


def test_class_with_no_readable_image_is_an_error(tmp_path):
  toy.make_folder(str(tmp_path), num_classes=2, per_class=3, size=24)
  os.makedirs(tmp_path / "c_empty")
  open(tmp_path / "c_empty" / "x.jpg", "wb").close()
  with pytest.raises(ValueError, match="c_empty"):
    splits.scan(str(tmp_path), show_progress=False)


def test_classes_must_match_folders(tmp_path):
  toy.make_folder(str(tmp_path), num_classes=2, per_class=3, size=24)
  with pytest.raises(ValueError, match=r"- z_missing.*\n\+ b_square"):
    splits.scan(str(tmp_path), classes=["a_circle", "z_missing"], show_progress=False)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
  root = tmp_path_factory.mktemp("split")
  toy.make_folder(str(root), num_classes=3, per_class=20, size=16)
  return splits.scan(str(root), show_progress=False)


def _assign(scanned, **kw):
  layout, classes, rows = scanned
  rows = [splits.Row(r.file, r.class_name, r.split) for r in rows]
  splits.assign(rows, classes, layout, data_cfg(**kw))
  return rows


def _counts(rows, split):
  return {c: sum(r.class_name == c and r.split == split for r in rows) for c in {r.class_name for r in rows}}


def test_per_class_split_counts_and_determinism(scanned):
  rows = _assign(scanned, split="per_class", train_per_class=12, test_per_class=6, split_seed=3)
  assert set(_counts(rows, "train").values()) == {12} and set(_counts(rows, "test").values()) == {6}
  assert set(_counts(rows, "unused").values()) == {2}
  again = _assign(scanned, split="per_class", train_per_class=12, test_per_class=6, split_seed=3)
  other = _assign(scanned, split="per_class", train_per_class=12, test_per_class=6, split_seed=4)
  assert [r.split for r in rows] == [r.split for r in again] != [r.split for r in other]
  with pytest.raises(ValueError, match="has 20 readable images"):
    _assign(scanned, split="per_class", train_per_class=15, test_per_class=6)


def test_fraction_and_val_splits(scanned):
  rows = _assign(scanned, split="fraction", test_fraction=0.25, val_fraction=0.2)
  assert set(_counts(rows, "test").values()) == {5}
  assert set(_counts(rows, "val").values()) == {3} and set(_counts(rows, "train").values()) == {12}


def test_kfold_partitions_stratified(scanned):
  seen = []
  for fold in range(4):
    rows = _assign(scanned, split="kfold", num_folds=4, fold=fold, split_seed=0)
    assert set(_counts(rows, "test").values()) == {5}
    seen += [r.file for r in rows if r.split == "test"]
  assert len(seen) == len(set(seen)) == 60  # Every image is tested exactly once over the folds.
  with pytest.raises(ValueError, match="fold=4"):
    _assign(scanned, split="kfold", num_folds=4, fold=4)


def test_presplit_folders_are_used_as_they_are(tmp_path):
  for part, n in (("train", 4), ("test", 2)):
    toy.make_folder(str(tmp_path / part), num_classes=2, per_class=n, size=16)
  layout, classes, rows = splits.scan(str(tmp_path), show_progress=False)
  settings = splits.assign(rows, classes, layout, data_cfg(split="auto"))
  assert layout == "folders" and settings["strategy"] == "folders"
  assert sum(r.split == "train" for r in rows) == 8 and sum(r.split == "test" for r in rows) == 4


def test_kfold_on_presplit_folders_keeps_test_as_holdout(tmp_path):
  for part, n in (("train", 10), ("test", 4)):
    toy.make_folder(str(tmp_path / part), num_classes=2, per_class=n, size=16)
  layout, classes, rows = splits.scan(str(tmp_path), show_progress=False)
  tested = []
  for fold in range(5):
    fresh = [splits.Row(r.file, r.class_name, r.split) for r in rows]
    settings = splits.assign(fresh, classes, layout, data_cfg(split="kfold", num_folds=5, fold=fold))
    assert settings["kfold_on"] == "train"
    assert {r.file for r in fresh if r.split == "holdout"} == {r.file for r in rows if r.file.startswith("test/")}
    tested += [r.file for r in fresh if r.split == "test"]
    assert all(f.startswith("train/") for f in tested)
  assert len(tested) == len(set(tested)) == 20
  fresh = [splits.Row(r.file, r.class_name, r.split) for r in rows]
  splits.assign(fresh, classes, layout, data_cfg(split="kfold", num_folds=4, kfold_on="all"))
  assert sum(r.split == "test" for r in fresh) == 7 and not any(r.split == "holdout" for r in fresh)


def test_manifest_round_trip_and_settings_check(tmp_path, scanned):
  layout, classes, _ = scanned
  rows = _assign(scanned, split="per_class", train_per_class=12, test_per_class=6)
  settings = splits.settings_for(data_cfg(split="per_class", train_per_class=12, test_per_class=6), layout)
  splits.write(str(tmp_path), rows, settings, classes)
  rows2, settings2, classes2 = splits.read(str(tmp_path))
  assert [(r.file, r.split) for r in rows2] == [(r.file, r.split) for r in rows] and classes2 == classes
  splits.check_same_settings(settings2, settings)
  changed = splits.settings_for(data_cfg(split="per_class", train_per_class=10, test_per_class=6), layout)
  with pytest.raises(ValueError, match="train_per_class"):
    splits.check_same_settings(settings2, changed)


# == pipeline ==========================================================================================================
PP = Preprocessing(16, 16, "RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _solid_folder(root, colours):
  files = []
  for i, col in enumerate(colours):
    name = f"{i:02d}.png"
    Image.fromarray(np.full((20, 30, 3), col, np.uint8)).save(os.path.join(root, name))
    files.append(name)
  return files


@pytest.mark.slow
def test_eval_batches_pad_and_mask_never_drop(tmp_path):
  files = _solid_folder(str(tmp_path), [(i * 10, 0, 0) for i in range(7)])
  labels = np.arange(7, dtype=np.int32)
  steps, it = pipeline.eval_batches(str(tmp_path), files, labels, PP, global_batch=4)
  batches = list(it)
  assert steps == len(batches) == 2
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert index.tolist() == [0, 1, 2, 3, 4, 5, 6, -1] and mask.tolist() == [1] * 7 + [0]
  red = np.concatenate([b["image"][:, 8, 8, 0] for b in batches])
  np.testing.assert_allclose(red[:7], np.arange(7) * 10, atol=0.5)


def test_normalisation_and_channel_order(tmp_path):
  files = _solid_folder(str(tmp_path), [(200, 100, 50)])
  pp = Preprocessing(16, 16, "BGR", (10.0, 20.0, 30.0), (2.0, 4.0, 5.0))
  _, it = pipeline.eval_batches(str(tmp_path), files, np.zeros(1, np.int32), pp, global_batch=1)
  px = next(it)["image"][0, 5, 5]
  np.testing.assert_allclose(px, [(50 - 10) / 2, (100 - 20) / 4, (200 - 30) / 5], atol=1e-3)


def test_train_stream_is_a_function_of_the_step(tmp_path):
  files = _solid_folder(str(tmp_path), [(i * 20, 5, 5) for i in range(10)])
  labels = np.arange(10, dtype=np.int32)
  cfg = base_config.get_config().input
  full = list(pipeline.train_batches(str(tmp_path), files, labels, PP, cfg, 4, seed=7, start_step=0, num_steps=6))
  tail = list(pipeline.train_batches(str(tmp_path), files, labels, PP, cfg, 4, seed=7, start_step=3, num_steps=3))
  for a, b in zip(full[3:], tail):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["image"], b["image"])  # Augmentation replays exactly.
  seen = np.concatenate([b["label"] for b in full])
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # Epochs are permutations.
  assert jax.process_count() == 1
