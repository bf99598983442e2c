"""Fake sampler / grader / scorer for rollout and RL-step tests (no model sampling, no SymPy)."""
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import grading
from ngrpo_jax import sampling
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import builders
from ngrpo_jax.training import rollout
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import step as step_lib

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)


def sampler(g, r_len=6, full_length=False):
  """Random responses (ids 3..8) of random lengths; rows prompt-major like ``sampling.generate``."""
  def sample(params, ptoks, pmask, key):
    del params, pmask
    n = ptoks.shape[0] * g
    toks = np.asarray(jax.random.randint(key, (n, r_len), 3, 9), np.int32)
    lengths = np.full(n, r_len, np.int32) if full_length else np.asarray(
        jax.random.randint(jax.random.fold_in(key, 1), (n,), 1, r_len + 1), np.int32)
    mask = np.arange(r_len)[None] < lengths[:, None]
    return sampling.GenerateOutput(
        tokens=np.where(mask, toks, 0), mask=mask, lengths=lengths,
        finish_reason=np.where(lengths == r_len, sampling.FINISH_LENGTH, sampling.FINISH_STOP).astype(np.int32),
        logprobs=np.where(mask, -0.5, 0.0).astype(np.float32), sampling_logprobs=None,
        prompt_index=np.repeat(np.arange(ptoks.shape[0]), g))
  return sample


def score_fn(params, tokens, attn, value_params):
  """Deterministic stand-in for the scorer's forward pass."""
  del params
  logp = -jnp.log1p(tokens[:, 1:].astype(jnp.float32)) * attn[:, 1:]
  out = {"logp": logp, "entropy": jnp.abs(logp)}
  if value_params is not None:
    out["values"] = 0.1 * jnp.ones_like(logp)
  return out


class GroupGrader:
  """The prompt's answer says how its group grades: "all", "none", or "mixed" (by the response text)."""

  def __init__(self, delay=0.0, fail=False):
    self.delay, self.fail, self.calls = delay, fail, 0

  def __call__(self, golds, texts):
    self.calls += 1
    if self.delay:
      time.sleep(self.delay)
    if self.fail:
      raise ValueError("grader exploded")
    out = []
    for t, gold in zip(texts, golds):
      correct = {"all": True, "none": False}.get(gold, sum(map(int, t.split())) % 2 == 0)
      out.append(types.SimpleNamespace(equivalent=correct, boxed=True,
                                       pred_answer=None if gold == "none" and len(t) <= 3 else "x"))
    return out


def stream(kinds, seed=3):
  return rollout.PromptStream([{"prompt_ids": [1, 2, 3], "answer": k} for k in kinds], seed=seed)


def parts(algo, cfg, kinds, *, reward=grading.RewardConfig(), grader=None, train_step=None, r_len=6):
  """StepParts with the fakes; ``train_step`` defaults to one that records its inputs and changes nothing."""
  recorded = []

  def record(state, inputs):
    recorded.append(jax.device_get(inputs))
    return state.replace(step=state.step + 1), {}

  p = step_lib.StepParts(
      sample=sampler(cfg.group_size, r_len), grade=grader or GroupGrader(),
      decode=lambda ids: " ".join(map(str, ids)), stream=stream(kinds), rollout=cfg, reward=reward,
      keep=builders.group_filter(algo, reward), max_draws=1 + (cfg.max_refills if algo.dynamic_sampling else 0),
      score=batch_lib.make_scorer(score_fn, algo), advantages=batch_lib.make_advantages(algo, reward, cfg.group_size),
      train_step=train_step or record)
  return p, recorded


def state(algo, optimizer=None, seed=0):
  import optax  # pylint: disable=g-import-not-at-top
  params = qwen2.init_params(CFG, jax.random.PRNGKey(seed))
  value = qwen2.init_value_head(CFG, jax.random.PRNGKey(1)) if algo.uses_critic else None
  return state_lib.create_train_state(params, optimizer or optax.sgd(0.0), jax.random.PRNGKey(11),
                                      value_params=value, keep_reference=algo.uses_reference)
