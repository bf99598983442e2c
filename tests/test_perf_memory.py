"""Memory properties of the RL update step (XLA buffer assignment, compile only — nothing is executed).

The whole jitted step (forward, log-probs + entropy, clipped surrogate, backward, AdamW) of
``benchmarks/memory_benchmark.py`` is compiled for a small config whose [B, T, V] float32 logits dominate
everything else, and the temporaries XLA allocates are compared between the naive path (full logits) and
the chunked log-prob path, with and without decoder-layer remat.
"""
import jax
import pytest

from benchmarks import memory_benchmark

MODEL = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
BATCH, SEQ, CHUNK = 2, 256, 32
LOGITS_BYTES = BATCH * SEQ * MODEL["vocab_size"] * 4


@pytest.fixture(scope="module")
def analyses():
  return {v: memory_benchmark.analyse(v, CHUNK, BATCH, SEQ, MODEL) for v in memory_benchmark.VARIANTS}


def test_arguments_are_params_and_adam_state_and_batch(analyses):
  from ngrpo_jax.models import qwen2
  config = qwen2.Qwen2Config(**MODEL)
  n_params = sum(x.size for x in jax.tree.leaves(
      jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))))
  batch_bytes = BATCH * (SEQ + 1) * 4 + 2 * BATCH * SEQ * 4 + BATCH * 4
  for r in analyses.values():
    # params + Adam mu + nu (float32) + count + the batch; all params/optimiser state donated.
    assert 3 * n_params * 4 + batch_bytes <= r["arguments"] <= 3 * n_params * 4 + batch_bytes + 64
    assert r["aliased"] >= 3 * n_params * 4


def test_chunked_logprobs_never_hold_full_logits(analyses):
  naive, chunked = analyses["naive+remat"], analyses["chunked+remat"]
  # The naive step keeps several [B, T, V] f32 buffers (logits, log-softmax, their cotangents) alive.
  assert naive["temps"] >= 2 * LOGITS_BYTES
  # The chunked step's temporaries are below one full logits buffer.
  assert chunked["temps"] < LOGITS_BYTES
  assert chunked["peak"] < naive["peak"] - LOGITS_BYTES


def test_remat_reduces_temporaries(analyses):
  assert analyses["chunked+remat"]["temps"] < analyses["chunked"]["temps"]
  assert analyses["naive+remat"]["temps"] < analyses["naive"]["temps"]
