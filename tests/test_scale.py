"""Scaling out: 2 processes x 2 devices equal 1 process x 4 devices; launch.sh commands; bf16; the benchmark."""
import importlib.util
import json
import os
import shlex
import subprocess
import sys

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO, restore_raw, subprocess_env
from jfacediag import base_config, checkpointing, models, optim, sharding, steps
from jfacediag.models import classifier

LAUNCH = os.path.join(REPO, "launch.sh")


def _train_flags(data, workdir):
  return ["--config", f"{REPO}/configs/toy.py", "--workdir", str(workdir), "--config.data.generate=",
          f"--config.data.dir={data}", "--config.data.train_per_class=24", "--config.data.test_per_class=12",
          "--config.data.val_fraction=0.0", "--config.model.input_size=32", "--config.input.batch_size=16",
          "--config.input.eval_batch_size=16", "--config.train.epochs=2", "--config.eval.bootstrap=0",
          "--config.train.checkpoint_every_steps=1000"]


def _history(workdir):
  with open(os.path.join(workdir, "history.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [r["train_loss"] for r in rows if "train_loss" in r]


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(toy_dir, tmp_path):
  runs = {}
  for procs in (1, 2):
    workdir = tmp_path / f"p{procs}"
    r = subprocess.run(["bash", LAUNCH, "local", "--processes", str(procs), "--devices-per-process", str(4 // procs),
                        "--port", str(12400 + os.getpid() % 500), "--", *_train_flags(toy_dir, workdir)],
                       cwd=REPO, env=subprocess_env(PYTHON=sys.executable), capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"4 device(s) (cpu), {procs} process(es)" in r.stdout
    runs[procs] = workdir
  one, two = _history(runs[1]), _history(runs[2])
  print("losses, 1 process:", np.round(one, 5), "\n          2 processes:", np.round(two, 5))
  assert len(one) == len(two) == 9
  np.testing.assert_allclose(two, one, atol=1e-5, rtol=0)
  # The 2-process checkpoint restores in this (1-process, 1-device) test process and equals the 1-process one.
  states = {}
  for procs, workdir in runs.items():
    ck = checkpointing.Checkpoints(str(workdir))
    assert ck.latest_step() == 9
    states[procs] = restore_raw(ck, 9)
    ck.close()
  flat1 = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(states[1]["params"], sep="/").items()}
  flat2 = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(states[2]["params"], sep="/").items()}
  assert flat1.keys() == flat2.keys()
  worst = max(float(np.abs(flat1[k] - flat2[k]).max()) for k in flat1)
  print("final params, max |diff| between 1 and 2 processes:", worst)
  assert worst <= 1e-5
  # Only process 0 wrote the report, and it is complete. Rerun on the 2-process workdir as 1 process with 1 device:
  # the trainer restores the finished checkpoint and re-evaluates it to the same test scores.
  before = (runs[2] / "report" / "predictions.csv").read_text()
  assert len(before.splitlines()) == 37
  r = subprocess.run(["bash", LAUNCH, "local", "--", *_train_flags(toy_dir, runs[2])], cwd=REPO,
                     env=subprocess_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=600,
                     check=False)
  assert r.returncode == 0 and "1 device(s) (cpu), 1 process(es)" in r.stdout, r.stderr[-3000:]
  assert "Resuming from step 9/9" in r.stdout
  after = (runs[2] / "report" / "predictions.csv").read_text()
  def scores(text):
    return np.array([[float(v) for v in row.split(",")[4:]] for row in text.splitlines()[1:]])
  np.testing.assert_allclose(scores(after), scores(before), atol=1e-5)


@pytest.mark.slow
def test_a_run_resumes_on_another_topology_and_continues_the_same_stream(toy_dir, tmp_path):
  """Checkpointed on 2 devices at step 4, resumed on 4 devices, and on 2 processes x 2 devices: the losses of the
  steps after the resume equal an uninterrupted 4-device run's (the global batch and the stream do not depend on
  the devices)."""
  port = 12900 + os.getpid() % 500

  def launch(workdir, procs, devices, *extra):
    r = subprocess.run(["bash", LAUNCH, "local", "--processes", str(procs), "--devices-per-process", str(devices),
                        "--port", str(port), "--", *_train_flags(toy_dir, workdir), *extra],
                       cwd=REPO, env=subprocess_env(PYTHON=sys.executable), capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"{procs * devices} device(s) (cpu), {procs} process(es)" in r.stdout
    return r.stdout

  reference = tmp_path / "reference"
  launch(reference, 1, 4)
  for name, (procs, devices) in {"four": (1, 4), "two_by_two": (2, 2)}.items():
    workdir = tmp_path / name
    launch(workdir, 1, 2, "--config.train.stop_after_steps=4")
    out = launch(workdir, procs, devices)
    assert "Resuming from step 4/9" in out
    got, want = _history(workdir), _history(reference)
    print(f"{name}: losses after the resume {np.round(got[4:], 5)}; uninterrupted on 4 devices {np.round(want[4:], 5)}")
    assert len(got) == len(want) == 9
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _dry(*args, env=None):
  e = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_"))}
  e.update(env or {})
  return subprocess.run(["bash", LAUNCH, "--dry-run", *args], cwd=REPO, env=e, capture_output=True, text=True,
                        timeout=60, check=False)


TPU = ["--name", "jfd", "--project", "my-proj", "--zone", "us-central2-b"]


def test_launch_dry_run_prints_the_commands(tmp_path):
  train = ["--config", "configs/demo.py", "--workdir", "gs://bucket/runs/demo"]
  r = _dry("tpu", "create", *TPU, "--accelerator-type", "v4-8", "--version", "tpu-ubuntu2204-base")
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == ("+ gcloud compute tpus tpu-vm create jfd --project=my-proj --zone=us-central2-b "
                              "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base")
  r = _dry("tpu", "setup", *TPU)
  lines = r.stdout.strip().splitlines()
  assert r.returncode == 0 and len(lines) == 3
  assert lines[0].startswith("+ git archive") and "scp" in lines[1] and "--worker=all" in lines[1]
  assert "pip install -q -e . 'jax[tpu]" in lines[2].replace("\\", "")
  r = _dry("tpu", "run", *TPU, "--accelerator-type", "v5litepod-16", "--", *train)
  assert r.returncode == 0, r.stderr
  preflight, cmd = r.stdout.replace("\\", "").strip().splitlines()
  assert preflight == ("+ python -m jfacediag.aot --topology v5litepod-16 --config configs/demo.py "
                       "--config.dtype=bfloat16")  # First, here, and without --workdir.
  assert "--worker=all" in cmd
  assert "python -m jfacediag.train --config configs/demo.py --workdir gs://bucket/runs/demo --config.distributed=yes" \
      in cmd
  for action in ("logs", "delete"):
    r = _dry("tpu", action, *TPU)
    verb = "ssh" if action == "logs" else action
    assert r.returncode == 0 and r.stdout.startswith(f"+ gcloud compute tpus tpu-vm {verb}")
  hosts = tmp_path / "hosts"
  hosts.write_text("gpu-a\n# a comment\ngpu-b\n")
  r = _dry("gpu", "--hosts", str(hosts), "--repo", "/srv/jfacediag", "--", *train)
  lines = r.stdout.strip().splitlines()
  assert r.returncode == 0 and len(lines) == 2, r.stdout + r.stderr
  for i, (line, host) in enumerate(zip(lines, ("gpu-a", "gpu-b"))):
    line = line.replace("\\", "")
    assert line.startswith(f"+ ssh -- {host} ") and "JAX_COORDINATOR_ADDRESS=gpu-a:12355 JAX_NUM_PROCESSES=2" in line
    assert f"JAX_PROCESS_ID={i}" in line and "cd /srv/jfacediag" in line
  r = _dry("gpu", "--", *train, env={"SLURM_JOB_ID": "7", "SLURM_NNODES": "4"})
  assert r.returncode == 0 and r.stdout.startswith("+ srun --ntasks=4 --ntasks-per-node=1")
  r = _dry("local", "--processes", "2", "--devices-per-process", "2", "--", *train)
  lines = r.stdout.strip().splitlines()
  assert r.returncode == 0 and len(lines) == 2
  assert all("XLA_FLAGS=--xla_force_host_platform_device_count=2" in s and "JAX_NUM_PROCESSES=2" in s for s in lines)


def test_launch_quotes_every_value_that_reaches_a_remote_shell(tmp_path):
  """Hostile values: refused (port, host names) or passed through as plain arguments; the printed remote command,
  run by a local shell with a stub python, creates nothing and hands the training flags over unchanged."""
  hosts = tmp_path / "hosts"
  for bad_hosts, port, says in ((["gpu-a", "$(touch PWNED)"], "12355", "is not a host name"),
                                (["-oProxyCommand=touch PWNED"], "12355", "is not a host name"),
                                (["gpu-a"], "12355;touch PWNED;", "--port must be a number")):
    hosts.write_text("\n".join(bad_hosts) + "\n")
    r = _dry("gpu", "--hosts", str(hosts), "--port", port, "--", "--config", "c.py")
    assert r.returncode == 2 and says in r.stderr, r.stderr
  hosts.write_text("user@gpu-a  # the coordinator\ngpu-b\n")
  repo = tmp_path / "repo dir;$(touch PWNED)"
  (repo / ".venv" / "bin").mkdir(parents=True)
  stub = repo / ".venv" / "bin" / "python"
  stub.write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > args.txt\n")
  stub.chmod(0o755)
  flags = ["--config", "c.py", "--workdir", "w;touch PWNED", "--config.x=$(touch PWNED)", "it's"]
  r = _dry("gpu", "--hosts", str(hosts), "--repo", str(repo), "--", *flags)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  for line in lines:
    argv = shlex.split(line[2:])
    assert argv[:2] == ["ssh", "--"] and argv[2] in ("user@gpu-a", "gpu-b") and argv[-1] == "&"
    subprocess.run(["bash", "-c", argv[3]], cwd=tmp_path, check=True, timeout=30)
    assert (repo / "args.txt").read_text().splitlines() == ["-m", "jfacediag.train", *flags]
    assert "JAX_COORDINATOR_ADDRESS=gpu-a:12355" in argv[3]
  assert not list(tmp_path.rglob("PWNED"))
  r = _dry("tpu", "run", "--dry-run", "--no-preflight", *TPU, "--", *flags)  # --dry-run after the target too.
  assert r.returncode == 0 and not list(tmp_path.rglob("PWNED"))
  remote = shlex.split(r.stdout[2:])[-1].split("=", 1)[1]
  assert shlex.split(remote.split("nohup ", 1)[1].split(" >")[0]) == ["python", "-m", "jfacediag.train", *flags,
                                                                      "--config.distributed=yes",
                                                                      "--config.dtype=bfloat16"]
  r = _dry("tpu", "run", "--no-preflight", *TPU, "--", *flags, "--config.dtype=float32")  # The user's dtype wins.
  remote = shlex.split(r.stdout[2:])[-1].split("=", 1)[1]
  assert shlex.split(remote.split("nohup ", 1)[1].split(" >")[0])[-2:] == ["--config.dtype=float32",
                                                                           "--config.distributed=yes"]
  r = _dry("tpu", "setup", *TPU)
  assert "/tmp/jfacediag-src" not in r.stdout  # No fixed, predictable path.


@pytest.mark.parametrize("args, message", [
    (["tpu", "create", "--name", "x", "--project", "p"], "the zone is not set: pass --zone or set TPU_ZONE"),
    (["tpu", "create", *TPU], "the accelerator type"),
    (["tpu", "run", *TPU], "no training flags"),
    (["tpu", "run", *TPU, "--", "--config", "c.py"], "the accelerator type, for the pre-flight compile"),
    (["tpu", "resize", *TPU], "unknown action resize"),
    (["gpu", "--", "--config", "c.py"], "--hosts FILE"),
    (["local", "--processes", "0", "--", "--config", "c.py"], "positive integer"),
    (["cloud"], "unknown target cloud"),
])
def test_launch_missing_settings_are_clear_errors(args, message):
  r = _dry(*args)
  assert r.returncode == 2 and message in r.stderr, r.stderr


def test_launch_slurm_writes_an_sbatch_script_with_one_process_per_gpu(tmp_path):
  r = _dry("slurm", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--account", "lab", "--",
           "--config", "configs/demo.py", "--workdir", "/shared/runs/a b;x")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  assert lines[0] == "# runs/slurm/jfacediag.sbatch" and lines[1] == "#!/usr/bin/env bash"
  for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=lab"):
    assert f"#SBATCH {directive}" in lines
  srun = shlex.split(lines[-1])
  assert srun == ["srun", "--kill-on-bad-exit=1", "python", "-m", "jfacediag.train", "--config", "configs/demo.py",
                  "--workdir", "/shared/runs/a b;x", "--config.distributed=yes"]
  assert not (tmp_path / "runs").exists()
  assert not os.path.exists(os.path.join(REPO, "runs", "slurm", "jfacediag.sbatch"))
  for args, says in ((["--nodes", "2", "--"], "no training flags"), (["--nodes", "x", "--", "--config", "c.py"],
                     "--nodes must be"), (["--", "--config", "c.py"], "--gpus-per-node must be"),
                     (["--gpus-per-node", "1", "--partition", "a;b", "--", "--config", "c.py"], "is not a partition"),
                     (["--gpus-per-node", "1", "--repo", "/a b", "--", "--config", "c.py"], "cannot carry")):
    r = _dry("slurm", *args)
    assert r.returncode == 2 and says in r.stderr, (args, r.stderr)


@pytest.mark.slow
def test_the_slurm_script_starts_processes_that_join_one_mesh(toy_dir, tmp_path):
  """The written script, run as sbatch would run it, with an srun stand-in that starts its SLURM_NTASKS tasks with
  the variables srun sets: two processes find each other through JAX's SLURM detection, form one 2-device mesh and
  finish one DTL2 run."""
  script, workdir = tmp_path / "job.sbatch", tmp_path / "wd"
  flags = _train_flags(toy_dir, workdir)
  flags[1] = f"{REPO}/configs/toy.py:method=svm"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_", "JAX_COORDINATOR"))}
  r = subprocess.run(["bash", LAUNCH, "slurm", "--gpus-per-node", "2", "--script", str(script), "--", *flags],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and script.exists(), r.stderr
  stub = tmp_path / "bin" / "srun"
  stub.parent.mkdir()
  stub.write_text("""#!/usr/bin/env bash
# Stands in for srun inside an allocation: SLURM_NTASKS tasks of the command, with the variables srun sets.
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 "$@" \
    > "$TASK_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
""")
  stub.chmod(0o755)
  env.update(PATH=f"{stub.parent}:{os.path.dirname(sys.executable)}:{env['PATH']}", SLURM_JOB_ID="4242",
             SLURM_NTASKS="2", SLURM_NNODES="1", SLURM_JOB_NODELIST="localhost", TASK_LOGS=str(tmp_path))
  r = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  logs = [(tmp_path / f"task{i}.log").read_text() for i in range(2)]
  print(r.stdout, r.stderr, *logs, sep="\n")
  assert r.returncode == 0
  assert "2 device(s) (cpu), 2 process(es)" in logs[0]
  assert os.path.exists(workdir / "report" / "metrics.json")


def test_launch_tpu_run_stops_before_the_vm_when_the_preflight_refuses(tmp_path):
  """A real (not dry) `tpu run` whose global batch cannot split over a v5litepod-16's 16 chips: the pre-flight
  refuses it here, and gcloud (a stub that records any call) is never reached."""
  pytest.importorskip("libtpu", reason="libtpu (the `tpu` and `dev` extras) is not installed")
  stub = tmp_path / "bin" / "gcloud"
  stub.parent.mkdir()
  stub.write_text(f"#!/usr/bin/env bash\necho called >> {tmp_path}/gcloud-called\n")
  stub.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_"))}
  env.update(PATH=f"{stub.parent}:{os.environ['PATH']}", PYTHON=sys.executable)
  r = subprocess.run(["bash", LAUNCH, "tpu", "run", *TPU, "--accelerator-type", "v5litepod-16", "--", "--config",
                      "configs/toy.py", "--workdir", str(tmp_path / "wd"), "--config.input.batch_size=24"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  print(r.stdout, r.stderr)
  assert r.returncode == 2 and not (tmp_path / "gcloud-called").exists()
  assert "input.batch_size=24 does not divide by the topology's 16 chips; the nearest valid sizes are 16 and 32" \
      in r.stderr
  assert "nothing was started on jfd" in r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_bf16_forward_and_train_step_stay_close_to_float32():
  rng = np.random.default_rng(0)
  model = classifier.Classifier(models.get("resnet_tiny").make(), 3)
  v = steps.init_variables(model, 0, 32)
  x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
  f32 = steps.apply_in(model, jnp.float32, v, x, train=False, method="features")
  b16 = steps.apply_in(model, jnp.bfloat16, v, x, train=False, method="features")
  rel = float(jnp.abs(f32 - b16).max() / jnp.abs(f32).max())
  cos = float(jnp.min(jnp.sum(f32 * b16, -1) / jnp.linalg.norm(f32, axis=-1) / jnp.linalg.norm(b16, axis=-1)))
  print(f"resnet_tiny bf16 vs float32 features: max |diff| {rel:.2e} of the output scale, min cosine {cos:.6f}")
  assert b16.dtype == jnp.float32 and rel <= 3e-2 and cos >= 0.999  # The tolerance base_config documents.
  # One train step each way from the same state: float32 parameters, statistics and loss, close losses.
  mesh = sharding.make_mesh()
  cfg = base_config.get_config().optim
  lr = optax.constant_schedule(cfg.lr)
  tx = optim.make(cfg, v["params"], lr)
  batch = sharding.global_batch({"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
                                 "label": rng.integers(0, 3, 8).astype(np.int32)}, mesh)
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
                             opt_state=tx.init(v["params"]), rng=jax.random.key_data(jax.random.PRNGKey(0)))
    state = jax.tree.map(jnp.copy, state)  # The step donates its input.
    out[dtype] = steps.make_train_step(model, tx, mesh, 3, 0.0, True, lr, dtype)(state, batch)
  (_, m32), (s16, m16) = out[jnp.float32], out[jnp.bfloat16]
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((s16.params, s16.batch_stats, m16["loss"])))
  assert abs(float(m16["loss"]) - float(m32["loss"])) <= 2e-2 * float(m32["loss"])


@pytest.mark.slow
def test_bench_smoke_writes_valid_json(tmp_path):
  """As users run it: `python -m jfacediag.bench`, which restarts itself with huge pages where it can (cpu.py)."""
  from jfacediag import cpu  # pylint: disable=g-import-not-at-top
  path = tmp_path / "bench.json"
  env = {k: v for k, v in subprocess_env().items() if k != "GLIBC_TUNABLES"}
  r = subprocess.run([sys.executable, "-m", "jfacediag.bench", "--smoke", "--json", str(path)], env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(path.read_text())
  j = result["jfacediag"]
  huge = cpu._huge_pages_possible() and not cpu.accelerator_visible()  # pylint: disable=protected-access
  assert j["cpu_memory"] == ("huge pages (GLIBC_TUNABLES glibc.malloc.hugetlb=1)" if huge else "glibc's defaults")
  assert result["model"] == "resnet18" and j["train_img_per_s"] > 0 and j["features_img_per_s"] > 0
  assert j["input_img_per_s"] > 0 and 0.02 < j["forward_gflops_per_img"] < 0.1  # ResNet-18 at 32 px: 0.044.
  eager = result["torch"]["eager"]
  assert eager["train_ratio"] > 0 and eager["features_ratio"] > 0 and "compile" not in result["torch"]
  assert len(j["train_step_times_s"]) == len(eager["features_step_times_s"]) == 2  # --smoke: 2 steps, one turn.
  assert eager["train_turn_ratios"] == [pytest.approx(eager["train_ratio"])]
  for side in (j, eager):  # CPU use of each side's timed steps: a train step computes, so it takes user time.
    assert side["train_cpu_per_step"]["user_s"] > 0 and side["features_cpu_per_step"]["system_s"] >= 0
  assert j["train_page_faults_per_step"] == j["train_cpu_per_step"]["page_faults"]
  assert "CPU per step, PyTorch eager:" in r.stdout and "user " in r.stdout
  assert j["train_mfu"] is None and "no peak known for 'cpu'" in j["mfu_peak"]
  assert j["train_temp_mib"] > j["features_temp_mib"] > 0 and "MiB (train)" in r.stdout


def _xla_options_tool():
  spec = importlib.util.spec_from_file_location("bench_xla_options", os.path.join(REPO, "tools/bench_xla_options.py"))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  return tool


def test_bench_xla_options_reads_its_settings():
  tool = _xla_options_tool()
  args = tool.parse(["--set", "xla_cpu_enable_fast_math=true", "--set", "xla_cpu_scheduler_type=X", "--set",
                     "xla_cpu_parallel_codegen_split_count=4"])
  assert args.changes == {"xla_cpu_enable_fast_math": True, "xla_cpu_scheduler_type": "X",
                          "xla_cpu_parallel_codegen_split_count": 4}
  for bad in (["--set", "fast_math=1"], ["--set", "xla_cpu_enable_fast_math"], []):
    with pytest.raises(SystemExit):
      tool.parse(bad)


@pytest.mark.slow
def test_bench_xla_options_races_the_defaults_against_changed_options():
  """tools/bench_xla_options.py: both sides compiled and timed in turns; an option XLA refuses is named."""
  cmd = [sys.executable, os.path.join(REPO, "tools/bench_xla_options.py"), "--model", "resnet18", "--size", "32",
         "--batch", "2", "--steps", "2"]
  r = subprocess.run(cmd + ["--set", "xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"], cwd=REPO,
                     env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'" in r.stdout
  lines = [line.split() for line in r.stdout.splitlines()]
  for what in ("features", "train"):
    assert [w[:2] for w in lines if w[:1] == [what]] == [[what, "defaults"], [what, "changed"], [what, "ratio"]]
  r = subprocess.run(cmd + ["--set", "xla_cpu_no_such_option=1"], cwd=REPO, env=subprocess_env(),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode != 0 and "No such compile option: 'xla_cpu_no_such_option'" in r.stderr, r.stderr[-3000:]


def test_bench_sides_take_turns_and_report_medians_of_timed_steps(monkeypatch):
  """bench._race: warm-up calls, then turns of 1 untimed + 2 timed steps per side; medians of the timed ones."""
  from jfacediag import bench  # pylint: disable=g-import-not-at-top
  calls, clock = [], [0.0]

  def runner(side, what, seconds):
    def run():
      calls.append((side, what))
      clock[0] += seconds[len([c for c in calls if c == (side, what)]) - 1]
    return run

  # jfacediag's steps take 1 s, the first of each turn 9 s (untimed: timing it would move the median), PyTorch's 2 s.
  fast = [1, 9, 1, 1, 9, 1, 1, 9, 1, 1]
  runners = {"jfacediag": {"features": runner("j", "f", fast), "train": runner("j", "t", fast)},
             "eager": {"features": runner("e", "f", [2] * 10), "train": runner("e", "t", [2] * 10)}}
  monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
  # CPU use is counted around the timed steps only: 1 page fault, 0.5 s user and 0.25 s system each.
  monkeypatch.setattr(bench, "_cpu_used", lambda: np.array([1.0, 0.5, 0.25]) * clock[0])
  step_s, used, turns = bench._race(runners, warmup=1, steps=4)  # pylint: disable=protected-access
  assert step_s == {"jfacediag": {"features": 1.0, "train": 1.0}, "eager": {"features": 2.0, "train": 2.0}}
  assert turns["jfacediag"]["train"] == [[1, 1], [1, 1]] and turns["eager"]["features"] == [[2, 2], [2, 2]]
  assert bench.turn_ratios(turns["eager"]["train"], turns["jfacediag"]["train"]) == [2.0, 2.0]
  # Round by round: a round where the machine was twice as slow for both sides gives the same ratio.
  assert bench.turn_ratios([[2, 2], [4, 4], [2, 6]], [[1, 1], [2, 2], [1, 3]]) == [2.0, 2.0, 2.0]
  assert used["jfacediag"]["train"] == {"page_faults": 1.0, "user_s": 0.5, "system_s": 0.25}  # per 1 s step
  assert used["eager"]["features"] == {"page_faults": 2.0, "user_s": 1.0, "system_s": 0.5}  # per 2 s step
  # Features before train (the train step donates buffers the feature step reads), sides in turns.
  assert [c[0] for c in calls[:9]] == ["j", "e", "j", "j", "j", "e", "e", "e", "j"]
  assert calls.index(("j", "t")) > max(i for i, c in enumerate(calls) if c[1] == "f")
  assert len(calls) == 2 * 2 * (1 + 2 + 4)  # Per side and phase: warm-up, 2 turns' untimed steps, 4 timed.


def test_mfu_peaks_match_the_right_device():
  from jfacediag import bench  # pylint: disable=g-import-not-at-top
  assert bench.peak_tflops("TPU v5 lite", "bfloat16")[0] == 197 and bench.peak_tflops("TPU v5p", "bfloat16")[0] == 459
  assert bench.peak_tflops("TPU v4", "float32") == (275, "TPU v4 bfloat16 dense peak 275 TFLOP/s (no float32 peak "
                                                          "listed)")
  assert bench.peak_tflops("NVIDIA H100 PCIe", "bfloat16")[0] == 756
  assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "float32")[0] == 67
  assert bench.peak_tflops("NVIDIA H200", "bfloat16")[0] == 989 and bench.peak_tflops("cpu", "float32")[0] is None
  assert [bench.peak_tflops(k, "bfloat16")[0] for k in ("NVIDIA L40S", "NVIDIA L40", "NVIDIA L4")] == [362, 181, 121]


def test_workdir_files_go_through_tf_gfile_for_remote_paths():
  """gs:// workdirs use the same tf.io.gfile path as TF's in-memory ram:// filesystem exercised here."""
  from jfacediag import fileio, metric_writer, metrics, report, rundir  # pylint: disable=g-import-not-at-top
  from jfacediag.data import splits  # pylint: disable=g-import-not-at-top
  from jfacediag.tf_import import tf  # pylint: disable=g-import-not-at-top
  workdir = f"ram://jfacediag-test-{os.getpid()}/run"
  rows = [splits.Row("a/1.png", "a", "train", ""), splits.Row("b/2.png", "b", "test", "")]
  splits.write(workdir, rows, {"split": "per_class"}, ["a", "b"])
  got_rows, settings, classes = splits.read(workdir)
  assert got_rows == rows and settings == {"split": "per_class"} and classes == ["a", "b"]
  writer = metric_writer.MetricWriter(workdir)
  writer.write(1, epoch=0.5, train_loss=0.5, train_accuracy=0.5)
  writer.write(2, epoch=1.0, train_loss=0.25, train_accuracy=1.0)
  writer.close()
  assert [h["train_loss"] for h in metric_writer.read_history(workdir)] == [0.5, 0.25]
  y, scores = np.array([0, 1, 1, 0]), np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 3.0], [1.0, 0.0]])
  m = metrics.compute(y, scores, ["a", "b"], "softmax", bootstrap=20)
  report.write(workdir, m, [f"{i}.png" for i in range(4)], y, scores, ["a", "b"],
               metric_writer.read_history(workdir), [], {"method": "finetune", "backbone": "x", "workdir": workdir,
                                                         "checkpoint_step": 2, "checkpoint": "last",
                                                         "init_checkpoint": "", "split_counts": {}})
  names = set(tf().io.gfile.listdir(workdir + "/report"))
  assert {"metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png", "report.md"} <= names
  assert json.loads(fileio.read_text(workdir + "/report/metrics.json"))["accuracy"]["value"] == 1.0
  # The typed readers predict, cv and report use work on the same remote run.
  assert rundir.is_run(workdir) and rundir.read_facts(workdir)["checkpoint_step"] == 2
  assert [r["correct"] for r in rundir.read_predictions(workdir)] == ["1"] * 4
  assert rundir.read_predictions(workdir, holdout=True) is None and rundir.finished(workdir) == [("run", workdir)]
  assert isinstance(rundir.report_time(workdir), float)  # ram:// keeps no times (0.0); gs:// and disks do.
  assert not os.path.exists("ram:") and fileio.absolute(workdir) == workdir
