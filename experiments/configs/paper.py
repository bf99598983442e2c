"""The NGRPO paper's Qwen2.5-Math-7B runs and the negative-reinforcement paper's Qwen3-4B runs as presets
(hyperparameters from the authors' training scripts).  They need 8×H100-class accelerators; on a CPU they only
build::

  python -m experiments.train --config=experiments/configs/paper.py:ngrpo \
      --config.model.init_from=/path/to/Qwen2.5-Math-7B

Common: MATH train (7,500 problems), Qwen chat prompt + "Please reason step by step, and put your final
answer within \\boxed{}.", rewards 1/0; 1024 prompts × G = 8 per rollout batch, mini-batch 256 prompts
(4 optimiser steps per batch, 1 PPO epoch); prompt ≤ 1024, response ≤ 3072 tokens; rollout temperature
1.0, top-p 1.0; AdamW lr 1e-6 constant, weight decay 0.01, grad clip 1.0; entropy bonus 0.001 (NGRPO);
20 epochs (7,500 / 1024 ≈ 7.3 batches per epoch → 146 steps); evaluation 256 samples, T = 0.6, top-p 0.95.

``<algo>_qwen3_4b`` (named ``paper_<algo>_qwen3_4b``: psr, nsr, w_reinforce, ppo, grpo) are Zhu et al. 2025, "The
Surprising Effectiveness of Negative Reinforcement in LLM Reasoning" (arXiv 2506.01347), Qwen3-4B in non-thinking
mode, from their repository TianHongZXY/RLVR-Decomposed (commit a5d4e7c): ``run_qwen3-4b_psr_nsr.sh``,
``run_qwen3-4b_grpo.sh``, ``run_qwen3-4b_ppo.sh`` and the defaults they inherit from
``verl/trainer/config/ppo_trainer.yaml`` (cited per number below as ``script`` / ``yaml``)::

  python -m experiments.train --config=experiments/configs/paper.py:nsr_qwen3_4b \
      --config.model.init_from=/path/to/Qwen3-4B
"""
import dataclasses


from ngrpo_jax.training import algorithms
from ngrpo_jax.training import config
from ngrpo_jax.training import objective
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


# ----------------------------------------------------------------------------------------------------------
# Zhu et al. 2025 (negative reinforcement), Qwen3-4B. Sources: RLVR-Decomposed run_qwen3-4b_*.sh ("script"),
# verl/trainer/config/ppo_trainer.yaml ("yaml"), eval.sh ("eval.sh"), verl/utils/dataset/rl_dataset.py.

_QWEN3_STEPS = _STEPS   # script: trainer.total_epochs=20 over the same MATH train set as the 7B runs


def _qwen3_algorithm(name: str, advantage: str, advantage_kwargs=None, *, kl=None, value=False,
                     reward_kl_coef=0.0) -> algorithms.Algorithm:
  """The verl actor of RLVR-Decomposed: PPO-clip 0.2 (yaml: actor.clip_ratio), entropy bonus 0.001 (yaml:
  actor.entropy_coeff, not overridden by the scripts), token-mean loss over the micro-batch (their
  core_algos.compute_policy_loss: masked_mean over all response tokens), lr 1e-6 (script: lr=1e-6)."""
  terms = [objective.policy_gradient_term(0.2, 0.2), objective.entropy_term(0.001)]
  if kl is not None:
    terms.append(kl)
  if value:
    terms.append(objective.value_term(0.5, 0.5))  # yaml: critic.cliprange_value=0.5 (verl's value loss weight 0.5)
  return algorithms.Algorithm(name=name, advantage=advantage, advantage_kwargs=advantage_kwargs or {},
                              objective=tuple(terms), aggregation="token_mean", learning_rate=1e-6,
                              reward_kl_coef=reward_kl_coef)


