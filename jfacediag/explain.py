"""Why a model decided: Grad-CAM, occlusion maps, and their share per facial region.

- Grad-CAM (Selvaraju et al. 2017) on the backbone's last convolutional block (`Backbone.cam_layer`): the block's
  output A and the gradient of the class score with respect to it; weights = gradient averaged over space;
  map = ReLU(sum_k weight_k A_k), bilinearly resized to the input. The head's outputs are the fine-tuned logits
  (DTL1) or the SVM's decision functions (DTL2, whose head holds the folded SVM); the class score is the class's
  output minus the mean of the others' (for two classes, half the margin between them). With the raw output, what
  every class responds to (background, any object) lights up too; the contrast keeps what tells the classes apart.
- Occlusion (Zeiler & Fergus 2014): a square patch set to the preprocessing mean (0 after normalisation) slides
  over the image; the map is the drop of the class probability (softmax of the scores) where the patch covers.
- Regions: masks for eyes, nose, mouth, cheeks and forehead built from five landmarks (left eye, right eye, nose,
  left and right mouth corner, as in the arcface112 template); per region, the share of the Grad-CAM mass inside it
  and the drop of the class probability when the whole region is set to the mean.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jfacediag import cpu
from jfacediag.align import styles

REGIONS = ("eyes", "nose", "mouth", "cheeks", "forehead")


def _layer_output_shape(model, variables, x, path):
  shapes = {}

  def capture(fn, args, kwargs, context):
    out = fn(*args, **kwargs)
    if context.method_name == "__call__" and "/".join(context.module.path) == path:
      shapes["a"] = out.shape
    return out

  with nn.intercept_methods(capture):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  if "a" not in shapes:
    raise ValueError(f"Grad-CAM layer {path!r} is not called by the model")
  return shapes["a"]


def make_gradcam(model, variables, layer, input_shape):
  """Returns gradcam(x [n,H,W,3] normalised, classes [n]) -> (maps [n,H,W] in [0, 1], scores [n, k]), jitted.

  `layer` is a module path inside the backbone (Backbone.cam_layer)."""
  path = f"backbone/{layer}"
  shape = _layer_output_shape(model, variables, jnp.zeros(input_shape, jnp.float32), path)

  def fn(variables, x, classes):
    def score(delta):
      acts = {}

      def add(fn_, args, kwargs, context):
        out = fn_(*args, **kwargs)
        if context.method_name == "__call__" and "/".join(context.module.path) == path:
          out = out + delta
          acts["a"] = out
        return out

      with nn.intercept_methods(add):
        logits = model.apply(variables, x, train=False)
      chosen = jnp.take_along_axis(logits, classes[:, None], 1)[:, 0]
      others = (logits.sum(1) - chosen) / max(logits.shape[1] - 1, 1)
      return (chosen - others).sum(), (acts["a"], logits)

    grads, (acts, logits) = jax.grad(score, has_aux=True)(jnp.zeros((x.shape[0],) + shape[1:], x.dtype))
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * acts).sum(-1))
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    cam = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    return cam, logits

  jitted = cpu.jit(fn)
  return lambda x, classes: jitted(variables, x, classes)


def probabilities(scores):
  return np.asarray(jax.nn.softmax(jnp.asarray(scores, jnp.float32), -1))


def occlusion(predict, x, cls, patch, stride, batch=64):
  """Probability drop map [H, W] for one normalised image x [H,W,3] and class cls; predict(xs) -> scores [m, k]."""
  h, w = x.shape[:2]
  base = probabilities(predict(x[None]))[0, cls]
  ys, xs = list(range(0, max(h - patch, 0) + 1, stride)), list(range(0, max(w - patch, 0) + 1, stride))
  boxes = [(y, x0) for y in ys for x0 in xs]
  drops = []
  for i in range(0, len(boxes), batch):
    chunk = np.repeat(x[None], len(boxes[i:i + batch]), 0)
    for j, (y, x0) in enumerate(boxes[i:i + batch]):
      chunk[j, y:y + patch, x0:x0 + patch] = 0.0
    drops.append(base - probabilities(predict(chunk))[:, cls])
  drops = np.concatenate(drops)
  total, count = np.zeros((h, w)), np.zeros((h, w))
  for d, (y, x0) in zip(drops, boxes):
    total[y:y + patch, x0:x0 + patch] += d
    count[y:y + patch, x0:x0 + patch] += 1
  return total / np.maximum(count, 1), float(base)


def template_landmarks(size):
  """The arcface112 template's five points at an aligned crop of side `size` (x, y)."""
  return styles.ARCFACE_TEMPLATE * size / 112.0


