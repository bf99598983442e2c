"""CPU-scale presets on the embedded synthetic addition task and a tiny Qwen2 created from scratch.

``default`` is the README's main command (``python -m experiments.train``): a short supervised warm-start
on easier additions (longer operands under-trained), then NGRPO on a pool whose per-prompt solve rates
spread over the middle range, then a held-out evaluation before vs after — in ≤ 10 minutes on 2 cores.
``smoke`` is the same pipeline shrunk to ~1 minute (the CI end-to-end test).  ``cpu_<algo>`` run the
default's recipe with another algorithm (per-algorithm learning rates).
"""
import dataclasses

from ngrpo_jax.training import loop
from ngrpo_jax.training import rollout
from ngrpo_jax.training import sft
from ngrpo_jax.training import state
from ngrpo_jax.training import update

# Per-algorithm peak learning rates for the tiny model (NGRPO's advantages sum to a negative number in
# every group, so it gets a lower rate than GRPO; see NGRPO.md's CPU notes).
CPU_LEARNING_RATES = {"ngrpo": 1e-4, "grpo": 1e-4, "dapo": 1e-4, "psr_nsr": 5e-5, "psr_only": 1e-4,
                      "nsr_only": 5e-5, "ppo": 1e-4}


def default() -> loop.ExperimentConfig:
  return loop.ExperimentConfig(
      name="default",
      model=loop.ModelSpec(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2),
      task=loop.TaskSpec(sft_difficulty=(1.0, 4.5), rl_difficulty=(2.5, 4.5), eval_difficulty=(2.5, 4.5),
                         num_sft_examples=6000, num_rl_prompts=3000, num_eval_problems=64),
      sft=sft.SFTConfig(steps=260, batch_size=32, learning_rate=3e-3, warmup_steps=15, max_len=80),
      algorithm="ngrpo",
      algorithm_overrides=(("learning_rate", CPU_LEARNING_RATES["ngrpo"]),),
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=16, max_prompt_len=16, max_new_tokens=64,
                                    temperature=1.0, max_refills=2),
      update=update.UpdateConfig(ppo_epochs=2, num_minibatches=2, logprob_chunk_size=64),
      optim=state.OptimConfig(warmup_steps=5, weight_decay=0.0),
      rl_steps=60,
      eval=loop.EvalSpec(num_samples=16, temperature=0.6, top_p=0.95, batch_problems=32),
      checkpoint_every=20, keep_checkpoints=2, group_grad_norm_every=10, grading_workers=1,
      time_budget_s=540.0)


def smoke() -> loop.ExperimentConfig:
  cfg = default()
  return dataclasses.replace(
      cfg, name="smoke",
      model=loop.ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1),
      task=dataclasses.replace(cfg.task, num_sft_examples=64, num_rl_prompts=64, num_eval_problems=8,
                               sft_difficulty=(1.0, 2.0), rl_difficulty=(1.0, 2.0), eval_difficulty=(1.0, 2.0)),
      sft=dataclasses.replace(cfg.sft, steps=10, batch_size=8, max_len=40),
      rollout=dataclasses.replace(cfg.rollout, group_size=4, groups_per_batch=4, max_prompt_len=8,
                                  max_new_tokens=32, max_refills=1),
      update=dataclasses.replace(cfg.update, ppo_epochs=1, num_minibatches=2),
      rl_steps=3, eval=dataclasses.replace(cfg.eval, num_samples=4, batch_problems=8),
      checkpoint_every=2, group_grad_norm_every=2, time_budget_s=None)


def _cpu(algorithm):
  def make():
    return dataclasses.replace(default(), name=f"cpu_{algorithm}", algorithm=algorithm,
                               algorithm_overrides=(("learning_rate", CPU_LEARNING_RATES[algorithm]),))
  return make


PRESETS = {"default": default, "smoke": smoke, **{f"cpu_{a}": _cpu(a) for a in CPU_LEARNING_RATES}}
