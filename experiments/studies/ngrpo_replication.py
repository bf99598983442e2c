"""A CPU-scale replication of the NGRPO paper's Tables 1-3 / Figures 2, 4, 5 (Nan et al. 2025, arXiv 2509.18851)
and the negative-reinforcement paper's pass@k claims (Zhu et al. 2025, arXiv 2506.01347).

  python -m experiments.study --study=experiments/studies/ngrpo_replication.py:full --workdir=runs/replication
  python -m experiments.study --study=experiments/studies/ngrpo_replication.py:reduced --workdir=runs/replication_reduced

**Regime** (the issue's "30-60% of G = 8 groups all-wrong at the start, yet learnable"): a 0.6M-parameter
Qwen2 (d = 128, 3 layers) warm-started for 450 steps on additions whose longer operand has 2-4 digits
(2.0-4.0 expected), so 4-digit problems are seen but under-trained and most errors are one wrong column (a
near miss); RL and the held-out sets are 3.0-3.8 (3- and 4-digit). One warm-start (data seed 0) is shared by
every arm; the RL pool is 256 problems (48 steps × 16 prompts = 3 epochs, so problems recur as in the
paper's 20 epochs over MATH), the test set 128 problems, a validation split (10% of operand pairs, disjoint
from train and test) 64 problems.

**Recipe shared by every arm**, following the authors' scripts where the scale allows: G = 8, 16 prompts per
rollout batch, 4 optimizer steps per batch (1 epoch × 4 minibatches, as the authors' 1024 / 256), AdamW
constant rate, weight decay 0.01, grad clip 1.0, entropy bonus 0.001 for every arm, rollout temperature 1.0,
max 56 new tokens (a 4-digit solution is 50). Held-out: N = 256 samples per problem at temperature 1.0 (the
paper evaluates at 0.6 / top-p 0.95; at 0.6 this tiny policy is near-deterministic per problem, which
flattens pass@k), pass@k for k = 1..256 and the AUC by the authors' formula.

**Arms**: the algorithm presets (``algorithms.PRESETS``: the paper's settings — GRPO with KL 0.001 (k3), DAPO
with clip 0.2 / 0.28 and dynamic sampling, PSR-NSR = W-REINFORCE λ = 0.1, PPO with a value head and
GAE(1, 0.95)), PSR-only / NSR-only, the Table 2 ablation (``algorithms.ngrpo_ablation``; its first row is
GRPO's estimator with DAPO's filter and no KL, i.e. the ablation's own base, next to the Table 1 GRPO) and
Table 3 (virtual reward max / medium / min, count 1 / 2 / 4), and two rivals of NGRPO as extra rows: LENS
(confidence-weighted negative reward, arXiv 2510.08696) and RL-ZVP (zero-variance groups get entropy-scaled
advantages, arXiv 2509.21880), at NGRPO's rate. Learning rates: each Table 1 arm and PSR-only /
NSR-only tuned over {1e-5, 3e-5, 1e-4, 3e-4} on the validation split (24 RL steps, seed 100, 64 × 64 samples,
validation pass@1: see TUNING_CRITERION for why not the AUC); the ablation arms use NGRPO's tuned rate, as the paper's ablations share NGRPO's
hyperparameters.

``reduced`` (≤ 30 minutes on 2 cores; says so in its report): GRPO, PSR-NSR and NGRPO, 2 seeds, 24 RL steps,
no tuning (every arm at 3e-5, the rate the full study's first tuning grid chose for every arm), 64 test problems × 64 samples.
"""
import dataclasses

from experiments import study_runner as study_lib
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import config
from ngrpo_jax.training import objective
from ngrpo_jax.training import rollout
from ngrpo_jax.training import sft
from ngrpo_jax.training import state
from ngrpo_jax.training import update

ENTROPY_COEF = 0.001               # the authors' entropy bonus, for every arm
# Tuning history (all before any run on the test split; docs/replication.md): the first grid {3e-5, 1e-4, 3e-4}
# with the validation Pass@k AUC as the criterion put every arm at its lower edge; with 1e-5 added, 1e-5 won
# for most arms, and no arm at any rate beat the warm-start's own validation AUC (46.9): RL only lowers the
# AUC here, so that criterion selects "as little RL as possible" and would make every arm the base model.
# The criterion is therefore validation pass@1 (what RL optimises); the AUC is reported beside it.
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4)
TUNING_CRITERION = "pass@1"
SEEDS = (0, 1, 2)
# The headline rows (Table 1 and Zhu et al.'s PSR-only / NSR-only: claims C1, C4-C8) get 5 seeds, as the issue
# asks "where the budget allows"; added after the 3-seed runs had finished (the 3-seed numbers were preliminary).
HEADLINE_SEEDS = (0, 1, 2, 3, 4)


def _task(**kw) -> config.TaskSpec:
  return config.TaskSpec(sft_difficulty=(2.0, 4.0), rl_difficulty=(3.0, 3.8), eval_difficulty=(3.0, 3.8),
                         num_sft_examples=6000, num_rl_prompts=256, num_eval_problems=128, data_seed=0,
                         validation_fraction=0.1, **kw)


