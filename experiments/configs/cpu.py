"""CPU-scale presets on the embedded synthetic addition task and a tiny Qwen2 created from scratch.

``default`` is the README's main command (``python -m experiments.train``): a 0.6M-parameter Qwen2
(d=128, 3 layers) is warm-started for 600 steps on additions whose longer operand has 1.5-3.2 digits
(expected), then trained with NGRPO for 60 steps on 2.5-3.0-digit problems (16 prompts × G=8 per step,
2 PPO epochs × 2 minibatches, lr 5e-5, entropy bonus 0.02), then evaluated on 256 held-out 2.5-3.0-digit
problems with 16 samples each at the RL sampling temperature (1.0).

Calibration (the difficulty band, the warm-start length, the learning rates, the entropy bonus) and every
measured run behind it are in docs/default_calibration.md: 4-digit problems are left out of the RL and
held-out bands (the warm-started model never solves them), and at this scale RL raises pass@1 while pass@16
falls. Longer NGRPO runs / higher learning rates erode the answer format (its advantages sum to a negative
number in every group); ``parseable_frac`` and ``format/*`` show it, and ``reward.format_reward`` (NGRPO's
virtual sample follows the task's maximum reward), a KL term or a lower learning rate are the remedies.
``time_budget_s`` stops RL early on a slow machine so the whole run stays within 10 minutes.

``smoke`` is the same pipeline shrunk to ~1 minute (the CI end-to-end test). ``ngrpo_qwen3`` (``cpu_ngrpo_qwen3``)
runs the NGRPO recipe, shortened to a few minutes, on a tiny Qwen3 (q/k norms, no attention biases,
head_dim ≠ hidden / heads).  ``<algo>`` (ngrpo, grpo,
dapo, psr_nsr, psr_only, nsr_only, ppo, and every other ``algorithms.PRESETS`` entry: gspo, cispo, gdpo,
pkpo, ...) run the default's recipe with another algorithm (per-algorithm learning rates, untuned 5e-5 for
the newer methods; the same entropy bonus; the algorithm preset's own KL term is kept); ``ngrpo_ablation``
takes the switches of ``algorithms.ngrpo_ablation`` after commas. Any preset takes switches that swap one
piece by registry name (``with_switches``)::

  python -m experiments.train --config=experiments/configs/cpu.py:smoke,advantage=gdpo,policy=gspo
  python -m experiments.train --config=experiments/configs/cpu.py:default,algorithm=cispo

Used as absl config files (big_vision's convention)::

  python -m experiments.train --config=experiments/configs/cpu.py:grpo --config.rl_steps=20
  python -m experiments.train --config=experiments/configs/cpu.py:ngrpo_ablation,virtual_count=2,keep_all_wrong=False
"""
import ast
import dataclasses
import inspect

from ngrpo_jax.training import algorithms
from ngrpo_jax.training import config
from ngrpo_jax.training import objective
from ngrpo_jax.training import registry
from ngrpo_jax.training import rollout
from ngrpo_jax.training import sft
from ngrpo_jax.training import state
from ngrpo_jax.training import update

# Per-algorithm peak learning rates for the tiny model (NGRPO's advantages sum to a negative number in
# every group, so it gets a lower rate than GRPO; docs/default_calibration.md).
CPU_LEARNING_RATES = {"ngrpo": 5e-5, "grpo": 1e-4, "dapo": 1e-4, "psr_nsr": 5e-5, "psr_only": 1e-4,
                      "nsr_only": 5e-5, "ppo": 1e-4}
# Entropy bonus of the CPU presets: without it the tiny policy's entropy falls during RL and pass@16 drops
# further. NGRPO's rate was chosen by measurement, the others are untuned (docs/default_calibration.md).
CPU_ENTROPY_COEF = 0.02
# The learning rate of the presets not in CPU_LEARNING_RATES (the newer methods): untuned, NGRPO's rate.
NEW_METHOD_LEARNING_RATE = 5e-5


def cpu_algorithm(algo: algorithms.Algorithm, learning_rate: float) -> algorithms.Algorithm:
  """``algo`` with the CPU learning rate and entropy bonus."""
  algo = algorithms.with_term(algo, objective.entropy_term(CPU_ENTROPY_COEF))
  return dataclasses.replace(algo, learning_rate=learning_rate)


