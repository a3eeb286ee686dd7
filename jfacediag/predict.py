r"""Diagnosis for new photos with a trained run: class probabilities, flags, and why (heat maps, facial regions).

  python -m jfacediag.predict --run runs/demo/finetune --images a.jpg b.png photos/ --out preds/
  python -m jfacediag.predict --run runs/demo/svm --images photos/ --explain
  python -m jfacediag.predict --run runs/demo/finetune --explain-split test --out preds-test/

Each photo is aligned the way the run's training data were (align.json of its data folder; --align overrides,
--align none takes pre-aligned crops as they are), then goes through the run's own preprocessing and checkpoint
(best by validation when the run kept one, else the last). OUT receives:
- predictions.csv / predictions.json: every class probability, the top class, and flags: `no_face` (the detector
  found no face: a centre crop was used), `low_confidence` (top probability below --min-prob),
  `far_from_training` with `far_reason` (the photo is unlike every training image: its colourfulness, sharpness,
  brightness or contrast lies outside the training images' range, its features are farther from them than 95% of
  them are from each other, or the detector's verdict contradicts 90% of the predicted class's training images;
  the model's probability then means nothing), `seen_in_training` with `seen_reason` (the run trained on this
  photo: the same pixels as a training image, or features within cosine 0.995 of one; its probability says nothing
  about a new patient) and `error` (unreadable file). Probabilities are calibrated as the
  run's report was (report/calibration.json: temperature scaling for DTL1, Platt scaling of the SVM margins for
  DTL2, fitted on held-out training data); the `calibration` column says which, or why none applies (no held-out
  data, another checkpoint than the report's).
- aligned/: the crops that were classified.
- with --explain: explain/<photo>_<class>_gradcam.png and _occlusion.png (overlays on the aligned face, with the
  photo's warnings in red), and
  regions.csv: per photo and class, each facial region's share of the Grad-CAM mass and the drop of the class
  probability when the region is masked (regions need landmarks: aligned faces only).
- with --explain-split test: the same for the run's own test split, and regions_by_class.csv / .png, the
  region table averaged per true class.
jfacediag is a research tool, not a medical device.
"""
import argparse
import csv
import dataclasses
import hashlib
import json
import os
import sys

import jax
import ml_collections
import numpy as np
from PIL import Image

from jfacediag import calibration as calibration_lib, checkpointing, cli_front, explain, fileio, models, progress
from jfacediag import cpu, methods, rundir, sharding, steps
from jfacediag.align import styles
from jfacediag.data import aligned_folder, images, pipeline, records, splits
from jfacediag.methods import finetune
from jfacediag.models import classifier, ensemble
from jfacediag.models.preprocessing import Preprocessing

NOT_A_DEVICE = "jfacediag is a research tool, not a medical device: these outputs are not a diagnosis."


def parse(argv):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.predict", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--run", required=True, help="a finished run's workdir (for a multi-method run: RUN/svm or "
                                                "RUN/finetune)")
  ap.add_argument("--images", nargs="*", default=(), help="image files and folders")
  ap.add_argument("--out", default="", help="output folder (default: RUN/predict)")
  ap.add_argument("--checkpoint", default="best", choices=("best", "last"))
  ap.add_argument("--align", default="auto", help="auto (as the run's data), none (pre-aligned crops) or a style: "
                                                  f"{', '.join(styles.STYLES)}")
  ap.add_argument("--detector", default="auto", choices=("auto", "yunet", "mtcnn"),
                  help="face detector for the alignment (auto: the one the run's data were aligned with)")
  ap.add_argument("--mtcnn-weights", default="", help="converted MTCNN weights (pnet/ rnet/ onet/) for mtcnn")
  ap.add_argument("--min-prob", type=float, default=0.6, help="flag predictions whose top probability is lower")
  ap.add_argument("--explain", action="store_true", help="Grad-CAM and occlusion overlays, and the region table")
  ap.add_argument("--explain-classes", default="predicted", help="predicted, all, or comma-separated class names")
  ap.add_argument("--explain-split", default="", choices=("", "train", "val", "test"),
                  help="explain the run's own split too, with per-class region averages")
  ap.add_argument("--occlusion-patch", type=int, default=0, help="occlusion square side (default: input / 7)")
  ap.add_argument("--occlusion-stride", type=int, default=0, help="its step (default: the side; half = smoother, "
                                                                   "4x the forward passes)")
  ap.add_argument("--batch", type=int, default=32)
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


