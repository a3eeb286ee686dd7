"""The TPU pre-flight (jfacediag.aot) on this CPU machine: a tiny network compiled for v5e:2x2 through libtpu, its
figures and JSON, a batch that cannot split refused before compiling, an oversized one refused with the figures,
and the target (not the host) choosing the code path: no CPU form of a layer reaches a TPU program."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import Mesh

from conftest import REPO, override, subprocess_env
from jfacediag import aot, sharding
from jfacediag.models import layers

pytest.importorskip("libtpu", reason="libtpu (the `tpu` and `dev` extras: pip install -e \".[dev]\") is not installed")


def _toy(**kw):
  from configs import toy  # pylint: disable=g-import-not-at-top
  return override(toy.get_config("method=finetune"), **kw)


def test_a_tiny_network_compiles_for_v5e_and_fits():
  report = aot.preflight(_toy(**{"input.batch_size": 16, "input.eval_batch_size": 16}), "v5e:2x2", log=print)
  print("\n".join(aot.summary_lines(report)))
  assert report["chips"] == 4 and report["chip"]["name"] == "TPU v5e" and report["global_batch"] == 16
  for key, per_chip in (("train", 4), ("features", 4)):
    r = report[key]
    h = r["hbm_bytes"]
    assert r["fits"] and r["per_chip_batch"] == per_chip and h["capacity"] == 16 * 2 ** 30
    assert h["total"] == h["arguments"] + h["outputs"] - h["aliased"] + h["temporaries"] + h["code"] > 0
    assert r["flops"] > 0 and r["bytes_accessed"] > 0 and r["flops_per_image"] == r["flops"] / per_chip
    e = r["estimate"]
    assert "not a measurement" in e["note"] and e["step_s"] >= max(e["compute_s"], e["hbm_s"]) > 0
    assert 0 < e["mfu_bound"] <= 1 and e["images_per_s_pod"] == pytest.approx(4 * e["images_per_s_per_chip"])
  # Synchronised BatchNorm and the gradients: all-reduces in the train step; the feature step only gathers its
  # replicated outputs (the features and their index).
  assert report["train"]["collectives"]["all-reduce"]["count"] > 0
  assert report["train"]["collectives"]["all-reduce"]["bytes"] > 0
  assert report["train"]["hbm_bytes"]["aliased"] > 0  # The donated state.
  feats = report["features"]["collectives"]
  assert sum(v["bytes"] for v in feats.values()) == 16 * 4 * (64 + 1)  # 16 x 64 float32 features, 16 int32 indices.
  assert any("FITS" in line for line in aot.summary_lines(report))
  assert all("ESTIMATE" in line for line in aot.summary_lines(report) if "img/s" in line)


def test_a_batch_that_cannot_split_is_refused_before_compiling():
  with pytest.raises(ValueError, match=r"input.batch_size=18 does not divide by the topology's 4 chips; the nearest "
                                       r"valid sizes are 16 and 20"):
    aot.preflight(_toy(**{"input.batch_size": 18}), "v5e:2x2")
  with pytest.raises(ValueError, match=r"the smallest valid size is 256 \(1 per chip\)"):
    aot.check_divides(16, 256, "input.batch_size")


def test_collectives_are_counted_from_the_optimised_hlo():
  hlo = """  %all-reduce = f32[8]{0:T(128)S(1)} all-reduce(%g), channel_id=1
  %x = (f32[8]{0:T(128)S(1)}, f32[8]{0}) fusion(%all-reduce, %c)
  %all-reduce.7 = (f32[64]{0}, bf16[3,3,64,64]{3,2,1,0:T(8,128)(2,1)}) all-reduce(%a, %b), channel_id=3
  %ag = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(%p), dims={0}
  %agd = bf16[16,8]{1,0} all-gather-done(%ag)
  ROOT %rs = f32[2,4]{1,0} reduce-scatter(%q), dimensions={0}"""
  c = aot.collectives(hlo)
  assert c["all-reduce"] == {"count": 2, "bytes": 4 * 8 + 4 * 64 + 2 * 3 * 3 * 64 * 64}
  assert c["all-gather"] == {"count": 1, "bytes": 2 * 16 * 8} and c["reduce-scatter"] == {"count": 1, "bytes": 32}


def test_the_target_not_the_host_decides_the_code_path():
  """resnet_tiny's last stage has 3x3 convs of 64 channels: on CPU they are Winograd (dots), on TPU plain
  convolutions. The TPU lowering from this CPU host equals the plain one; the CPU lowering does not."""
  c = _toy(**{"input.batch_size": 16, "input.eval_batch_size": 16})
  model, size = aot.build(c, 2)
  devices, _ = aot.topology("v5e:2x2")
  tpu, cpu_mesh = Mesh(np.array(devices), ("data",)), sharding.make_mesh()
  assert sharding.platform(tpu) == "tpu" and sharding.platform(cpu_mesh) == "cpu"

  def text(mesh, plain):
    if plain:
      with layers.as_convolutions():
        return aot.lower(c, mesh, model, size, 16 // mesh.size, 1000, 2)[0].as_text()
    return aot.lower(c, mesh, model, size, 16 // mesh.size, 1000, 2)[0].as_text()
  tpu_text = text(tpu, False)
  assert tpu_text == text(tpu, True)
  assert "xla_cpu" not in tpu_text
  cpu_text = text(cpu_mesh, False)
  assert cpu_text != text(cpu_mesh, True)  # On CPU the same step takes the CPU forms (the test can fail).
  assert tpu_text.count("stablehlo.convolution") > cpu_text.count("stablehlo.convolution")
  lowered = aot.lower(c, tpu, model, size, 4, 1000, 2)[0]
  assert lowered.compile().as_text().count("convolution(") > 0


@pytest.mark.slow
def test_the_command_writes_json_and_refuses_a_step_that_does_not_fit(tmp_path):
  """1024 px inputs, 512 images per chip: 6 GiB of images alone, far more with the activations, on a 16 GiB chip."""
  out = tmp_path / "p.json"
  cmd = [sys.executable, "-m", "jfacediag.aot", "--config", "configs/toy.py:method=finetune", "--topology", "v5e:2x2",
         "--config.model.input_size=1024", "--config.input.batch_size=2048", "--config.input.eval_batch_size=16",
         "--json", str(out)]
  r = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  print(r.stdout, r.stderr[-2000:])
  assert r.returncode == 1 and "DOES NOT FIT" in r.stdout
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the DTL1 train step does not fit on v5e:2x2:") and "HBM" in last
  assert "lower input.batch_size" in last
  report = json.loads(out.read_text())
  assert not report["train"]["fits"] and "RESOURCE_EXHAUSTED" in report["train"]["reason"]
  assert report["features"]["fits"] and report["train"]["per_chip_batch"] == 512
  r = subprocess.run([sys.executable, "-m", "jfacediag.aot", "--config", "configs/toy.py", "--topology", "v9x:2x2"],
                     cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --topology 'v9x:2x2'")


def test_a_compiler_crash_ends_in_one_line_and_keeps_its_log(capsys):
  """libtpu 0.0.42 segfaults compiling iResNet for v6e (docs/tpu.md): the pre-flight's child process dies by a
  signal, and the parent says so in one line, exit status 1, with the crash log kept."""
  crash = [sys.executable, "-c", "import os, signal, sys; print('compiling'); sys.stderr.write('Fatal Python error: "
           "Segmentation fault\\n  a dump\\n'); sys.stderr.flush(); os.kill(os.getpid(), signal.SIGSEGV)"]
  assert aot.guarded(crash, subprocess_env(), "configs/x.py for v6e:2x4") == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: the TPU compiler crashed (SIGSEGV) while compiling configs/x.py "
                                             "for v6e:2x4: a fault of libtpu, not a misfit")
  log = err[0].split("crash log: ")[1].split(")")[0]
  assert "a dump" in open(log, encoding="utf-8").read()
  os.remove(log)
  ok = [sys.executable, "-c", "import sys; sys.stderr.write('a warning\\n'); sys.exit(0)"]
  assert aot.guarded(ok, subprocess_env(), "x") == 0 and capsys.readouterr().err == "a warning\n"
