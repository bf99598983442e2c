"""Two processes on localhost (``jax.distributed``, gloo CPU collectives), 4 virtual devices each, run one
sharded RL train step on a data=2,fsdp=2,tensor=2 mesh spanning both; the result must equal the
single-process, single-device train step. Bounded by timeouts so it can never hang the suite."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ngrpo_jax import sharding
from tests import sharding_worker as cases

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_resolve_distributed_config_from_args_and_env():
  env = {"NGRPO_COORDINATOR_ADDRESS": "10.0.0.1:1234", "NGRPO_NUM_PROCESSES": "4", "NGRPO_PROCESS_ID": "3"}
  cfg = sharding.resolve_distributed_config(environ=env)
  assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.1:1234", 4, 3)
  cfg = sharding.resolve_distributed_config("h:1", 2, 1, environ=env)  # arguments (flags) win
  assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("h:1", 2, 1)
  assert sharding.resolve_distributed_config(environ={}).num_processes == 1
  with pytest.raises(ValueError, match="coordinator_address"):
    sharding.resolve_distributed_config(num_processes=2, process_id=0, environ={})
  with pytest.raises(ValueError, match="process_id=2 must be in"):
    sharding.resolve_distributed_config("h:1", 2, 2, environ={})
  with pytest.raises(ValueError, match="integers"):
    sharding.resolve_distributed_config(environ={"NGRPO_NUM_PROCESSES": "two"})
  assert sharding.process_batch_slice(8, 1, 2) == slice(4, 8)
  with pytest.raises(ValueError, match="not divisible by the process count"):
    sharding.process_batch_slice(7, 0, 2)
  assert sharding.is_main_process()  # single process here


def test_two_process_train_step_equals_single_process(tmp_path):
  port = _free_port()
  out = tmp_path / "result.npz"
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
  procs = []
  logs = []
  for pid in range(2):
    log = open(tmp_path / f"worker{pid}.log", "w")
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "sharding_worker.py"), "--coordinator", f"127.0.0.1:{port}",
         "--num_processes", "2", "--process_id", str(pid), "--out", str(out)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO)))
  try:
    # The single-process reference, computed while the workers run.
    params = cases.make_params(cases.tiny_config())
    with jax.default_device(jax.devices()[0]):
      config = cases.tiny_config()
      batch = cases.make_batch(config, params)
      step, opt = cases.make_step(config)
      ref_state, ref_metrics = jax.device_get(jax.jit(step)(cases.make_state(params, opt), batch))
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
  except subprocess.TimeoutExpired:
    codes = None
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  text = "\n".join((tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2))
  assert codes is not None, f"workers timed out after {TIMEOUT_S}s:\n{text}"
  assert codes == [0, 0], f"worker exit codes {codes}:\n{text}"
  got = dict(np.load(out))
  assert int(got["num_global_devices"]) == 8 and int(got["num_local_devices"]) == 4
  # q_proj [L, D, H·hd] = [2, 32, 32] split P(None, fsdp, tensor) on 2×2.
  assert tuple(got["q_local_shard_shape"]) == (2, 16, 16)

  diffs = {}
  for path, ref in jax.tree_util.tree_flatten_with_path(ref_state.params)[0]:
    key = "params/" + "/".join(str(k.key) for k in path)
    diffs[key] = float(np.max(np.abs(got[key] - ref)))
  for k in ("loss", "grad_norm", "loss/policy_gradient"):
    diffs["metrics/" + k] = float(np.abs(got["metrics/" + k] - ref_metrics[k]))
  worst = max(diffs, key=diffs.get)
  print(f"two-process vs single-process: max |diff| = {diffs[worst]:.2e} ({worst}); loss "
        f"{float(got['metrics/loss']):.6f} vs {float(ref_metrics['loss']):.6f}")
  assert diffs[worst] <= 1e-5, diffs
