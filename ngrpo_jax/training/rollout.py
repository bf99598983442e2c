"""Rollout: prompts → G sampled responses each → detokenise → grade → rewards → advantages → filter.

Host-side glue around the jitted pieces (``sampling.generate`` and the trainer's scorer).  One call of
:func:`collect` produces one fixed-shape training batch (see ``ngrpo_jax.training.update``) plus metrics:

1. draw ``groups_per_batch`` prompts from the :class:`PromptStream` at the current data position;
2. sample G responses per prompt, decode, grade (the grading module's batch API, in worker processes;
   with ``pipeline_grading`` on a background thread, overlapping the next draw's sampling or the scoring);
3. rewards: ``correct_reward`` / ``wrong_reward``, optional format bonus, optional DAPO overlong shaping;
4. group filter of the algorithm (DAPO: drop homogeneous groups; NGRPO: drop all-correct groups) —
   with dynamic sampling, draw further prompt batches until the batch is full or ``max_refills`` draws
   were made (the count is logged; the remainder is padding with zero loss mask);
5. advantages with the algorithm's estimator over the kept groups' rewards [N, G];
6. score the batch with the trainer's forward pass: old log-probs (and their gap to the sampler's),
   the reference policy's log-probs (KL), values and GAE (critic).
"""
import concurrent.futures
import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import advantages as advantages_lib
from ngrpo_jax.training import algorithms as algorithms_lib

KIND_MIXED, KIND_ALL_CORRECT, KIND_ALL_WRONG, KIND_PAD = 0, 1, 2, -1


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Sampling, reward and batch-assembly options.

  Attributes:
    group_size: G responses per prompt (paper: 8).
    groups_per_batch: prompt groups in one training batch (paper: 1024).
    max_prompt_len: prompts are left-padded to this many tokens (longer prompts raise).
    max_new_tokens: response budget (paper: 3072).
    temperature, top_p, top_k, min_p: sampling filters (paper: 1.0, 1.0, off, off).
    max_refills: dynamic sampling draws at most this many extra prompt batches per step.
    mask_truncated: responses that hit ``max_new_tokens`` get no loss (their tokens are masked out).
    overlong_buffer: DAPO overlong shaping: with L = max_new_tokens and buffer b, a response of length
      |y| > L − b gets the penalty −overlong_penalty · (|y| − (L − b)) / b added to its reward (0 disables).
    overlong_penalty: the maximum length penalty.
    correct_reward, wrong_reward: reward values of correct / wrong responses (paper 1 / 0).
    format_reward: bonus added when the response contains a parseable boxed answer (a format remedy).
    is_correction: multiply the advantages by the truncated importance weight
      min(π_trainer(y_t) / π_sampler(y_t), is_cap) (sampler / trainer mismatch correction).
    is_cap: truncation of that weight.
    pipeline_grading: grade each draw on a background thread, overlapping with the sampling of the next
      draw (when a refill is expected) or with the scoring (no group filter); the same results as False
      (the sequential path), see :func:`collect`.
  """
  group_size: int = 8
  groups_per_batch: int = 16
  max_prompt_len: int = 32
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  min_p: float = 0.0
  max_refills: int = 4
  mask_truncated: bool = False
  overlong_buffer: int = 0
  overlong_penalty: float = 1.0
  correct_reward: float = 1.0
  wrong_reward: float = 0.0
  format_reward: float = 0.0
  is_correction: bool = False
  is_cap: float = 2.0
  pipeline_grading: bool = True

  def __post_init__(self):
    for f in ("group_size", "groups_per_batch", "max_prompt_len", "max_new_tokens"):
      if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
        raise ValueError(f"{f} must be an int >= 1, got {getattr(self, f)!r}")
    if self.max_refills < 0:
      raise ValueError(f"max_refills must be >= 0, got {self.max_refills}")
    if not 0 <= self.overlong_buffer < self.max_new_tokens:
      raise ValueError(f"overlong_buffer must be in [0, max_new_tokens), got {self.overlong_buffer}")
    if self.correct_reward <= self.wrong_reward:
      raise ValueError("correct_reward must be greater than wrong_reward")
    if self.temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")

  @property
  def batch_rows(self) -> int:
    return self.group_size * self.groups_per_batch

  @property
  def seq_len(self) -> int:
    return self.max_prompt_len + self.max_new_tokens


class PromptStream:
  """An endless, deterministic stream of problems: epoch e is a seeded permutation of the pool.

  ``take(position, n)`` returns the problems at stream positions [position, position + n) — a pure
  function of ``position`` (which the train state stores), so a resumed run sees the same prompts.

  Args:
    problems: records with ``"prompt_ids"`` (list of ints, the tokenized prompt) and ``"answer"``.
    seed: shuffling seed.
  """

  def __init__(self, problems: Sequence[dict], seed: int = 0):
    if not problems:
      raise ValueError("problems must be non-empty")
    for i, p in enumerate(problems):
      if "prompt_ids" not in p or "answer" not in p:
        raise ValueError(f"problem {i} needs 'prompt_ids' and 'answer' keys, got {sorted(p)}")
    self.problems = list(problems)
    self.seed = seed
    self._perms = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.problems))
    return self._perms[epoch]

  def take(self, position: int, n: int) -> list:
    out = []
    for pos in range(int(position), int(position) + n):
      epoch, i = divmod(pos, len(self.problems))
      out.append(self.problems[int(self._perm(epoch)[i])])
    return out


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to ``length`` → (int32[N, length], bool[N, length]); too long raises."""
  toks = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    if len(s) > length:
      raise ValueError(f"prompt {i} has {len(s)} tokens > max_prompt_len={length}")
    if len(s):
      toks[i, length - len(s):] = s
      mask[i, length - len(s):] = True
  return toks, mask