def default(algo: algorithms.Algorithm = None) -> config.ExperimentConfig:
  """The embedded default experiment (NGRPO unless ``algo`` is given)."""
  algo = algo or cpu_algorithm(algorithms.PRESETS["ngrpo"], CPU_LEARNING_RATES["ngrpo"])
  return config.ExperimentConfig(
      name="default",
      model=config.ModelSpec(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2),
      # 4-digit problems are excluded from RL / held-out: the warm-start barely covers them and the policy
      # never solves them (a systematic, unlearnable-in-minutes failure, not a near miss).
      task=config.TaskSpec(sft_difficulty=(1.5, 3.2), rl_difficulty=(2.5, 3.0), eval_difficulty=(2.5, 3.0),
                           num_sft_examples=6000, num_rl_prompts=3000, num_eval_problems=256),
      # Unchunked log-probs (the [B, T, V] logits of the 100-token character vocabulary are small) and unrolled
      # layers: the fastest XLA:CPU update for a 3-layer model (docs/benchmarks.md).
      sft=sft.SFTConfig(steps=600, batch_size=32, learning_rate=3e-3, warmup_steps=20, max_len=72,
                        logprob_chunk_size=None, unroll_layers=True),
      algorithm=algo,
      rollout=rollout.RolloutConfig(group_size=8, groups_per_batch=16, max_prompt_len=12, max_new_tokens=56,
                                    temperature=1.0, max_refills=2),
      learner=update.UpdateConfig(ppo_epochs=2, num_minibatches=2, logprob_chunk_size=None, unroll_layers=True),
      optim=state.OptimConfig(warmup_steps=5, weight_decay=0.0),
      rl_steps=60,
      # Evaluated at the RL sampling temperature: at T = 0.6 the tiny policy is near-deterministic per
      # problem (solved 0/16 or 16/16), which hides changes in its solve rates.
      eval=config.EvalSpec(num_samples=16, temperature=1.0, top_p=1.0, batch_problems=32),
      checkpoint_every=20, keep_checkpoints=2, group_grad_norm_every=10, grading_workers=1,
      time_budget_s=540.0)


def smoke() -> config.ExperimentConfig:
  """The default pipeline shrunk to about a minute (the CI end-to-end test)."""
  cfg = default()
  return dataclasses.replace(
      cfg, name="smoke",
      model=config.ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=1),
      task=dataclasses.replace(cfg.task, num_sft_examples=64, num_rl_prompts=64, num_eval_problems=8,
                               sft_difficulty=(1.0, 2.0), rl_difficulty=(1.0, 2.0), eval_difficulty=(1.0, 2.0)),
      sft=dataclasses.replace(cfg.sft, steps=10, batch_size=8, max_len=40),
      rollout=dataclasses.replace(cfg.rollout, group_size=4, groups_per_batch=4, max_prompt_len=8,
                                  max_new_tokens=32, max_refills=1),
      learner=dataclasses.replace(cfg.learner, ppo_epochs=1, num_minibatches=2),
      rl_steps=3, eval=dataclasses.replace(cfg.eval, num_samples=4, batch_problems=8),
      checkpoint_every=2, group_grad_norm_every=2, time_budget_s=None)


def cpu(algorithm: str) -> config.ExperimentConfig:
  """The default recipe with another algorithm preset (its CPU learning rate, the CPU entropy bonus)."""
  algo = cpu_algorithm(algorithms.PRESETS[algorithm], CPU_LEARNING_RATES.get(algorithm, NEW_METHOD_LEARNING_RATE))
  return dataclasses.replace(default(algo), name=f"cpu_{algorithm}")


def qwen3(algorithm: str = "ngrpo") -> config.ExperimentConfig:
  """The default recipe with a tiny Qwen3 (per-head q/k RMSNorm, no q/k/v biases, head_dim 48 ≠ 128 / 4 heads)
  instead of the Qwen2, shortened to a few minutes on an idle 2-core CPU: 300 warm-start steps, 20 RL steps, 128
  held-out problems; no time budget (the default's budget counts the warm-start, so on a busy machine it
  would end RL before its first step)."""
  cfg = cpu(algorithm)
  return dataclasses.replace(
      cfg, name=f"cpu_{algorithm}_qwen3",
      model=dataclasses.replace(cfg.model, model_type="qwen3", head_dim=48),
      task=dataclasses.replace(cfg.task, num_eval_problems=128),
      sft=dataclasses.replace(cfg.sft, steps=300), rl_steps=20, checkpoint_every=10, time_budget_s=None)


def ablation(**switches) -> config.ExperimentConfig:
  """An NGRPO ablation (paper Tables 2 and 3) with the default recipe."""
  algo = cpu_algorithm(algorithms.ngrpo_ablation(**switches), CPU_LEARNING_RATES["ngrpo"])
  return dataclasses.replace(default(algo), name=f"cpu_{algo.name}")