# == The run ===========================================================================================================
@dataclasses.dataclass(frozen=True)
class Run:
  """A finished DTL1/DTL2 run, loaded to predict like its evaluation (`load_run`)."""
  dir: str
  config: ml_collections.ConfigDict
  classes: list
  spec: models.Backbone
  pp: Preprocessing
  step: int
  model: classifier.Classifier
  variables: dict  # {"params", "batch_stats"} at `step`.
  style: str  # The alignment style of the run's data ("" = not aligned).
  crop_size: int
  detector: str
  data_dir: str
  method: str
  calibration: str  # What the probabilities are, in words.
  calibrator: object  # calibration.Calibrator, or None.


def load_run(run_dir, which="best"):
  """Everything needed to predict like the run's evaluation: model, variables, classes, preprocessing, style; read
  through jfacediag.rundir (a gs:// run too)."""
  run_dir = fileio.absolute(run_dir)
  config = ml_collections.ConfigDict(rundir.read_config(run_dir))
  method = methods.get(config.method)
  if not method.NETWORK:
    raise ValueError(f"{run_dir} is a {method.NAME} ({method.LABEL}) run; predict works with DTL1/DTL2 runs")
  facts = rundir.read_facts(run_dir)
  _, _, classes = splits.read(run_dir)
  spec = (ensemble.from_facts(facts, config.model.get("ensemble_combine", "concat"))
          if config.model.backbone == ensemble.NAME else models.get(config.model.backbone))
  pp = Preprocessing.from_dict(facts["preprocessing"])
  metric = config.train.best_metric
  ckpts = checkpointing.Checkpoints(run_dir, metric, "min" if metric.endswith("loss") else "max")
  step = (ckpts.best_step() if which == "best" and method is finetune else None) or ckpts.latest_step()
  if step is None:
    raise FileNotFoundError(f"{run_dir} holds no checkpoint")
  state = ckpts.restore_tree(step)
  ckpts.close()
  model = classifier.Classifier(spec.make(), len(classes), config.model.head_dropout)
  style, crop, detector = "", 0, "yunet"
  settings = aligned_folder.settings(facts["data_dir"])
  if settings:
    style, detector = settings["style"], settings.get("detector", "yunet")
    crop = settings.get("size") or styles.SIZES[style]
  # The run's calibration (report/calibration.json) was fitted for the checkpoint its report evaluated.
  stored = rundir.read_calibration(run_dir)
  calibrator = calibration_lib.Calibrator.from_dict(stored) if stored else None
  if calibrator is None:
    calibration = "none: this run predates calibration; softmax of the raw scores"
  elif method is finetune and int(step) != int(facts["checkpoint_step"]):
    calibration = (f"none: the run's calibration was fitted for step {facts['checkpoint_step']}, this is step "
                   f"{step} (--checkpoint {'last' if which == 'best' else 'best'} matches it); softmax of the logits")
    calibrator = None
  else:
    calibration = calibrator.describe()
  return Run(run_dir, config, classes, spec, pp, int(step), model,
             {"params": state["params"], "batch_stats": state["batch_stats"]}, style, crop, detector,
             facts["data_dir"], config.method, calibration, calibrator)


# == Inputs ============================================================================================================
def _to_input_coords(points, h, w, pp):
  """Pixel coordinates in an image of h x w -> coordinates in the network input (resize shorter, centre crop)."""
  scale = pp.resize_size / min(h, w)
  nh, nw = round(h * scale), round(w * scale)
  return (np.asarray(points) * scale - [(nw - pp.input_size) / 2, (nh - pp.input_size) / 2]).tolist()


