"""Matching (jfacediag.match): exact ranks on a generated gallery, leave-one-out on real faces, the embedding cache,
the same-person guard, flip TTA, z-normalised ensembles and the pair figures.

Real photos: scikit-image's astronaut (several crops of one photo) and LFW subset, and face_recognition 1.3.0's test
photos (three different photos of Obama, one of Biden: pip download, cached in $JFACEDIAG_TEST_CACHE).
"""
import csv
import json
import os

import cv2
import numpy as np
from PIL import Image
import pytest
from skimage import data

from jfacediag import match


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# == Ranks against a brute-force reading of the definitions ===========================================================
def _brute(probes, gallery, labels, n_cond, exclude):
  """Per probe and condition: the best cosine over allowed cases, and the cosine to the allowed cases' centroid."""
  best = np.full((len(probes), n_cond), -np.inf)
  cent = np.full((len(probes), n_cond), -np.inf)
  for i, p in enumerate(probes):
    for c in range(n_cond):
      rows = [j for j in range(len(gallery)) if labels[j] == c and not exclude[i, j]]
      if rows:
        best[i, c] = max(float(p @ gallery[j]) for j in rows)
        m = gallery[rows].sum(0)
        cent[i, c] = float(p @ m / np.linalg.norm(m))
  return best, cent


def test_designed_gallery_gives_the_designed_ranks():
  """Gallery cases are basis vectors; each probe is a weighted sum of cases whose weights fix the exact order."""
  d, labels = 12, np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 5])
  gallery = np.eye(d, dtype=np.float32)
  conds = [f"c{k}" for k in range(6)]
  # Probe 0 is nearest to case 5 (condition 2), then case 0 (condition 0), then case 9 (condition 5), ...
  w = np.zeros((2, d), np.float32)
  w[0, [5, 0, 9, 8, 2, 6]] = [6, 5, 4, 3, 2, 1]
  w[1, [11, 3, 7]] = [3, 2, 1]
  probes = _unit(w)
  best, cent, sim = match.Ranker([gallery], labels, conds).rank([probes])
  assert np.argsort(-best[0], kind="stable").tolist() == [2, 0, 5, 4, 1, 3]
  assert best[1, 5] > best[1, 1] > best[1, 3] and best[1, [0, 2, 4]].max() == 0
  np.testing.assert_allclose(best[0, 2], 6 / np.linalg.norm(w[0]), rtol=1e-6)
  # Centroid of condition 5 (cases 9, 10, 11) for probe 0: 4 / |w| / sqrt(3).
  np.testing.assert_allclose(cent[0, 5], 4 / np.linalg.norm(w[0]) / np.sqrt(3), rtol=1e-6)
  ranker = match.Ranker([gallery], labels, conds)
  assert [g for g, _ in ranker.nearest(sim[1], 5, k=3)] == [11, 9, 10]
  rows, summary, skipped = match.evaluate([probes], np.array([0, 3]), [gallery], labels, conds)
  assert [(r["rank_nearest"], r["rank_centroid"]) for r in rows] == [(2, 2), (3, 3)] and skipped == 0
  assert summary["nearest"]["all"]["top1"]["hits"] == 0 and summary["nearest"]["all"]["top5"]["hits"] == 2
  assert summary["nearest"]["all"]["mean_rank"] == 2.5


@pytest.mark.parametrize("embedders", [1, 3])
def test_random_gallery_ranks_equal_brute_force_with_exclusions_and_blocks(embedders):
  rng = np.random.default_rng(embedders)
  n_g, n_p, n_c, d = 120, 37, 9, 16
  labels = rng.integers(0, n_c, n_g)
  labels[labels == 8] = 7  # Condition 8 has no case at all.
  gallery = [_unit(rng.normal(size=(n_g, d))).astype(np.float32) for _ in range(embedders)]
  probes = [_unit(rng.normal(size=(n_p, d))).astype(np.float32) for _ in range(embedders)]
  # Exclusion by group (person): probe 0's group holds every case of condition 3, so it has nothing to match.
  pg, gg = rng.integers(0, 12, n_p), rng.integers(0, 12, n_g)
  pg[0] = 99
  gg[labels == 3] = 99
  exclude = pg[:, None] == gg[None, :]
  y = rng.integers(0, 8, n_p)
  y[pg == 99] = 3
  # The reference: per-embedder cosines z-scored by that embedder's gallery pairs, then averaged.
  iu = np.triu_indices(n_g, 1)
  scale = [(0.0, 1.0) if embedders == 1 else ((g @ g.T)[iu].mean(), (g @ g.T)[iu].std()) for g in gallery]
  # Centroid scores average over embedders; the nearest case is taken on the averaged similarities.
  cent_ref = np.mean([(_brute(p, g, labels, n_c, exclude)[1] - m) / s
                      for g, p, (m, s) in zip(gallery, probes, scale)], axis=0)
  sims = np.mean([(p @ g.T - m) / s for g, p, (m, s) in zip(gallery, probes, scale)], axis=0)
  best_ref_all = np.stack([np.where((labels == c)[None, :] & ~exclude, sims, -np.inf).max(1) for c in range(n_c)], 1)
  best, cent, _ = match.Ranker(gallery, labels, [str(k) for k in range(n_c)]).rank(probes, exclude)
  np.testing.assert_allclose(best, best_ref_all, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cent, cent_ref, rtol=1e-5, atol=1e-5)
  assert np.isneginf(best[:, 8]).all() and np.isneginf(best[0, 3])
  rows, _, skipped = match.evaluate(probes, y, gallery, labels, [str(k) for k in range(n_c)], (pg, gg), block=5)
  assert skipped == 1 and [r["probe"] for r in rows] == list(range(1, n_p))
  for r in rows:
    i, c = r["probe"], y[r["probe"]]
    assert r["rank_nearest"] == 1 + int((best_ref_all[i] > best_ref_all[i, c]).sum())
    assert r["rank_centroid"] == 1 + int((cent_ref[i] > cent_ref[i, c]).sum())