@dataclasses.dataclass
class Samples:
  """Sampler output in numpy: response tokens int32[N, R], mask bool[N, R], lengths int32[N],
  truncated bool[N] (hit the length limit), sampler log-probs f32[N, R] (temperature-1 policy)."""
  tokens: np.ndarray
  mask: np.ndarray
  lengths: np.ndarray
  truncated: np.ndarray
  logp: Optional[np.ndarray]


def _get(out, *names):
  for n in names:
    if isinstance(out, dict) and n in out:
      return out[n]
    if hasattr(out, n):
      return getattr(out, n)
  return None


def samples_from_generate_output(out, max_new_tokens: int) -> Samples:
  """Converts ``sampling.generate``'s result into :class:`Samples` (numpy, host)."""
  tokens = np.asarray(_get(out, "tokens", "response_tokens"))
  mask = _get(out, "response_mask", "mask")
  lengths = _get(out, "lengths", "length")
  mask = np.asarray(mask).astype(bool) if mask is not None else None
  lengths = np.asarray(lengths) if lengths is not None else mask.sum(-1)
  if mask is None:
    mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
  finish = _get(out, "finish_reason")
  if finish is not None:
    from ngrpo_jax import sampling  # pylint: disable=g-import-not-at-top
    truncated = np.asarray(finish) == sampling.FINISH_LENGTH
  else:
    truncated = lengths >= max_new_tokens
  logp = _get(out, "logprobs", "old_logp", "logp", "log_probs")
  return Samples(tokens=tokens.astype(np.int32), mask=mask, lengths=lengths.astype(np.int32),
                 truncated=np.asarray(truncated, bool), logp=None if logp is None else np.asarray(logp, np.float32))


def overlong_penalty(lengths: np.ndarray, max_new_tokens: int, buffer: int, penalty: float) -> np.ndarray:
  """DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), as a non-positive reward term.

  R_len(y) = 0 if |y| ≤ L − b;  ((L − b) − |y|) / b · penalty if L − b < |y| ≤ L;  −penalty beyond.
  """
  if buffer <= 0:
    return np.zeros(lengths.shape, np.float32)
  start = max_new_tokens - buffer
  over = np.clip(lengths - start, 0, buffer).astype(np.float32)
  return -penalty * over / buffer