def prepare(sources, style, out_dir, pp, size=0, detector="yunet", mtcnn_weights=""):
  """Aligns each source (or takes it as it is); returns one row per source with the file to classify."""
  if style:
    from jfacediag.align import detectors  # pylint: disable=g-import-not-at-top
    detector = detectors.make(detector, mtcnn_weights)
  os.makedirs(os.path.join(out_dir, "aligned"), exist_ok=True)
  rows = []
  for i, src in enumerate(progress.bar(sources, unit="img", desc="prepare")):
    row = {"source": src, "input": "", "no_face": 0, "error": "", "landmarks": None}
    try:
      img = images.load_rgb(src)
    except images.UnreadableImage as e:
      rows.append({**row, "error": str(e)})
      continue
    if not style:
      row["input"] = os.path.abspath(src)
    else:
      faces = detector.detect(img)
      if faces:
        face = detectors.largest(faces)
        crop, m = styles.align(img, face, style, size)
        row["landmarks"] = (face.landmarks @ m[:, :2].T + m[:, 2]).tolist()
      else:
        crop, row["no_face"] = styles.centre_crop(img, style, size), 1
      name = os.path.join(out_dir, "aligned", f"{i:05d}_{os.path.splitext(os.path.basename(src))[0]}.png")
      Image.fromarray(crop).save(name)
      row["input"] = name
      if row["landmarks"] is not None:
        row["landmarks"] = _to_input_coords(row["landmarks"], crop.shape[0], crop.shape[1], pp)
    rows.append(row)
  return rows


def _batches(files, pp, batch):
  """(normalised images [b,S,S,3], indices into files) of the eval pipeline's batches, padding dropped."""
  _, it = pipeline.eval_batches("", files, np.zeros(len(files), np.int32), pp, batch)
  for local in it:
    keep = local["index"] >= 0
    yield local["image"][keep], local["index"][keep]