def test_topk_intervals_are_exact_binomial_and_the_unseen_protocol_splits_by_cases():
  s = match.topk_summary([1, 1, 2, 7, 40])
  assert s["top1"]["hits"] == 2 and s["top5"]["hits"] == 3 and s["top30"]["hits"] == 4
  from scipy import stats  # pylint: disable=g-import-not-at-top
  ci = stats.binomtest(2, 5).proportion_ci(method="exact")
  assert s["top1"]["ci95_exact"] == pytest.approx([ci.low, ci.high])
  rng = np.random.default_rng(0)
  labels = np.array([0] * 20 + [1] * 3 + [2] * 2)
  g = [_unit(rng.normal(size=(25, 8))).astype(np.float32)]
  _, summary, _ = match.evaluate(g, labels, g, labels, ["big", "rare1", "rare2"], (np.arange(25), np.arange(25)),
                                 rare_max=3)
  assert summary["nearest"]["rare (<= 3 cases)"]["probes"] == 5
  assert summary["nearest"]["frequent (> 3 cases)"]["probes"] == 20


# == Cache, TTA ========================================================================================================
class _Counting:
  """A stand-in embedder (mean colour of 4x4 cells) that counts what it embeds."""
  name, key, style, size = "counting", "counting-v1", "arcface112", 32

  def __init__(self):
    self.seen = 0

  def __call__(self, crops):
    self.seen += len(crops)
    return np.stack([cv2.resize(c, (4, 4), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() + 1
                     for c in crops])


def _photos(root, n, seed=0):
  rng = np.random.default_rng(seed)
  files = []
  for i in range(n):
    files.append(os.path.join(root, f"{i:03d}.png"))
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(files[-1])
  return files


def test_cache_embeds_only_new_photos_and_is_keyed_by_content(tmp_path):
  files = _photos(tmp_path, 6)
  emb, aligner, cache = _Counting(), match.Aligner("none"), str(tmp_path / "cache")
  first, reasons, new = match.embed_files(files[:4], emb, aligner, "none", cache, show_progress=False)
  assert new == 4 and emb.seen == 4 and not reasons
  again, _, new = match.embed_files(files, emb, aligner, "none", cache, show_progress=False)
  assert new == 2 and emb.seen == 6
  np.testing.assert_array_equal(again[:4], first)
  os.rename(files[0], str(tmp_path / "renamed.png"))  # Same content, new name: still cached.
  _, _, new = match.embed_files([str(tmp_path / "renamed.png")], emb, aligner, "none", cache, show_progress=False)
  assert new == 0
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(files[1])  # Changed content: embedded again.
  _, _, new = match.embed_files([files[1]], emb, aligner, "none", cache, show_progress=False)
  assert new == 1
  _, _, new = match.embed_files(files[1:3], emb, aligner, "flip", cache, show_progress=False)  # Another TTA: new key.
  assert new == 2
  (tmp_path / "broken.jpg").write_bytes(b"not an image")
  out, reasons, _ = match.embed_files([str(tmp_path / "broken.jpg"), files[2]], emb, aligner, "none", cache,
                                      show_progress=False)
  assert np.isnan(out[0]).all() and np.isfinite(out[1]).all() and "unreadable" in reasons[str(tmp_path / "broken.jpg")]


@pytest.mark.slow
def test_flip_tta_gives_a_photo_and_its_mirror_identical_embeddings(tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "jcache"))
  crop = cv2.resize(data.astronaut()[30:250, 140:330], (112, 112), interpolation=cv2.INTER_AREA)
  Image.fromarray(crop).save(tmp_path / "a.png")
  Image.fromarray(np.ascontiguousarray(crop[:, ::-1])).save(tmp_path / "a_mirror.png")
  files = [str(tmp_path / "a.png"), str(tmp_path / "a_mirror.png")]
  sface, aligner = match.make_embedders(["builtin:sface"], [])[0], match.Aligner("none")
  plain, _, _ = match.embed_files(files, sface, aligner, "none", "", show_progress=False)
  tta, _, _ = match.embed_files(files, sface, aligner, "flip", "", show_progress=False)
  assert plain[0] @ plain[1] < 0.999  # Without TTA the mirror is another input (else this test could not fail).
  np.testing.assert_allclose(tta[0], tta[1], atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(tta, axis=1), 1, atol=1e-6)


