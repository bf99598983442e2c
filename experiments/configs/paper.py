"""The NGRPO paper's Qwen2.5-Math-7B runs as presets (hyperparameters from the authors' scripts; see
NGRPO.md "Paper's training setup").  They need 8×H100-class accelerators; on a CPU they only build.

Common: MATH train (7,500 problems), Qwen chat prompt + "Please reason step by step, and put your final
answer within \\boxed{}.", rewards 1/0; 1024 prompts × G = 8 per rollout batch, mini-batch 256 prompts
(4 optimiser steps per batch, 1 PPO epoch); prompt ≤ 1024, response ≤ 3072 tokens; rollout temperature
1.0, top-p 1.0; AdamW lr 1e-6 constant, weight decay 0.01, grad clip 1.0; entropy bonus 0.001 (NGRPO);
20 epochs (7,500 / 1024 ≈ 7.3 batches per epoch → 146 steps); evaluation 256 samples, T = 0.6, top-p 0.95.
"""

from ngrpo_jax.training import loop
from ngrpo_jax.training import rollout
from ngrpo_jax.training import sft
from ngrpo_jax.training import state
from ngrpo_jax.training import update

_STEPS = 146   # 20 epochs × ceil(7500 / 1024) batches


def _paper(algorithm: str, **kwargs) -> loop.ExperimentConfig:
  return loop.ExperimentConfig(
      name=f"paper_{algorithm}_7b",
      model=loop.ModelSpec(init_from="Qwen2.5-Math-7B", dtype="bfloat16"),
      task=loop.TaskSpec(kind="jsonl", train_path="data/math_train.jsonl", eval_path="data/math500.jsonl",
                         template="qwen_math", num_rl_prompts=7500, num_eval_problems=500),
      sft=sft.SFTConfig(steps=1),      # no warm-start (the base model already answers in \boxed{})
      algorithm=algorithm,
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=1024, max_prompt_len=1024,
                                    max_new_tokens=3072, temperature=1.0, top_p=1.0, max_refills=8),
      update=update.UpdateConfig(ppo_epochs=1, num_minibatches=4, num_microbatches=64, compute_dtype="bfloat16",
                                 remat=True, logprob_chunk_size=512),
      optim=state.OptimConfig(learning_rate=1e-6, weight_decay=0.01, max_grad_norm=1.0, decay="constant"),
      rl_steps=_STEPS,
      eval=loop.EvalSpec(num_samples=256, temperature=0.6, top_p=0.95, max_new_tokens=4096),
      checkpoint_every=10, keep_checkpoints=3, group_grad_norm_every=0, grading_workers=16, **kwargs)


PRESETS = {
    # NGRPO: virtual max reward 1.0 (count 1, ddof 1), clip [1 − 0.16, 1 + 0.24], no KL, drop all-correct.
    "paper_ngrpo_7b": lambda: _paper("ngrpo"),
    # GRPO: clip 0.2, KL 0.001 (k3).
    "paper_grpo_7b": lambda: _paper("grpo"),
    # DAPO: clip 0.2 / 0.28, token-level loss, dynamic sampling over homogeneous groups.
    "paper_dapo_7b": lambda: _paper("dapo"),
    # W-REINFORCE (PSR-NSR), λ = 0.1 explicit.
    "paper_psr_nsr_7b": lambda: _paper("psr_nsr"),
    "paper_ppo_7b": lambda: _paper("ppo"),
}
