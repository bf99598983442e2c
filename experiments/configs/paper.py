"""The NGRPO paper's Qwen2.5-Math-7B runs as presets (hyperparameters from the authors' training scripts,
NGRPO paper §5.1).  They need 8×H100-class accelerators; on a CPU they only build::

  python -m experiments.train --config=experiments/configs/paper.py:ngrpo \
      --config.model.init_from=/path/to/Qwen2.5-Math-7B

Common: MATH train (7,500 problems), Qwen chat prompt + "Please reason step by step, and put your final
answer within \\boxed{}.", rewards 1/0; 1024 prompts × G = 8 per rollout batch, mini-batch 256 prompts
(4 optimiser steps per batch, 1 PPO epoch); prompt ≤ 1024, response ≤ 3072 tokens; rollout temperature
1.0, top-p 1.0; AdamW lr 1e-6 constant, weight decay 0.01, grad clip 1.0; entropy bonus 0.001 (NGRPO);
20 epochs (7,500 / 1024 ≈ 7.3 batches per epoch → 146 steps); evaluation 256 samples, T = 0.6, top-p 0.95.
"""

from ngrpo_jax.training import algorithms
from ngrpo_jax.training import config
from ngrpo_jax.training import rollout
from ngrpo_jax.training import sft
from ngrpo_jax.training import state
from ngrpo_jax.training import update

_STEPS = 146   # 20 epochs × ceil(7500 / 1024) batches


def _paper(algorithm: str, **kwargs) -> config.ExperimentConfig:
  return config.ExperimentConfig(
      name=f"paper_{algorithm}_7b",
      model=config.ModelSpec(init_from="Qwen2.5-Math-7B", dtype="bfloat16"),
      task=config.TaskSpec(kind="jsonl", train_path="data/math_train.jsonl", eval_path="data/math500.jsonl",
                         template="qwen_math", num_rl_prompts=7500, num_eval_problems=500),
      sft=sft.SFTConfig(steps=1),      # no warm-start (the base model already answers in \boxed{})
      algorithm=algorithms.PRESETS[algorithm],
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=1024, max_prompt_len=1024,
                                    max_new_tokens=3072, temperature=1.0, top_p=1.0, max_refills=8),
      learner=update.UpdateConfig(ppo_epochs=1, num_minibatches=4, num_microbatches=64, compute_dtype="bfloat16",
                                 remat=True, logprob_chunk_size=512),
      optim=state.OptimConfig(learning_rate=1e-6, weight_decay=0.01, max_grad_norm=1.0, decay="constant"),
      rl_steps=_STEPS,
      eval=config.EvalSpec(num_samples=256, temperature=0.6, top_p=0.95, max_new_tokens=4096),
      checkpoint_every=10, keep_checkpoints=3, group_grad_norm_every=0, grading_workers=16, **kwargs)


PRESETS = {
    # NGRPO: virtual max reward (count 1, ddof 1), clip [1 − 0.16, 1 + 0.24], no KL, drop all-correct.
    "ngrpo": lambda: _paper("ngrpo"),
    # GRPO: clip 0.2, KL 0.001 (k3).
    "grpo": lambda: _paper("grpo"),
    # DAPO: clip 0.2 / 0.28, token-level loss, dynamic sampling over homogeneous groups.
    "dapo": lambda: _paper("dapo"),
    # W-REINFORCE (PSR-NSR), λ = 0.1 explicit.
    "psr_nsr": lambda: _paper("psr_nsr"),
    "ppo": lambda: _paper("ppo"),
}


def get_config(arg="ngrpo"):
  """The ``ml_collections.ConfigDict`` of the paper preset ``arg`` (one of ``PRESETS``)."""
  if arg not in PRESETS:
    raise ValueError(f"unknown paper.py config {arg!r}; choose one of {sorted(PRESETS)}")
  return config.to_config_dict(PRESETS[arg]())