def region_masks(landmarks, h, w):
  """{region: bool [h, w]} from five landmarks (left eye, right eye, nose, left and right mouth corner)."""
  le, re_, nose, lm, rm = (np.asarray(p, np.float64) for p in landmarks)
  iod = np.linalg.norm(re_ - le)
  yy, xx = np.mgrid[0:h, 0:w] + 0.5

  def disc(c, r):
    return (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r ** 2

  eye_y = (le[1] + re_[1]) / 2
  mouth = (lm + rm) / 2
  masks = {
      "eyes": disc(le, 0.3 * iod) | disc(re_, 0.3 * iod),
      "nose": disc(nose, 0.28 * iod),
      "mouth": ((xx - mouth[0]) / (0.5 * np.linalg.norm(rm - lm) + 0.15 * iod)) ** 2
               + ((yy - mouth[1]) / (0.22 * iod)) ** 2 <= 1,
      "cheeks": disc((le[0] - 0.1 * iod, (eye_y + mouth[1]) / 2 + 0.05 * iod), 0.3 * iod)
                | disc((re_[0] + 0.1 * iod, (eye_y + mouth[1]) / 2 + 0.05 * iod), 0.3 * iod),
      "forehead": (yy >= eye_y - 1.0 * iod) & (yy <= eye_y - 0.4 * iod) & (xx >= le[0] - 0.4 * iod)
                  & (xx <= re_[0] + 0.4 * iod),
  }
  taken = np.zeros((h, w), bool)
  for name in ("eyes", "nose", "mouth", "cheeks", "forehead"):  # Each pixel in at most one region.
    masks[name] &= ~taken
    taken |= masks[name]
  return masks


def region_table(cam, predict, x, cls, masks):
  """{region: (share of the Grad-CAM mass, drop of the class probability when the region is set to the mean)}."""
  base = probabilities(predict(x[None]))[0, cls]
  chunk = np.repeat(x[None], len(REGIONS), 0)
  for i, r in enumerate(REGIONS):
    chunk[i][masks[r]] = 0.0
  probs = probabilities(predict(chunk))[:, cls]
  mass = max(float(cam.sum()), 1e-12)
  return {r: (float(cam[masks[r]].sum()) / mass, float(base - probs[i])) for i, r in enumerate(REGIONS)}


def overlay_png(path, face_rgb, heat, title, masks=None, warnings=()):
  """The aligned face with a heat map on top (and region outlines), as a PNG; `warnings` (the prediction's flags)
  are written in red under the title, so that the image never travels without them."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(3.8, 3.6))
  ax.imshow(face_rgb)
  shown = ax.imshow(heat, cmap="jet", alpha=0.45, extent=(0, face_rgb.shape[1], face_rgb.shape[0], 0))
  if masks:
    for m in masks.values():
      ax.contour(m.astype(float), levels=[0.5], colors="white", linewidths=0.6)
  ax.set_title(title, fontsize=7)
  if warnings:
    ax.text(0.5, 0.02, "\n".join(warnings), transform=ax.transAxes, ha="center", va="bottom", fontsize=6,
            color="white", fontweight="bold", bbox={"facecolor": "red", "alpha": 0.85, "pad": 2, "edgecolor": "none"})
  ax.axis("off")
  bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
  bar.ax.tick_params(labelsize=6)
  bar.set_label("Grad-CAM (normalised)" if "Grad-CAM" in title else "probability drop when masked", fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