# == Real faces ========================================================================================================
@pytest.fixture(scope="module")
def faces_gallery(tmp_path_factory, obama):
  """astronaut/: four crops of one photo; obama/: three different photos of him; others/: Biden and 16 LFW faces."""
  root = tmp_path_factory.mktemp("gallery")
  a = data.astronaut()
  crops = {"full": a, "tight": a[20:300, 100:380], "wide": a[0:420, 40:460],
           "small": cv2.resize(a[0:350, 60:410], (200, 200), interpolation=cv2.INTER_AREA)}
  for k, img in crops.items():
    os.makedirs(root / "astronaut", exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(root / "astronaut" / f"astro_{k}.png")
  os.makedirs(root / "obama")
  for k in ("obama", "obama2", "obama3"):
    Image.fromarray(obama[k]).save(root / "obama" / f"{k}.jpg")
  os.makedirs(root / "others")
  Image.fromarray(obama["biden"]).save(root / "others" / "biden.jpg")
  for i, f in enumerate(data.lfw_subset()[:16]):
    Image.fromarray((255 * f).astype(np.uint8)).resize((100, 100), Image.BICUBIC).convert("RGB").save(
        root / "others" / f"lfw{i:02d}.png")
  return root


@pytest.mark.slow
def test_leave_one_out_on_real_faces_ranks_the_same_identity_first(faces_gallery, tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "jcache"))
  out = tmp_path / "loo"
  r = match.run(match.parse(["--gallery", str(faces_gallery), "--eval", "loo", "--identity-guard", "",
                             "--out", str(out)]))
  ranks = {os.path.basename(row["probe"]): row for row in csv.DictReader(open(out / "ranks.csv"))}
  for name in ("astro_full.png", "astro_tight.png", "astro_wide.png", "astro_small.png", "obama.jpg", "obama2.jpg",
               "obama3.jpg"):
    assert ranks[name]["rank_nearest"] == "1", (name, ranks[name])
  ev = r["evaluation"]
  assert ev["excluded_per_probe"] == 1.0 and ev["summary"]["nearest"]["per_condition"]["obama"]["top1"]["hits"] == 3
  saved = json.load(open(out / "match.json"))
  assert saved["note"] == match.NOT_A_DIAGNOSIS and saved["evaluation"]["summary"] == ev["summary"]
  # Probes against the gallery: an unseen photo of the astronaut (another crop, mirrored) matches the astronaut.
  probe = tmp_path / "probe.png"
  Image.fromarray(np.ascontiguousarray(data.astronaut()[10:380, 50:420, :][:, ::-1])).save(probe)
  blank = tmp_path / "blank.png"
  Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(blank)
  in_gallery = str(faces_gallery / "obama" / "obama2.jpg")
  r = match.run(match.parse(["--gallery", str(faces_gallery), "--probes", str(probe), str(blank), in_gallery,
                             "--out", str(out), "--top", "3"]))
  assert r["probes_left_out"] == {str(blank): "no face found"} and len(r["matches"]) == 2
  top = r["matches"][0]["top"]
  assert top[0]["condition"] == "astronaut" and len(top) == 3 and not r["matches"][0]["same_file_in_gallery"]
  assert "astro_" in os.path.basename(top[0]["nearest_cases"][0][0])
  # A probe that is a gallery photo never matches itself: its nearest Obama is another photo of him.
  assert r["matches"][1]["same_file_in_gallery"] == [in_gallery]
  assert r["matches"][1]["top"][0]["condition"] == "obama"
  assert r["matches"][1]["top"][0]["nearest_cases"][0][0] != in_gallery
  assert r["matches"][1]["top"][0]["best_similarity"] < 0.99
  # The gallery photo's folder names its condition; the unseen probe's folder does not.
  assert r["matches"][1]["known_condition"] == "obama" and r["matches"][0]["known_condition"] == ""
  # Noise: a lead is within it when leaving out the condition's nearest case would reorder it with the next.
  for m in r["matches"]:
    for t, nxt in zip(m["top"], m["top"][1:]):
      assert t["within_noise_of_next"] == match.within_noise(t["nearest_cases"], nxt["best_similarity"])
  assert not r["matches"][0]["top"][0]["within_noise_of_next"]  # The astronaut leads far beyond one photo.
  assert match.within_noise([("a", 0.48)], 0.2) and match.within_noise([("a", 0.48), ("b", 0.471)], 0.472)
  assert not match.within_noise([("a", 0.48), ("b", 0.475)], 0.472)
  rows = list(csv.reader(open(out / "matches.csv")))
  assert rows[1][:3] == [str(probe), "1", "astronaut"] and len(rows) == 7
  assert sorted(os.listdir(out / "sheets")) == ["0000_probe.png", "0001_obama2.png"]
  assert Image.open(out / "sheets" / "0000_probe.png").size[0] > 200