def recipe(rl_steps: int = 48, eval_problems: int = 128, eval_samples: int = 256) -> config.ExperimentConfig:
  """The config every arm shares (the runner sets algorithm, seed, learning rate and the warm-start)."""
  return config.ExperimentConfig(
      name="ngrpo_replication",
      model=config.ModelSpec(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2),
      task=dataclasses.replace(_task(), num_eval_problems=eval_problems),
      sft=sft.SFTConfig(steps=450, batch_size=32, learning_rate=3e-3, warmup_steps=20, max_len=72,
                        logprob_chunk_size=None, unroll_layers=True),
      algorithm=algorithms.PRESETS["ngrpo"],
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=16, max_prompt_len=12, max_new_tokens=56,
                                    temperature=1.0, max_refills=2),
      learner=update.UpdateConfig(ppo_epochs=1, num_minibatches=4, logprob_chunk_size=None, unroll_layers=True),
      optim=state.OptimConfig(warmup_steps=0, weight_decay=0.01),
      rl_steps=rl_steps,
      eval=config.EvalSpec(num_samples=eval_samples, temperature=1.0, top_p=1.0, batch_problems=16, before=False),
      checkpoint_every=8, keep_checkpoints=1, group_grad_norm_every=0, grading_workers=1, tensorboard=False,
      export_hf=True, time_budget_s=None)


def warm_start(base: config.ExperimentConfig) -> config.ExperimentConfig:
  """The supervised warm-start every arm starts from; its held-out evaluation is the "base" row."""
  return dataclasses.replace(base, name="ngrpo_replication/warm_start", rl_steps=0)


def _arm(name, algo, group, **kw) -> study_lib.Arm:
  algo = algorithms.with_term(dataclasses.replace(algo, name=name), objective.entropy_term(ENTROPY_COEF))
  return study_lib.Arm(name=name, algorithm=algo, group=group, **kw)


def arms(tuned: bool = True) -> tuple:
  lrs = LEARNING_RATES if tuned else ()
  p, abl = algorithms.PRESETS, algorithms.ngrpo_ablation
  ngrpo_lr = {"lr_from": "ngrpo"}
  return (
      _arm("ppo", p["ppo"], "table1", learning_rates=lrs),
      _arm("grpo", p["grpo"], "table1", learning_rates=lrs),
      _arm("dapo", p["dapo"], "table1", learning_rates=lrs),
      _arm("psr_nsr", p["psr_nsr"], "table1", learning_rates=lrs),
      _arm("ngrpo", p["ngrpo"], "table1", learning_rates=lrs),
      _arm("psr_only", p["psr_only"], "zhu", learning_rates=lrs),
      _arm("nsr_only", p["nsr_only"], "zhu", learning_rates=lrs),
      _arm("abl_grpo", abl(calibration=False, keep_all_wrong=False, asymmetric_clip=False), "table2", **ngrpo_lr),
      _arm("abl_asym", abl(calibration=False, keep_all_wrong=False), "table2", **ngrpo_lr),
      _arm("abl_calib", abl(keep_all_wrong=False, asymmetric_clip=False), "table2", **ngrpo_lr),
      _arm("abl_calib_asym", abl(keep_all_wrong=False), "table2", **ngrpo_lr),
      _arm("vr_medium", abl(virtual_reward="medium"), "table3", **ngrpo_lr),
      _arm("vr_min", abl(virtual_reward="min"), "table3", **ngrpo_lr),
      _arm("vc2", abl(virtual_count=2), "table3", **ngrpo_lr),
      _arm("vc4", abl(virtual_count=4), "table3", **ngrpo_lr),
      # NGRPO's rivals that no other library ships (issue 17's estimators), at NGRPO's rate.
      _arm("lens", p["lens"], "rivals", **ngrpo_lr),
      _arm("rl_zvp", p["rl_zvp"], "rivals", **ngrpo_lr),
  )


def full() -> study_lib.Study:
  base = recipe()
  return study_lib.Study(
      name="ngrpo_replication",
      description=("the full study: 17 arms, learning rates tuned per arm; 5 seeds for the Table 1 and "
                   "PSR-only / NSR-only arms, 3 for the Table 2 / 3 ablations and the rivals"),
      warm_start=warm_start(base), base=base, seeds=SEEDS,
      arms=tuple(dataclasses.replace(a, seeds=HEADLINE_SEEDS) if a.group in ("table1", "zhu") else a
                 for a in arms()),
      tuning=study_lib.Tuning(rl_steps=24, num_problems=64, num_samples=64, seed=100, criterion=TUNING_CRITERION),
      pool_samples=32)


def reduced() -> study_lib.Study:
  base = recipe(rl_steps=24, eval_problems=64, eval_samples=64)
  keep = ("grpo", "psr_nsr", "ngrpo")
  chosen = tuple(dataclasses.replace(a, algorithm=dataclasses.replace(a.algorithm, learning_rate=3e-5))
                 for a in arms(tuned=False) if a.name in keep)
  return study_lib.Study(
      name="ngrpo_replication_reduced",
      description=("REDUCED: 3 arms (GRPO, PSR-NSR, NGRPO) × 2 seeds, 24 RL steps, no learning-rate tuning "
                   "(3e-5 for every arm), 64 test problems × 64 samples — a quick check of the pipeline and "
                   "of the direction of the effects, not the study"),
      warm_start=warm_start(base), base=base, arms=chosen, seeds=(0, 1), tuning=None, pool_samples=16)


def get_study(arg=None) -> study_lib.Study:
  studies = {"full": full, "reduced": reduced}
  if (arg or "full") not in studies:
    raise ValueError(f"unknown study {arg!r}; choose one of {sorted(studies)}")
  return studies[arg or "full"]()
