"""Damaged files are named, never a raw traceback: orbax checkpoints (fall back to the previous intact one)
and safetensors weights (validated like the safetensors library does)."""
import pathlib

import jax
import numpy as np
import pytest

from ngrpo_jax import models
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import checkpoint
from ngrpo_jax.training import state as state_lib

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)


def _state(step):
  opt, _ = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-3)
  state = state_lib.create_train_state(qwen2.init_params(CFG, jax.random.PRNGKey(step)), opt, 0)
  return state.replace(step=jax.numpy.asarray(step, jax.numpy.int32))


def _damage(folder: pathlib.Path, how: str):
  files = sorted(p for p in (folder / "state").rglob("*") if p.is_file() and p.parent.name == "d")
  assert files, folder
  for path in files:
    if how == "random":
      path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    else:
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 3])


@pytest.mark.parametrize("how", ["random", "truncated"])
def test_damaged_latest_checkpoint_is_named_and_the_previous_one_restored(tmp_path, how):
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
  ckpt.save(_state(1), {"n": 1})
  ckpt.save(_state(2), {"n": 2})
  _damage(tmp_path / "ckpt" / "2", how)
  lines = []
  restored, meta = ckpt.restore_latest(_state(0), log=lines.append)
  assert int(restored.step) == 1 and meta["config"] == {"n": 1}
  np.testing.assert_array_equal(restored.params["policy"]["embed_tokens"]["embedding"],
                                _state(1).params["policy"]["embed_tokens"]["embedding"])
  assert len(lines) == 1 and "\n" not in lines[0]
  assert f"{tmp_path / 'ckpt'}/2 is damaged" in lines[0] and "previous checkpoint (step 1)" in lines[0]
  assert (tmp_path / "ckpt.damaged" / "2").is_dir() and ckpt.all_steps() == [1]
  ckpt.save(_state(2), {"n": 2})                       # the step can be saved again
  assert ckpt.all_steps() == [1, 2]
  _damage(tmp_path / "ckpt" / "1", how)
  _damage(tmp_path / "ckpt" / "2", how)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"no intact checkpoint in .*ckpt: .*/2 is damaged.*/1 is damaged"):
    ckpt.restore_latest(_state(0), log=lines.append)
  ckpt.close()


@pytest.fixture
def weights(tmp_path):
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  models.save_pretrained(tmp_path / "hf", CFG, params)
  return tmp_path / "hf"


def test_truncated_weights_file_is_named_with_the_problem(weights):
  path = weights / "model.safetensors"
  path.write_bytes(path.read_bytes()[:path.stat().st_size - 1000])
  with pytest.raises(ValueError, match=rf"{path} is not a valid safetensors file: incomplete data.*\(truncated\)"):
    models.load_pretrained(weights)
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match=rf"{path} is not a valid safetensors file: the header claims"):
    models.load_pretrained(weights)


@pytest.mark.parametrize("size", [4, 5000])
def test_random_bytes_weights_file_is_named_with_the_problem(weights, size):
  path = weights / "model.safetensors"
  path.write_bytes(np.random.default_rng(size).bytes(size))
  with pytest.raises(ValueError, match=rf"{path} is not a valid safetensors file"):
    models.load_pretrained(weights)


def test_valid_weights_with_a_gap_or_overlap_are_refused(weights):
  import json  # pylint: disable=g-import-not-at-top
  path = weights / "model.safetensors"
  raw = path.read_bytes()
  n = int.from_bytes(raw[:8], "little")
  header = json.loads(raw[8:8 + n])
  name = next(k for k in header if k != "__metadata__")
  header[name]["data_offsets"][0] += 4
  text = json.dumps(header).encode()
  text += b" " * (-len(text) % 8)
  path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
  with pytest.raises(ValueError, match=rf"{path} is not a valid safetensors file: tensor"):
    models.load_pretrained(weights)


def test_controllers_are_saved_and_restored_and_an_older_checkpoint_without_them_restores(tmp_path):
  """The adaptive coefficients (KL-in-reward ``kl_coef``, adaptive entropy) resume with the run."""
  opt, _ = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-3)
  make = lambda c: state_lib.create_train_state(qwen2.init_params(CFG, jax.random.PRNGKey(0)), opt, 0,
                                                controllers=c)
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
  adapted = make({"kl_coef": 0.5, "entropy_coef": 0.01}).replace(step=jax.numpy.asarray(3, jax.numpy.int32))
  adapted = adapted.replace(controllers={"entropy_coef": jax.numpy.float32(0.037), "kl_coef": jax.numpy.float32(0.25)})
  ckpt.save(adapted, {})
  restored, _ = ckpt.restore_latest(make({"kl_coef": 0.5, "entropy_coef": 0.01}))
  assert {k: float(v) for k, v in restored.controllers.items()} == {"entropy_coef": np.float32(0.037),
                                                                    "kl_coef": 0.25}
  old = checkpoint.Checkpointer(tmp_path / "old", keep=3)
  old.save(_state(1), {})                               # a state without controllers (as older checkpoints)
  restored, _ = old.restore_latest(make({"kl_coef": 0.5}))
  assert int(restored.step) == 1 and float(restored.controllers["kl_coef"]) == 0.5
  ckpt.close()
  old.close()