QWEN3_4B_ALGORITHMS = {
    # PSR: script advantage="positive", kl_coef=0.0 (algorithm.kl_ctrl.kl_coef) → A = +1 correct, 0 wrong.
    "psr": lambda: _qwen3_algorithm("psr_only", "psr_only"),
    # NSR: script advantage="negative", kl_coef=0.0 → A = −1 wrong, 0 correct.
    "nsr": lambda: _qwen3_algorithm("nsr_only", "nsr_only"),
    # W-REINFORCE: script advantage="weighted"; λ = 0.1 is the paper's and the README's recommended value
    # (positive_advantage_weight=0.1; the shipped script leaves that line commented out, i.e. λ = 1). kl 0.0.
    "w_reinforce": lambda: _qwen3_algorithm("w_reinforce", "w_reinforce", {"lam": 0.1}),
    # GRPO: script adv_estimator=grpo, use_kl_loss=True, kl_loss_coef=0.001, kl_loss_type=low_var_kl (= k3).
    # verl's GRPO normalises by the unbiased group std (ddof 1).
    "grpo": lambda: _qwen3_algorithm("grpo", "grpo", {"ddof": 1}, kl=objective.kl_term(0.001, "k3")),
    # PPO: yaml adv_estimator=gae with gamma=1.0, lam=1.0 (not overridden by the script); script
    # algorithm.kl_ctrl.kl_coef=0.001 with use_kl_loss off → a fixed KL penalty in the reward (yaml kl_penalty=kl,
    # the k1 estimator: ``Algorithm.reward_kl_coef``). Their critic is a second Qwen3-4B trained at lr 1e-5
    # (script critic.optim.lr=1e-5); here the critic is a value head on the policy's trunk sharing its AdamW lr.
    "ppo": lambda: _qwen3_algorithm("ppo", "gae", {"gamma": 1.0, "lam": 1.0}, value=True, reward_kl_coef=0.001),
}


def _paper_qwen3_4b(algo: str) -> config.ExperimentConfig:
  """Zhu et al. 2025's Qwen3-4B run of ``algo`` (a ``QWEN3_4B_ALGORITHMS`` key)."""
  base = _paper("grpo")
  return dataclasses.replace(
      base, name=f"paper_{algo}_qwen3_4b",
      model=config.ModelSpec(init_from="Qwen3-4B", dtype="bfloat16"),    # script: model_name=Qwen/Qwen3-4B
      # script: prompt_template_type="qwen3_no_thinking" (rl_dataset.py: an empty <think></think> block);
      # data.train_files = data/math/train.parquet, val = MATH test, AIME 2025, AMC 23.
      task=dataclasses.replace(base.task, template="qwen3_no_thinking"),
      algorithm=QWEN3_4B_ALGORITHMS[algo](),
      # script: data.train_batch_size=1024 prompts, rollout.n=8, max_prompt_length=1024,
      # max_response_length=31744; yaml: rollout temperature 1.0, top_p 1; no dynamic sampling in verl's trainer.
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=1024, max_prompt_len=1024,
                                    max_new_tokens=31744, temperature=1.0, top_p=1.0, max_refills=0),
      # script: ppo_mini_batch_size=256 prompts → 4 optimiser steps per batch; yaml: ppo_epochs=1. Micro-batches
      # of 8 rows (verl: dynamic batches of ≤ 48,000 tokens per GPU, ~1 row of 32k tokens each on 8 GPUs).
      learner=update.UpdateConfig(ppo_epochs=1, num_minibatches=4, num_microbatches=256, compute_dtype="bfloat16",
                                 remat=True, logprob_chunk_size=512),
      # yaml: AdamW betas (0.9, 0.999), constant lr (warmup_style constant, no warm-up), grad_clip 1.0;
      # verl's FSDP worker: weight_decay 1e-2.
      optim=state.OptimConfig(learning_rate=1e-6, weight_decay=0.01, max_grad_norm=1.0, decay="constant"),
      rl_steps=_QWEN3_STEPS,
      # eval.sh: 256 samples, temperature 0.6, top_p 0.95, max_tokens 4096.
      eval=config.EvalSpec(num_samples=256, temperature=0.6, top_p=0.95, max_new_tokens=4096))


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
    # Zhu et al. 2025's Qwen3-4B runs (named paper_<algo>_qwen3_4b; sources at _paper_qwen3_4b).
    **{f"{a}_qwen3_4b": (lambda a=a: _paper_qwen3_4b(a)) for a in QWEN3_4B_ALGORITHMS},
}


def get_config(arg="ngrpo"):
  """The ``ml_collections.ConfigDict`` of the paper preset ``arg`` (one of ``PRESETS``)."""
  if arg not in PRESETS:
    raise ValueError(f"unknown paper.py config {arg!r}; choose one of {sorted(PRESETS)}")
  return config.to_config_dict(PRESETS[arg]())