@pytest.mark.slow
def test_same_person_guard_leaves_the_person_out(faces_gallery, tmp_path, monkeypatch):
  """With the guard on, every other crop of the astronaut and every other Obama photo is the same person: they
  are left out with the probe, so nothing is left to match in their condition (counted, not ranked)."""
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "jcache"))
  r = match.run(match.parse(["--gallery", str(faces_gallery), "--eval", "loo", "--out", str(tmp_path / "o")]))
  ev = r["evaluation"]
  assert ev["unrankable"] == 7, ev
  ranked = {os.path.basename(row["probe"]) for row in csv.DictReader(open(tmp_path / "o" / "ranks.csv"))}
  assert not ranked & {"astro_full.png", "obama.jpg", "obama2.jpg"}
  # A test folder holding another crop of the astronaut: the guard removes her gallery photos from its ranking.
  test = tmp_path / "test"
  os.makedirs(test / "astronaut")
  os.makedirs(test / "others")
  Image.fromarray(np.ascontiguousarray(data.astronaut()[5:360, 80:440])).save(test / "astronaut" / "t.png")
  Image.fromarray((255 * data.lfw_subset()[40]).astype(np.uint8)).resize((100, 100), Image.BICUBIC).convert(
      "RGB").save(test / "others" / "lfw40.png")
  r = match.run(match.parse(["--gallery", str(faces_gallery), "--test", str(test), "--out", str(tmp_path / "t")]))
  assert r["evaluation"]["unrankable"] == 1  # t.png: every astronaut case is her; lfw40.png is another person.
  r_off = match.run(match.parse(["--gallery", str(faces_gallery), "--test", str(test), "--identity-guard", "",
                                 "--out", str(tmp_path / "t2")]))
  assert r_off["evaluation"]["unrankable"] == 0
  assert r_off["evaluation"]["summary"]["nearest"]["per_condition"]["astronaut"]["top1"]["hits"] == 1


@pytest.mark.slow
def test_ensembles_and_pair_figures(faces_gallery, tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "jcache"))
  one = match.run(match.parse(["--gallery", str(faces_gallery), "--pairs", "condition", "--out", str(tmp_path / "a")]))
  two = match.run(match.parse(["--gallery", str(faces_gallery), "--pairs", "condition", "--tta", "flip",
                               "--embedders", "builtin:sface,builtin:sface", "--out", str(tmp_path / "b")]))
  p1, p2 = one["pairs"]["condition"], two["pairs"]["condition"]
  assert p1["pairs"] == 24 * 23 // 2 and p1["same_group_pairs"] == 6 + 3 + 17 * 16 // 2
  assert 0.5 < p1["roc_auc"] <= 1 and 0 <= p1["tar_at_far_0.001"] <= p1["tar_at_far_0.01"] <= 1
  assert p2["roc_auc"] != p1["roc_auc"]  # TTA changes the embeddings.
  # An ensemble of one embedder twice: z-normalising then averaging equals that embedder's z-scores (same order).
  e = [match._unit(np.random.default_rng(0).normal(size=(30, 8))).astype(np.float32)]
  np.testing.assert_allclose(np.argsort(match.combined(e, e), axis=1), np.argsort(match.combined(e * 2, e * 2), 1))


def test_command_line_errors_are_one_line(tmp_path, capsys):
  assert match.main(["--gallery", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
  assert "is not a folder" in capsys.readouterr().err
  os.makedirs(tmp_path / "g" / "only")
  assert match.main(["--gallery", str(tmp_path / "g"), "--out", str(tmp_path / "o")]) == 2
  assert "needs at least 2" in capsys.readouterr().err
  os.makedirs(tmp_path / "g" / "second")
  assert match.main(["--gallery", str(tmp_path / "g"), "--align", "crooked", "--out", str(tmp_path / "o")]) == 2
  assert "--align 'crooked'" in capsys.readouterr().err