# == Main ==============================================================================================================
def predict_rows(run, rows, batch, min_prob):
  """Fills each readable row with probabilities, top class and flags; returns the scores [n, k] of those rows."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch, mesh, "--batch")
  files = [r["input"] for r in rows if not r["error"]]
  if not files:
    return np.zeros((0, len(run.classes)), np.float32)
  variables = jax.device_put(run.variables, sharding.replicated(mesh))
  predict_step = steps.make_predict_step(run.model, mesh, steps.compute_dtype(run.config.get("dtype", "float32")))
  scores = steps.run_batches(predict_step, variables, "", files,
                             np.zeros(len(files), np.int32), run.pp, batch, mesh, len(run.classes))
  probs = run.calibrator(scores) if run.calibrator else explain.probabilities(scores)
  readable = [r for r in rows if not r["error"]]
  for r, p, raw in zip(readable, probs, np.asarray(scores)):
    top = int(raw.argmax())  # The report's decision; per-class Platt sigmoids may reorder close classes.
    r.update({"probabilities": dict(zip(run.classes, map(float, p))), "top_class": run.classes[top],
              "top_prob": float(p[top]), "low_confidence": int(p[top] < min_prob), "top_index": top})
  return scores


FAR_PERCENTILE = 5  # Features: farther from every training image than 95% of training images are from theirs.
SEEN_COSINE = 0.995  # Features this close to a training image's: that photo, re-encoded or re-aligned.


def flags(r, min_prob, short=False):
  """The warnings of one prediction, in the words stdout and the overlays use (short: for an image's title)."""
  out = []
  if r.get("seen_in_training"):
    out.append("SEEN IN TRAINING: the model was trained on this photo" if short else
               f"IN THE RUN'S TRAINING DATA ({r['seen_reason']}): the model has seen it; its probability says "
               "nothing about a new patient")
  if r.get("no_face"):
    out.append("NO FACE FOUND: centre crop used")
  if r.get("far_from_training"):
    out.append("FAR FROM THE TRAINING DATA: the probability means nothing" if short else
               f"FAR FROM THE TRAINING DATA ({r.get('far_reason')}): the probability means nothing here")
  if r.get("low_confidence"):
    out.append(f"low confidence (< {min_prob:g})")
  return out
STATS = ("colourfulness", "sharpness", "brightness", "contrast")


def image_facts(path, size):
  """(statistics, pixel hash) of an image, decoded once. Statistics at the network's input size: colourfulness
  (mean |R-G| + |G-B|), sharpness (variance of the grey Laplacian), brightness (mean grey), contrast (std of grey);
  the hash of the decoded pixels finds the same image in any container or under any name."""
  return pixel_facts(images.load_rgb(path), size)


def pixel_facts(rgb, size):
  """image_facts of decoded pixels (uint8 [H, W, 3])."""
  import cv2  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
  img = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
  grey = img.mean(-1)
  return np.array([np.abs(img[..., 0] - img[..., 1]).mean() + np.abs(img[..., 1] - img[..., 2]).mean(),
                   cv2.Laplacian(grey, cv2.CV_32F).var(), grey.mean(), grey.std()]), digest


def _unit_features(run, files, batch, mesh, root=""):
  variables = jax.device_put(run.variables, sharding.replicated(mesh))
  step = steps.make_feature_step(run.model, mesh, steps.compute_dtype(run.config.get("dtype", "float32")))
  f = steps.run_batches(step, variables, root, files, np.zeros(len(files), np.int32), run.pp, batch, mesh,
                        run.spec.feature_dim)
  return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def flag_far_rows(run, rows, batch):
  """Marks rows unlike anything the run was trained on, with the reasons: a colourfulness, sharpness, brightness or
  contrast outside the training images' range (widened by a tenth of it: greyscale training photos and a colour
  photo, blurry ones and a sharp one); features (the run's own feature layer) farther from every training image
  than 95% of the training images are from their nearest other training image; or, for aligned data, the
  detector's verdict against the predicted class's training images (a face found where 90% of them had none, or
  none where 90% had one). The probabilities of such a photo say nothing about it. Returns the references used."""
  split_rows, _, _ = splits.read(run.dir)
  stored = records.is_records(run.data_dir)  # The training images come from the records, shard by shard.
  names = [r.file for r in split_rows if r.split == "train"]
  train = names if stored else [os.path.join(run.data_dir, f) for f in names]
  readable = [r for r in rows if not r["error"]]
  if len(train) < 2 or not readable:
    return None
  size = run.pp.input_size
  if stored:
    got = {f: pixel_facts(rgb, size) for f, rgb in records.iter_images(run.data_dir, names)}
    facts = [got[f] for f in names]
  else:
    facts = [image_facts(f, size) for f in train]
  ts = np.stack([st for st, _ in facts])
  train_pixels = {digest: f for f, (_, digest) in zip(train, facts)}
  lo, hi = ts.min(0), ts.max(0)
  pad = 0.1 * (hi - lo) + 1e-6
  mesh = sharding.make_mesh()
  ref = _unit_features(run, train, batch, mesh, run.data_dir if stored else "")
  sim = ref @ ref.T
  np.fill_diagonal(sim, -np.inf)
  cut = float(np.percentile(sim.max(1), FAR_PERCENTILE))
  sims = _unit_features(run, [r["input"] for r in readable], batch, mesh) @ ref.T
  near, nearest = sims.max(1), sims.argmax(1)
  # In an aligned folder, centre-crop fallbacks are the training images without a detected face, per class.
  fallback = {m["output"] for m in aligned_folder.read_rows(run.data_dir, aligned_folder.MANIFEST) if m.get("fallback")}
  faceless = {c: np.mean([r.file in fallback for r in split_rows if r.split == "train" and r.class_name == c])
              for c in run.classes} if run.style else {}
  for r, s, k in zip(readable, near, nearest):
    st, digest = image_facts(r["input"], size)
    same = train_pixels.get(digest)
    if same or s >= SEEN_COSINE:
      r.update(seen_in_training=1, seen_reason=(
          f"the same pixels as training image {_name(same, run.data_dir, stored)}" if same else
          f"features {s:.4f} from training image {_name(train[k], run.data_dir, stored)} (a copy)"))
    else:
      r.update(seen_in_training=0, seen_reason="")
    why = [f"{name} {v:.3g} outside the training images' {a:.3g}-{b:.3g}"
           for name, v, a, b, d in zip(STATS, st, lo, hi, pad) if v < a - d or v > b + d]
    share = faceless.get(r.get("top_class"), None)
    if share is not None and not r["no_face"] and share >= 0.9:
      why.append(f"a face was found, but {100 * share:.0f}% of the {r['top_class']} training images had none")
    elif share is not None and r["no_face"] and share <= 0.1:
      why.append(f"no face was found, but {100 - 100 * share:.0f}% of the {r['top_class']} training images had one")
    if s < cut:
      why.append(f"features {s:.3f} from the nearest training image, below {cut:.3f} ({100 - FAR_PERCENTILE}% of "
                 "training images are nearer to another")
    r.update(nearest_train_cosine=float(s), far_from_training=int(bool(why)), far_reason="; ".join(why))
  return {"feature_cosine_cut": cut, "training_images": len(train), "percentile": FAR_PERCENTILE,
          "stats_range": {n: [float(a), float(b)] for n, a, b in zip(STATS, lo, hi)}}


def _name(path, data_dir, stored):
  return path if stored else os.path.relpath(path, data_dir)


def explain_rows(run, rows, out_dir, which, patch, true_labels=None, stride=0, min_prob=0.0):
  """Grad-CAM + occlusion overlays and region rows for every readable row; returns the region table rows. An
  overlay carries its photo's warnings (no face, far from the training data, seen in training) in red."""
  pp, classes, spec, model = run.pp, run.classes, run.spec, run.model
  if not spec.cam_layer:
    raise ValueError(f"backbone {spec.name} names no Grad-CAM layer (models.Backbone.cam_layer)")
  readable = [r for r in rows if not r["error"]]
  if not readable:
    return []
  s = pp.input_size
  gradcam = explain.make_gradcam(model, run.variables, spec.cam_layer, (1, s, s, 3))
  apply = cpu.jit(lambda v, x: model.apply(v, x, train=False))
  predict = lambda xs: np.asarray(apply(run.variables, xs))  # noqa: E731
  patch = patch or max(2, s // 7)
  mean, std = np.array(pp.mean, np.float32), np.array(pp.std, np.float32)
  os.makedirs(os.path.join(out_dir, "explain"), exist_ok=True)
  table = []
  for x_batch, idx in progress.bar(list(_batches([r["input"] for r in readable], pp, 16)), desc="explain",
                                   unit="batch"):
    for x, i in zip(x_batch, idx):
      row = readable[int(i)]
      wanted = (range(len(classes)) if which == "all" else [row["top_index"]] if which == "predicted"
                else [classes.index(c) for c in which.split(",")])
      face = np.clip(x * std + mean, 0, 255).astype(np.uint8)
      face = face[..., ::-1] if pp.channel_order == "BGR" else face
      masks = explain.region_masks(row["landmarks"], s, s) if row["landmarks"] is not None else None
      stem = os.path.splitext(os.path.basename(row["source"]))[0]
      for c in wanted:
        cam, _ = gradcam(x[None], np.array([c], np.int32))
        cam = np.asarray(cam[0])
        occ, base = explain.occlusion(predict, x, c, patch, stride or patch)
        p = row.get("probabilities", {}).get(classes[c], base)  # The probability predictions.csv gives.
        title = (f"{os.path.basename(run.dir)}: {run.method} on {spec.name}\n"
                 f"{stem[:40]}: {classes[c]}, p = {p:.2f}")
        warn = flags(row, min_prob, short=True)
        explain.overlay_png(os.path.join(out_dir, "explain", f"{int(i):05d}_{stem}_{classes[c]}_gradcam.png"),
                            face, cam, "Grad-CAM " + title, masks, warn)
        explain.overlay_png(os.path.join(out_dir, "explain", f"{int(i):05d}_{stem}_{classes[c]}_occlusion.png"),
                            face, np.clip(occ, 0, None), "occlusion " + title, masks, warn)
        row.setdefault("maps", {})[classes[c]] = {"gradcam": cam, "occlusion": occ}
        if masks is None:
          continue
        for region, (share, drop) in explain.region_table(cam, predict, x, c, masks).items():
          table.append({"source": row["source"], "true_class": true_labels[int(i)] if true_labels else "",
                        "class": classes[c], "region": region, "cam_share": share, "prob_drop": drop})
  return table


def write(out_dir, run, rows, table, far=None):
  classes = run.classes
  cols = ["source", "input", "top_class", "top_prob", *[f"prob_{c}" for c in classes], "calibration", "no_face",
          "low_confidence", "far_from_training", "far_reason", "nearest_train_cosine", "seen_in_training",
          "seen_reason", "error"]
  with open(os.path.join(out_dir, "predictions.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, cols)
    w.writeheader()
    for r in rows:
      probs = {f"prob_{c}": f"{v:.6f}" for c, v in r.get("probabilities", {}).items()}
      w.writerow({"source": r["source"], "input": r["input"], "top_class": r.get("top_class", ""),
                  "top_prob": f"{r['top_prob']:.6f}" if "top_prob" in r else "", **probs,
                  "calibration": run.calibration, "no_face": r["no_face"],
                  "low_confidence": r.get("low_confidence", ""), "far_from_training": r.get("far_from_training", ""),
                  "far_reason": r.get("far_reason", ""),
                  "nearest_train_cosine": (f"{r['nearest_train_cosine']:.4f}" if "nearest_train_cosine" in r
                                           else ""), "seen_in_training": r.get("seen_in_training", ""),
                  "seen_reason": r.get("seen_reason", ""), "error": r["error"]})
  keep = ("source", "input", "top_class", "top_prob", "probabilities", "no_face", "low_confidence",
          "far_from_training", "far_reason", "nearest_train_cosine", "seen_in_training", "seen_reason", "error")
  with open(os.path.join(out_dir, "predictions.json"), "w", encoding="utf-8") as f:
    json.dump({"run": run.dir, "method": run.method, "checkpoint_step": run.step, "classes": classes,
               "calibration": run.calibration, "note": NOT_A_DEVICE, "far_from_training": far,
               "predictions": [{k: r[k] for k in keep if k in r} for r in rows]}, f, indent=2)
  if table:
    with open(os.path.join(out_dir, "regions.csv"), "w", newline="", encoding="utf-8") as f:
      w = csv.DictWriter(f, list(table[0]))
      w.writeheader()
      w.writerows(table)


def write_by_class(out_dir, table, title_text=""):
  """regions_by_class.csv + .png: mean region share and probability drop per true class (predicted class's maps)."""
  groups = {}
  for t in table:
    groups.setdefault((t["true_class"], t["region"]), []).append(t)
  agg = [{"true_class": c, "region": r, "images": len(v), "mean_cam_share": float(np.mean([t["cam_share"] for t in v])),
          "mean_prob_drop": float(np.mean([t["prob_drop"] for t in v]))} for (c, r), v in sorted(groups.items())]
  with open(os.path.join(out_dir, "regions_by_class.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, list(agg[0]))
    w.writeheader()
    w.writerows(agg)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  classes = sorted({a["true_class"] for a in agg})
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  width = 0.8 / max(len(classes), 1)
  for k, c in enumerate(classes):
    vals = {a["region"]: a for a in agg if a["true_class"] == c}
    xs = np.arange(len(explain.REGIONS)) + k * width
    axes[0].bar(xs, [vals[r]["mean_cam_share"] if r in vals else 0 for r in explain.REGIONS], width, label=c)
    axes[1].bar(xs, [vals[r]["mean_prob_drop"] if r in vals else 0 for r in explain.REGIONS], width, label=c)
  for ax, title, ylabel in zip(axes, ("share of Grad-CAM mass", "probability drop when masked"),
                               ("mean share of the map (0-1)", "mean drop of the class probability")):
    ax.set_xticks(np.arange(len(explain.REGIONS)) + 0.4 - width / 2, explain.REGIONS)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("facial region", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
  axes[0].legend(fontsize=8, title="true class", title_fontsize=8)
  if title_text:
    fig.suptitle(title_text, fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "regions_by_class.png"), dpi=110)
  plt.close(fig)
  return agg


def run_cli(args):
  run = load_run(args.run, args.checkpoint)
  out_dir = os.path.abspath(args.out or os.path.join(run.dir, "predict"))
  os.makedirs(out_dir, exist_ok=True)
  style = run.style if args.align == "auto" else "" if args.align == "none" else args.align
  if style and style not in styles.STYLES:
    raise ValueError(f"--align {args.align!r}; expected auto, none or one of {', '.join(styles.STYLES)}")
  detector = run.detector if args.detector == "auto" else args.detector
  print(f"Run {run.dir}: {run.method} on {run.spec.name}, checkpoint step {run.step}, classes "
        f"{run.classes}; alignment: {f'{style} ({detector})' if style else 'none (images used as they are)'}.",
        flush=True)
  size = run.crop_size if style == run.style else 0
  if style and args.images and detector == "mtcnn" and not args.mtcnn_weights:
    raise ValueError(f"the run's data were aligned with MTCNN ({run.data_dir}/align.json): pass --mtcnn-weights "
                     f"DIR to align new photos the same way, or --detector yunet to accept a different detector")
  rows = (prepare(images.expand(args.images), style, out_dir, run.pp, size, detector, args.mtcnn_weights)
          if args.images else [])
  far = None
  if rows:
    predict_rows(run, rows, args.batch, args.min_prob)
    far = flag_far_rows(run, rows, args.batch)
  table = (explain_rows(run, rows, out_dir, args.explain_classes, args.occlusion_patch, None, args.occlusion_stride,
                        args.min_prob) if args.explain else [])
  write(out_dir, run, rows, table, far)
  for r in rows:
    if r["error"]:
      print(f"  {r['source']}: unreadable ({r['error']})")
      continue
    said = flags(r, args.min_prob)
    print(f"  {r['source']}: {r['top_class']}, p = {r['top_prob']:.2f} ({run.calibration})"
          + (f"  [{'; '.join(said)}]" if said else ""))
  if args.explain_split:
    split_rows, _, _ = splits.read(run.dir)
    picked = [x for x in split_rows if x.split == args.explain_split]
    if not picked:
      raise ValueError(f"{run.dir} has no {args.explain_split} split to explain")
    if records.is_records(run.data_dir):
      raise ValueError(f"--explain-split reads the run's photos from a folder; this run read records "
                       f"({run.data_dir}): point --images at the aligned folder's {args.explain_split} photos instead")
    landmarks = None  # The split's crops were aligned onto the template: its points are their landmarks.
    if run.style in ("arcface112", "paper"):
      c = run.crop_size
      landmarks = _to_input_coords(explain.template_landmarks(c), c, c, run.pp)
    srows = [{"source": x.file, "input": os.path.join(run.data_dir, x.file), "no_face": 0, "error": "",
              "landmarks": landmarks} for x in picked]
    split_dir = os.path.join(out_dir, f"split_{args.explain_split}")
    os.makedirs(split_dir, exist_ok=True)
    predict_rows(run, srows, args.batch, args.min_prob)
    stable = explain_rows(run, srows, split_dir, "predicted", args.occlusion_patch, [x.class_name for x in picked],
                          args.occlusion_stride)
    write(split_dir, run, srows, stable)
    if stable:
      agg = write_by_class(split_dir, stable, f"{os.path.basename(run.dir)}: {run.method} on "
                           f"{run.spec.name}, {args.explain_split} split (predicted class's maps)")
      print(f"Regions on the {args.explain_split} split ({len(picked)} images), mean over each true class:")
      for a in agg:
        print(f"  {a['true_class']:12s} {a['region']:9s} Grad-CAM share {a['mean_cam_share']:.2f}, probability "
              f"drop {a['mean_prob_drop']:+.3f}")
    else:
      print(f"The {args.explain_split} split has no landmarks (data not aligned in a template style): maps only.")
    print(f"Wrote {split_dir}: {len(srows)} predictions and maps for the run's {args.explain_split} split.")
  if rows or not args.explain_split:
    n_err = sum(bool(r["error"]) for r in rows)
    print(f"Wrote {out_dir}: {len(rows) - n_err} predictions, {n_err} unreadable, "
          f"{sum(r['no_face'] for r in rows)} without a face, "
          f"{sum(bool(r.get('far_from_training')) for r in rows)} far from the training data, "
          f"{sum(bool(r.get('seen_in_training')) for r in rows)} seen in training.")
  print(NOT_A_DEVICE)
  return rows


def main(argv=None):
  return cli_front.one_line_errors(run_cli, parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  sys.exit(main())
