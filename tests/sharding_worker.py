"""Shared cases for the sharding tests, and the worker process of the two-process test.

As a module: ``tiny_config``, ``make_params``, ``make_batch``, ``make_step`` build the same tiny Qwen2, RL
batch and train step in every process (deterministic from seeds), so a sharded result can be compared to
the single-device one.

As a script (one per process, launched by ``tests/test_sharding_multiprocess.py``)::

  python tests/sharding_worker.py --coordinator 127.0.0.1:PORT --num_processes 2 --process_id I --out F

joins the ``jax.distributed`` run, loads only its own rows of the batch, runs one sharded train step on a
``data=2,fsdp=2,tensor=2`` mesh over both processes' devices and (process 0) saves loss, grad norm and the
updated params to ``F`` (npz).
"""
import argparse
import os
import pathlib
import sys

import numpy as np

P_LEN, R_LEN, ROWS = 4, 5, 8


def tiny_config(**overrides):
  from ngrpo_jax.models import qwen2
  kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=4, max_position_embeddings=128, initializer_range=0.2, eos_token_id=2,
                pad_token_id=0)
  kwargs.update(overrides)
  return qwen2.Qwen2Config(**kwargs)


def make_params(config, seed=0):
  """Host (numpy) params, with random biases and norm scales so no parameter is trivially symmetric."""
  import jax
  from ngrpo_jax.models import qwen2
  params = jax.device_get(qwen2.init_params(config, jax.random.PRNGKey(seed)))
  rng = np.random.default_rng(seed + 100)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype))
      if str(path[-1].key) in ("bias", "scale") else np.asarray(x), params)


def make_batch(config, params, seed=1, rows=ROWS):
  """An RL batch (numpy): left-padded prompts + responses, noisy old log-probs, mixed-sign advantages."""
  import jax.numpy as jnp
  from ngrpo_jax.training import update
  rng = np.random.default_rng(seed)
  length = P_LEN + R_LEN
  tokens = rng.integers(3, config.vocab_size, (rows, length)).astype(np.int32)
  attn = np.ones((rows, length), bool)
  loss_mask = np.zeros((rows, length - 1), np.float32)
  for i in range(rows):
    pad = i % 2                      # left padding of the prompt
    resp = R_LEN - (i % 3)           # ragged responses
    attn[i, :pad] = False
    tokens[i, :pad] = 0
    attn[i, P_LEN + resp:] = False
    loss_mask[i, P_LEN - 1:P_LEN - 1 + resp] = 1
  scorer = update.make_scorer(config, update.UpdateConfig(logprob_chunk_size=4))
  logp = np.asarray(scorer(params, jnp.asarray(tokens), jnp.asarray(attn))["logp"])
  old = (logp + 0.3 * rng.standard_normal(logp.shape)).astype(np.float32)  # some ratios get clipped
  adv = np.repeat(rng.standard_normal((rows, 1)), length - 1, 1).astype(np.float32) * loss_mask
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask, "old_logp": old,
          "advantages": adv}


UPDATE_KW = dict(num_minibatches=2, num_microbatches=2, logprob_chunk_size=4)


def make_step(config, algo_name="ngrpo"):
  """(raw train_step, optimizer) for the tiny case: AdamW (weight decay 0.01), clip 1.0, 2 minibatches."""
  from ngrpo_jax.training import algorithms
  from ngrpo_jax.training import objective
  from ngrpo_jax.training import state as state_lib
  from ngrpo_jax.training import update
  algo = algorithms.with_term(algorithms.get_algorithm(algo_name), objective.entropy_term(0.001))
  # lr 1e-3 (the paper uses 1e-6): Adam divides each gradient by its own RMS, so an update's float32
  # rounding is ~lr × the relative rounding of tiny gradient entries; 1e-3 keeps that well under 1e-5.
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=1e-3), 1e-3)
  step = update.make_train_step(config, algo, update.UpdateConfig(**UPDATE_KW), opt, sched, jit=False)
  return step, opt


def make_state(params, opt):
  from ngrpo_jax.training import state as state_lib
  return state_lib.create_train_state(params, opt, 0)


def main(argv):
  ap = argparse.ArgumentParser()
  ap.add_argument("--coordinator", required=True)
  ap.add_argument("--num_processes", type=int, required=True)
  ap.add_argument("--process_id", type=int, required=True)
  ap.add_argument("--out", required=True)
  args = ap.parse_args(argv)
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

  from ngrpo_jax import sharding
  sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                  initialization_timeout=60)
  import jax
  assert jax.process_count() == args.num_processes, jax.process_count()
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  config = tiny_config()
  params = make_params(config)
  with jax.default_device(jax.local_devices()[0]):
    full_batch = make_batch(config, params)
    step, opt = make_step(config)
    state = jax.device_get(make_state(params, opt))
  # Per-process data loading: this process holds only its own rows.
  rows = sharding.process_batch_slice(ROWS)
  local = {k: v[rows] for k, v in full_batch.items()}
  batch = sharding.host_local_to_global(local, mesh)
  state_sh = sharding.train_state_shardings(config, state, mesh)
  state = sharding.device_put_global(state, state_sh)
  batch_sh = sharding.batch_shardings(batch, mesh)
  fn = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)))
  new_state, metrics = fn(state, batch)
  q = new_state.params["policy"]["layers"]["self_attn"]["q_proj"]["kernel"]
  local_shapes = sorted({tuple(s.data.shape) for s in q.addressable_shards})
  out = sharding.gather_to_host({"params": new_state.params, "metrics": metrics})
  if sharding.is_main_process():
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(out)[0]}
    flat["q_local_shard_shape"] = np.asarray(local_shapes[0])
    flat["num_local_devices"] = np.asarray(jax.local_device_count())
    flat["num_global_devices"] = np.asarray(jax.device_count())
    np.savez(args.out, **flat)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