def group_kinds(correct: np.ndarray) -> np.ndarray:
  """bool[N, G] correctness → int32[N] kinds: 0 mixed, 1 all-correct, 2 all-wrong."""
  kinds = np.zeros(correct.shape[0], np.int32)
  kinds[correct.all(-1)] = KIND_ALL_CORRECT
  kinds[(~correct).all(-1)] = KIND_ALL_WRONG
  return kinds


def compute_advantages(algo: algorithms_lib.Algorithm, rewards: np.ndarray, r_max: float) -> np.ndarray:
  """Sequence advantages f32[N, G] from rewards f32[N, G] with the algorithm's estimator (not GAE)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  if algo.advantage_fn is not None:
    return np.asarray(algo.advantage_fn(rewards), np.float32)
  kw = algo.advantage_options
  if algo.advantage in ("psr_only", "nsr_only", "w_reinforce"):
    kw.setdefault("threshold", algo.correct_threshold)
  if algo.advantage == "ngrpo":
    kw.setdefault("r_virtual", r_max)
  fn = getattr(advantages_lib, algo.advantage)
  return np.asarray(fn(rewards, **kw), np.float32)


def keep_mask(algo: algorithms_lib.Algorithm, rewards: np.ndarray, r_max: float) -> np.ndarray:
  """bool[N] groups the algorithm trains on (``group_filter``)."""
  if algo.group_filter == "dapo":
    return np.asarray(advantages_lib.dapo_group_filter(jnp.asarray(rewards)))
  if algo.group_filter == "ngrpo":
    return np.asarray(advantages_lib.ngrpo_group_filter(jnp.asarray(rewards), r_max=r_max))
  return np.ones(rewards.shape[0], bool)


GradeFn = Callable[[list, list], tuple]


def default_grade_fn(pool=None, timeout: float = 1.0, require_boxed: bool = True) -> GradeFn:
  """``grade(responses, golds) -> (correct bool[N], parseable bool[N])`` via ``ngrpo_jax.grading.grade_batch``.

  Args:
    pool: a ``grading.WorkerPool`` (reused across steps); None uses ``grading.default_pool()``.
    timeout: seconds per answer.
    require_boxed: only boxed answers count (the RL format rule); "parseable" means a boxed answer was found.
  """
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top

  def grade(responses, golds):
    results = grading.grade_batch(golds, responses, timeout=timeout, require_boxed=require_boxed,
                                  pool=pool if pool is not None else grading.default_pool())
    correct = np.array([bool(r.equivalent) for r in results], bool)
    parseable = np.array([r.pred_answer is not None and (r.boxed or not require_boxed) for r in results], bool)
    return correct, parseable

  return grade


@dataclasses.dataclass
class RolloutFns:
  """The jitted / host functions a rollout needs (built once by the loop, reused every step).

  generate: ``(params, prompt_tokens int32[n, P], prompt_mask bool[n, P], key) -> Samples`` with G
    samples per prompt (rows grouped by prompt).
  score: ``(policy_params, tokens, attention_mask, value_params) -> {"logp", "entropy", "values"?}``.
  decode: ``token ids list -> str``.
  grade: see :func:`default_grade_fn` (with ``RolloutConfig.pipeline_grading`` it runs on a background
    thread, one call per draw, and must be safe to call from a thread other than the main one).
  """
  generate: Callable[..., Samples]
  score: Callable[..., dict]
  decode: Callable[[list], str]
  grade: GradeFn


@dataclasses.dataclass
class _Draw:
  """One sampler call: ``n`` prompts (their stream records, left-padded tokens) and their n·G samples."""
  problems: list
  prompt_tokens: np.ndarray
  prompt_mask: np.ndarray
  samples: Samples
  golds: list


def _draw_rewards(cfg: RolloutConfig, correct, parseable, lengths) -> np.ndarray:
  """Rewards f32[n, G]: correct / wrong reward + format bonus + DAPO overlong shaping."""
  rewards = np.where(correct, cfg.correct_reward, cfg.wrong_reward).astype(np.float32)
  rewards = rewards + cfg.format_reward * parseable
  return rewards + overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer, cfg.overlong_penalty)


def _decode_rows(fns: RolloutFns, samples: Samples, rows) -> list:
  return [fns.decode(samples.tokens[i, :samples.lengths[i]].tolist()) for i in rows]


def _grade_draw(fns: RolloutFns, draw: _Draw) -> tuple[np.ndarray, np.ndarray, float]:
  """Decodes and grades every response of a draw: (correct bool[n·G], parseable bool[n·G], seconds)."""
  t0 = time.perf_counter()
  correct, parseable = fns.grade(_decode_rows(fns, draw.samples, range(len(draw.samples.tokens))), draw.golds)
  return np.asarray(correct, bool), np.asarray(parseable, bool), time.perf_counter() - t0


def collect(fns: RolloutFns, algo: algorithms_lib.Algorithm, cfg: RolloutConfig, stream: PromptStream,
            position: int, key, *, policy_params, ref_params=None, value_params=None, pad_id: int = 0,
            eos_ids: Sequence[int] = (), format_token_ids: Sequence[int] = (),
            expected_draws: int = 1, generate_params=None) -> tuple[dict, dict, int]:
  """One training batch.  Returns (batch of numpy arrays, metrics, new data position).

  Draw d (d = 0, 1, ... ≤ max_refills with dynamic sampling) samples G responses for the prompts at stream
  positions [position + d·n, position + (d+1)·n) with key ``fold_in(key, d)``; it is used iff the groups
  kept from draws < d do not fill the batch.  With ``cfg.pipeline_grading`` each draw is decoded and graded
  on a background thread (the symbolic checks in the grading pool's processes) while this thread
    * samples draw d+1 before draw d's grades are in when ``expected_draws > d + 1`` (speculation: the loop
      passes the number of draws the previous step used; a draw that turns out unneeded is discarded,
      which costs time but changes nothing), and
    * with no group filter and no refills (the kept groups are then known before grading) dispatches the
      scoring forward pass;
  the kept groups, rewards, batch and metrics are exactly those of the sequential path (bit for bit) —
  only the wall time differs.

  Timing metrics: ``time/sampling`` (sampler calls, discarded draws included), ``time/grading`` (decode +
  grade work, wherever it ran), ``time/grading_wait`` (this thread blocked on grades), ``time/scoring``
  (old log-probs etc.: dispatch + fetch); ``sampling/discarded_draws`` counts wasted speculative draws.

  Args:
    fns: the functions (see :class:`RolloutFns`).
    algo: the algorithm (estimator, filter, dynamic sampling).
    cfg: rollout options.
    stream: the prompt stream; ``position`` the data position to draw from.
    key: PRNG key of this step's sampling (draw i uses ``fold_in(key, i)``).
    policy_params / ref_params / value_params: current policy, KL reference, value head.
    pad_id: token used for padding.  eos_ids: stop tokens (end-token probability metric).
    format_token_ids: tokens of the answer scaffold (e.g. ``\\boxed{``) for the format-probability metric.
    expected_draws: draws to sample without waiting for grades (pipeline only; default 1: none ahead).
    generate_params: the params ``fns.generate`` samples with (default ``policy_params``), e.g. the same
      policy in the sampler's decode layout (``sampling.prepare_params``), made once for all draws.
  """
  if not isinstance(expected_draws, int) or expected_draws < 1:
    raise ValueError(f"expected_draws must be an int >= 1, got {expected_draws!r}")
  g, n_groups = cfg.group_size, cfg.groups_per_batch
  r_max = cfg.correct_reward + max(cfg.format_reward, 0.0)
  max_draws = 1 + (cfg.max_refills if algo.dynamic_sampling else 0)
  times = {"sampling": 0.0, "grading": 0.0, "grading_wait": 0.0}
  kept = []          # list of dicts per kept group
  records = []       # per used draw: (kinds, correct, parseable, lengths, truncated, rewards)
  n_generated_tokens = 0

  def sample(d: int) -> _Draw:
    problems = stream.take(position + d * n_groups, n_groups)
    ptoks, pmask = left_pad([p["prompt_ids"] for p in problems], cfg.max_prompt_len, pad_id)
    t0 = time.perf_counter()
    samples = fns.generate(policy_params if generate_params is None else generate_params, ptoks, pmask,
                           jax.random.fold_in(key, d))
    jax.block_until_ready(samples.tokens)
    times["sampling"] += time.perf_counter() - t0
    golds = [problems[i // g]["answer"] for i in range(len(samples.tokens))]
    return _Draw(problems, ptoks, pmask, samples, golds)

  pre_scored = None
  # The grading thread (pipeline only) lives for this call: created here, joined in the finally below.
  executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grading") if cfg.pipeline_grading \
      else None
  draws, pending = {}, {}

  def start(d: int) -> None:
    draws[d] = sample(d)
    if executor is not None:     # queued behind the previous draw's grading on the one grading thread
      pending[d] = executor.submit(_grade_draw, fns, draws[d])

  try:
    start(0)
    if executor is not None and algo.group_filter == "none" and max_draws == 1:
      # Every group is kept: the batch's tokens are known, so the scoring runs while grading does.
      pre_scored = _dispatch_scores(fns, algo, cfg, _group_records(draws[0], g), policy_params, ref_params,
                                    value_params, pad_id)
    d = 0
    while True:
      if executor is not None and d + 1 < min(expected_draws, max_draws) and d + 1 not in draws:
        start(d + 1)             # speculative: sampled while draw d is graded
      draw = draws[d]
      t0 = time.perf_counter()
      correct, parseable, seconds = _grade_draw(fns, draw) if executor is None else pending[d].result()
      times["grading_wait"] += time.perf_counter() - t0
      times["grading"] += seconds
      # From here on the grades decide, exactly as in the sequential path.
      n_generated_tokens += int(draw.samples.lengths.sum())
      correct = correct.reshape(n_groups, g)
      parseable = parseable.reshape(n_groups, g)
      lengths = draw.samples.lengths.reshape(n_groups, g)
      truncated = draw.samples.truncated.reshape(n_groups, g)
      rewards = _draw_rewards(cfg, correct, parseable, lengths)
      kinds = group_kinds(correct)
      keep = keep_mask(algo, rewards, r_max)
      records.append((kinds, correct, parseable, lengths, truncated, rewards))
      for i in np.nonzero(keep)[0]:
        if len(kept) >= n_groups:
          break
        rows = slice(i * g, (i + 1) * g)
        s = draw.samples
        kept.append(dict(prompt_tokens=draw.prompt_tokens[i], prompt_mask=draw.prompt_mask[i],
                         tokens=s.tokens[rows], mask=s.mask[rows], lengths=s.lengths[rows],
                         truncated=s.truncated[rows], sampler_logp=None if s.logp is None else s.logp[rows],
                         rewards=rewards[i], kind=kinds[i]))
      d += 1
      if d >= max_draws or len(kept) >= n_groups:
        break
      if d not in draws:
        start(d)
  finally:
    if executor is not None:
      executor.shutdown(wait=True, cancel_futures=True)
  draws_used = d
  position += draws_used * n_groups

  batch, bm = _assemble(fns, algo, cfg, kept, policy_params, ref_params, value_params, r_max, pad_id,
                        eos_ids, format_token_ids, pre_scored=pre_scored)
  kinds, correct, parse, lens, trunc, rews = (np.concatenate(x) for x in zip(*records))
  metrics = {
      "reward_mean": float(np.mean(rews)),
      "accuracy": float(np.mean(correct)),
      "parseable_frac": float(np.mean(parse)),
      "groups/all_correct_frac": float(np.mean(kinds == KIND_ALL_CORRECT)),
      "groups/all_wrong_frac": float(np.mean(kinds == KIND_ALL_WRONG)),
      "groups/mixed_frac": float(np.mean(kinds == KIND_MIXED)),
      "groups/kept": len(kept),
      "groups/padding": n_groups - len(kept),
      "sampling/draws": draws_used,
      "sampling/refills": draws_used - 1,
      "sampling/discarded_draws": len(draws) - draws_used,
      "response_len_mean": float(np.mean(lens)),
      "response_len_max": int(np.max(lens)),
      "truncated_frac": float(np.mean(trunc)),
      "time/sampling": times["sampling"],
      "time/grading": times["grading"],
      "time/grading_wait": times["grading_wait"],
      "time/grading_overlap": max(times["grading"] - times["grading_wait"], 0.0),
      "tokens_generated": n_generated_tokens,
      "tokens_per_sec/sampling": n_generated_tokens / max(times["sampling"], 1e-9),
  }
  metrics.update(bm)
  return batch, metrics, position


def _group_records(draw: _Draw, g: int) -> list:
  """Every group of a draw as the token part of a kept-group record (for scoring before grading)."""
  s = draw.samples
  return [dict(prompt_tokens=draw.prompt_tokens[i], prompt_mask=draw.prompt_mask[i], tokens=s.tokens[i * g:(i + 1) * g],
               lengths=s.lengths[i * g:(i + 1) * g]) for i in range(len(draw.problems))]


def _pack_tokens(cfg: RolloutConfig, groups: list, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32[rows, P + R], attention_mask bool[rows, P + R]) of the groups, padding rows after them."""
  g, p_len, r_len = cfg.group_size, cfg.max_prompt_len, cfg.max_new_tokens
  tokens = np.full((cfg.batch_rows, p_len + r_len), pad_id, np.int32)
  attn = np.zeros((cfg.batch_rows, p_len + r_len), bool)
  for gi, k in enumerate(groups):
    for j in range(g):
      r = gi * g + j
      n = int(k["lengths"][j])
      tokens[r, :p_len] = k["prompt_tokens"]
      attn[r, :p_len] = k["prompt_mask"]
      tokens[r, p_len:p_len + n] = k["tokens"][j, :n]
      attn[r, p_len:p_len + n] = True
  return tokens, attn


def _dispatch_scores(fns, algo, cfg, groups, policy_params, ref_params, value_params, pad_id) -> dict:
  """Starts the scoring forward passes of a batch (JAX dispatch is asynchronous; results fetched later)."""
  tokens, attn = _pack_tokens(cfg, groups, pad_id)
  t0 = time.perf_counter()
  out = {"tokens": tokens, "attn": attn,
         "policy": fns.score(policy_params, jnp.asarray(tokens), jnp.asarray(attn), value_params)}
  if algo.kl_coef > 0:
    if ref_params is None:
      raise ValueError("algorithm has kl_coef > 0 but no reference params were given")
    out["ref"] = fns.score(ref_params, jnp.asarray(tokens), jnp.asarray(attn), None)
  out["dispatch_s"] = time.perf_counter() - t0
  return out


def _assemble(fns, algo, cfg, kept, policy_params, ref_params, value_params, r_max, pad_id, eos_ids,
              format_token_ids, pre_scored=None):
  """Fixed-shape batch from the kept groups (+ padding groups) and its scoring metrics.

  ``pre_scored``: scoring already dispatched by :func:`_dispatch_scores` for the same tokens (used if equal).
  """
  g, p_len, r_len = cfg.group_size, cfg.max_prompt_len, cfg.max_new_tokens
  rows = cfg.batch_rows
  tokens, attn = _pack_tokens(cfg, kept, pad_id)
  loss_mask = np.zeros((rows, p_len + r_len - 1), np.float32)
  sampler_logp = np.zeros((rows, p_len + r_len - 1), np.float32)
  resp_mask_t = np.zeros((rows, p_len + r_len - 1), bool)   # every response target (for metrics)
  seq_adv = np.zeros((rows,), np.float32)
  seq_reward = np.zeros((rows,), np.float32)
  kinds = np.full((rows // g,), KIND_PAD, np.int32)
  has_sampler_logp = bool(kept) and kept[0]["sampler_logp"] is not None
  for gi, k in enumerate(kept):
    kinds[gi] = k["kind"]
    for j in range(g):
      r = gi * g + j
      n = int(k["lengths"][j])
      resp_mask_t[r, p_len - 1:p_len - 1 + n] = True
      if not (cfg.mask_truncated and k["truncated"][j]):
        loss_mask[r, p_len - 1:p_len - 1 + n] = 1.0
      if has_sampler_logp:
        sampler_logp[r, p_len - 1:p_len - 1 + n] = k["sampler_logp"][j, :n]
      seq_reward[r] = k["rewards"][j]
  metrics = {}
  if pre_scored is None or not (np.array_equal(pre_scored["tokens"], tokens)
                                and np.array_equal(pre_scored["attn"], attn)):
    pre_scored = _dispatch_scores(fns, algo, cfg, kept, policy_params, ref_params, value_params, pad_id)
  t0 = time.perf_counter()
  scored = pre_scored["policy"]
  old_logp = np.asarray(scored["logp"], np.float32)    # fetched before any other device work is queued
  entropy = np.asarray(scored["entropy"], np.float32)
  if kept and not algo.use_critic:
    rewards = np.stack([k["rewards"] for k in kept])
    if algo.advantage_fn is None and len(kept) < cfg.groups_per_batch:
      # The named estimators are per group: pad with copies of the last kept group (dropped again) so
      # the eager estimator always sees [groups_per_batch, G] and never compiles for a new shape.
      padded = np.pad(rewards, ((0, cfg.groups_per_batch - len(kept)), (0, 0)), mode="edge")
      adv = compute_advantages(algo, padded, r_max)[:len(kept)]
    else:
      adv = compute_advantages(algo, rewards, r_max)
    seq_adv[:len(kept) * g] = adv.reshape(-1)
  batch = {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask, "old_logp": old_logp,
           "group_kind": np.repeat(kinds, g)}
  if algo.kl_coef > 0:
    batch["ref_logp"] = np.asarray(pre_scored["ref"]["logp"], np.float32)
  adv_tok = np.broadcast_to(seq_adv[:, None], loss_mask.shape).copy()
  if algo.use_critic:
    values = np.asarray(scored["values"], np.float32)
    rew_tok = np.zeros(loss_mask.shape, np.float32)
    ends = resp_mask_t.shape[1] - 1 - np.argmax(resp_mask_t[:, ::-1], axis=1)
    valid_rows = resp_mask_t.any(1)
    rew_tok[np.nonzero(valid_rows)[0], ends[valid_rows]] = seq_reward[valid_rows]
    adv_j, ret_j = advantages_lib.gae(jnp.asarray(rew_tok), jnp.asarray(values), jnp.asarray(resp_mask_t),
                                      gamma=algo.gae_gamma, lam=algo.gae_lambda)
    adv_tok = np.asarray(adv_j, np.float32)
    batch["old_values"] = values
    batch["returns"] = np.asarray(ret_j, np.float32)
  m = resp_mask_t
  if cfg.is_correction and has_sampler_logp:
    w = np.minimum(np.exp(np.clip(old_logp - sampler_logp, -20, 20)), cfg.is_cap)
    adv_tok = adv_tok * np.where(m, w, 1.0)
  batch["advantages"] = (adv_tok * m).astype(np.float32)
  metrics["time/scoring"] = pre_scored["dispatch_s"] + time.perf_counter() - t0
  if m.any():
    probs = np.exp(old_logp)
    targets = tokens[:, 1:]
    valid_rows = np.repeat(kinds, g) != KIND_PAD
    adv_rows = seq_adv[valid_rows] if not algo.use_critic else adv_tok[m]
    metrics.update({
        "adv_mean": float(np.mean(adv_rows)), "adv_std": float(np.std(adv_rows)),
        "adv_min": float(np.min(adv_rows)), "adv_max": float(np.max(adv_rows)),
        "policy_entropy": float(entropy[m].mean()),
        "old_logp_mean": float(old_logp[m].mean()),
    })
    if len(eos_ids):
      sel = m & np.isin(targets, np.asarray(eos_ids))
      metrics["format/end_token_prob"] = float(probs[sel].mean()) if sel.any() else 0.0
    if len(format_token_ids):
      sel = m & np.isin(targets, np.asarray(format_token_ids))
      metrics["format/scaffold_token_prob"] = float(probs[sel].mean()) if sel.any() else 0.0
    if has_sampler_logp:
      gap = sampler_logp[m] - old_logp[m]
      metrics["logp_gap/mean_abs"] = float(np.mean(np.abs(gap)))
      metrics["logp_gap/max_abs"] = float(np.max(np.abs(gap)))
  metrics["tokens_trained"] = int(batch["loss_mask"].sum())
  return batch, metrics