PRESETS = {"default": default, "smoke": smoke, **{a: (lambda a=a: cpu(a)) for a in CPU_LEARNING_RATES}}
# The other algorithm presets (algorithms.PRESETS) run the default recipe at an untuned learning rate.
PRESETS.update({a: (lambda a=a: cpu(a)) for a in algorithms.PRESETS if a not in PRESETS})
# The tiny Qwen3 run (cpu_ngrpo_qwen3).
PRESETS["ngrpo_qwen3"] = qwen3

# Switches after a preset name: ``smoke,advantage=gdpo,policy=gspo,term=adaptive_entropy_bonus``.
SWITCHES = ("algorithm", "advantage", "policy", "term", "aggregation")


def _defaults(fn, skip=()) -> dict:
  """The keyword-only arguments of ``fn`` with their (non-None) defaults, so every one of them is a config
  entry the command line can override (``--config.algorithm.advantage_kwargs.k=8``)."""
  return {p.name: p.default for p in inspect.signature(fn).parameters.values()
          if p.kind == p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty and p.default is not None
          and p.name not in ("r_max", "r_min", *skip)}


def with_switches(cfg: config.ExperimentConfig, switches: dict) -> config.ExperimentConfig:
  """``cfg`` with its algorithm changed by the switches (each a registry name; arguments at their defaults):

  algorithm=<preset>   another ``algorithms.PRESETS`` entry (CPU learning rate and entropy bonus);
  advantage=<name>     the advantage estimator (``registry.ADVANTAGE_ESTIMATORS``);
  policy=<name>        the objective term replacing ``policy_gradient`` (``registry.OBJECTIVE_TERMS``);
  term=<name>          an extra objective term (e.g. ``adaptive_entropy_bonus``, ``kl_to_reference``);
  aggregation=<mode>   one of ``losses.AGGREGATIONS``.
  """
  unknown = set(switches) - set(SWITCHES)
  if unknown:
    raise ValueError(f"unknown switches {sorted(unknown)}; known: {list(SWITCHES)}")
  algo = cfg.algorithm
  if "algorithm" in switches:
    name = switches["algorithm"]
    if name not in algorithms.PRESETS:
      raise ValueError(f"unknown algorithm preset {name!r}; choose one of {sorted(algorithms.PRESETS)}")
    algo = cpu_algorithm(algorithms.PRESETS[name], CPU_LEARNING_RATES.get(name, NEW_METHOD_LEARNING_RATE))
  if "advantage" in switches:
    entry = registry.ADVANTAGE_ESTIMATORS.get(switches["advantage"])
    algo = dataclasses.replace(algo, advantage=switches["advantage"],
                               advantage_kwargs=_defaults(entry.fn, skip=entry.needs))
  if "policy" in switches:
    name = switches["policy"]
    term = objective.Term(name, 1.0, _defaults(registry.OBJECTIVE_TERMS.get(name).fn))
    algo = algorithms.with_term(algorithms.without_term(algo, "policy_gradient"), term)
  if "term" in switches:
    name = switches["term"]
    algo = algorithms.with_term(algo, objective.Term(name, 1.0, _defaults(registry.OBJECTIVE_TERMS.get(name).fn)))
  if "aggregation" in switches:
    algo = dataclasses.replace(algo, aggregation=switches["aggregation"])
  label = ",".join(f"{k}={v}" for k, v in sorted(switches.items()))
  return dataclasses.replace(cfg, algorithm=dataclasses.replace(algo, name=f"{algo.name}[{label}]"))


def _parse(items) -> dict:
  out = {}
  for item in items:
    key, _, value = item.partition("=")
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()
  return out


def build(arg=None) -> config.ExperimentConfig:
  """The typed config of ``arg``: ``<preset>[,switch=value...]`` (``SWITCHES``), or
  ``ngrpo_ablation[,switch=value...]``."""
  name, *rest = (arg or "default").split(",")
  if name == "ngrpo_ablation":
    return ablation(**_parse(rest))
  if name not in PRESETS:
    raise ValueError(f"unknown cpu.py config {arg!r}; choose one of {sorted(PRESETS)} or "
                     f"ngrpo_ablation[,switch=value...]")
  cfg = PRESETS[name]()
  return with_switches(cfg, _parse(rest)) if rest else cfg


def get_config(arg=None):
  """The ``ml_collections.ConfigDict`` of ``arg`` (see :func:`build`) for ``config_flags``."""
  return config.to_config_dict(build(arg))
