"""Rollout: prompts → G sampled responses each → graded → one typed :class:`Groups` record → filtered batch.

Host-side glue around the jitted sampler. :func:`draw_groups` is a generator of graded draws (one sampler
call of ``n`` prompts each): with ``pipeline=True`` every draw is decoded and graded on a background
thread while the next draw is sampled (speculation, bounded by ``lookahead``), so grading overlaps
sampling. :func:`fill` pulls draws, applies the group filter and stops once the batch is full or the
refill budget is spent (dynamic sampling); closing the generator discards a speculative draw that was not
needed. Results are identical with and without the pipeline: only the wall time differs.
"""
import concurrent.futures
import dataclasses
import time
from typing import Callable, Iterator, Optional, Sequence

import jax
import numpy as np

from ngrpo_jax import grading
from ngrpo_jax import sampling

KIND_MIXED, KIND_ALL_CORRECT, KIND_ALL_WRONG, KIND_PAD = 0, 1, 2, -1


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Sampling and batch-assembly options.

  Attributes:
    group_size: G responses per prompt (paper: 8).
    groups_per_batch: prompt groups in one training batch (paper: 1024).
    max_prompt_len: prompts are left-padded to this many tokens (longer prompts raise).
    max_new_tokens: response budget (paper: 3072).
    temperature, top_p, top_k, min_p: sampling filters (paper: 1.0, 1.0, off, off).
    max_refills: dynamic sampling draws at most this many extra prompt batches per step.
    mask_truncated: responses that hit ``max_new_tokens`` get no loss (their tokens are masked out).
    is_correction: multiply the advantages by the importance weight π_trainer(y_t) / q(y_t) of the sampler /
      trainer mismatch (``mismatch.importance_weights``), q the distribution the sampler drew from (the
      filtered one under temperature / top-k / top-p / min-p, see ``ngrpo_jax.mismatch``).
    is_cap: the weight's upper bound (truncated: min(w, is_cap); masked: 0 above it).
    is_level: ``"token"`` (per-token ratio) or ``"sequence"`` (product over the response).
    is_mode: ``"truncate"`` (TIS) or ``"mask"`` (MIS / IcePop: weights outside [is_lower, is_cap] set to 0).
    is_lower: the masked mode's lower bound (None: 1 / is_cap).
    reject: ``"none"``, ``"token"`` (drop a response any of whose tokens has π_trainer / q outside
      [reject_lower, reject_upper]) or ``"geometric"`` (drop it when the per-token geometric mean is outside);
      dropped responses get no loss. Applied whether or not ``is_correction`` is on.
    reject_lower, reject_upper: the rejection bounds.
    pipeline_grading: grade each draw on a background thread while the next one is sampled.
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
  is_correction: bool = False
  is_cap: float = 2.0
  is_level: str = "token"
  is_mode: str = "truncate"
  is_lower: Optional[float] = None
  reject: str = "none"
  reject_lower: float = 1e-3
  reject_upper: float = 1e3
  pipeline_grading: bool = True

  def __post_init__(self):
    for f in ("group_size", "groups_per_batch", "max_prompt_len", "max_new_tokens"):
      if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
        raise ValueError(f"{f} must be an int >= 1, got {getattr(self, f)!r}")
    if self.max_refills < 0:
      raise ValueError(f"max_refills must be >= 0, got {self.max_refills}")
    if self.temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")
    from ngrpo_jax import mismatch  # pylint: disable=g-import-not-at-top
    if self.is_level not in mismatch.IS_LEVELS or self.is_mode not in mismatch.IS_MODES:
      raise ValueError(f"is_level must be one of {mismatch.IS_LEVELS} and is_mode one of {mismatch.IS_MODES}, got "
                       f"{self.is_level!r}, {self.is_mode!r}")
    if self.reject not in ("none",) + mismatch.REJECTION_STATISTICS:
      raise ValueError(f"reject must be 'none' or one of {mismatch.REJECTION_STATISTICS}, got {self.reject!r}")
    if not 0 < self.reject_lower < self.reject_upper:
      raise ValueError(f"need 0 < reject_lower < reject_upper, got {self.reject_lower}, {self.reject_upper}")

  @property
  def filters(self) -> bool:
    """The sampler draws from a filtered / tempered distribution q ≠ π (its log-probs differ from π's)."""
    return self.temperature != 1.0 or self.top_p < 1.0 or self.top_k > 0 or self.min_p > 0.0

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

  def index(self, position: int) -> int:
    """The pool index of the problem at stream ``position``."""
    epoch, i = divmod(int(position), len(self.problems))
    return int(self._perm(epoch)[i])

  def take(self, position: int, n: int) -> list:
    return [self.problems[self.index(pos)] for pos in range(int(position), int(position) + n)]


@dataclasses.dataclass(frozen=True)
class Groups:
  """N prompt groups of G responses each, graded: the one record between sampling and the token batch.

  Attributes:
    prompt_tokens: int32[N, P] left-padded prompts; prompt_mask: bool[N, P].
    tokens: int32[N, G, R] responses (pad after the end); mask: bool[N, G, R] generated tokens.
    lengths: int32[N, G]; truncated: bool[N, G] (hit the token budget without a stop token).
    sampler_logp: f32[N, G, R] log π_sampler(y_t) at temperature 1, unfiltered.
    behaviour_logp: f32[N, G, R] log q(y_t) of the distribution the token was drawn from (temperature,
      top-k / top-p / min-p applied; equal to ``sampler_logp`` when the sampler does not filter).
    correct, parseable: bool[N, G] grader verdicts (a boxed answer was found); rewards: f32[N, G].
    reward_components: f32[N, G, C] the reward's components (``grading.reward_components``: correctness,
      format) for multi-reward estimators.
    valid: bool[N] False on padding groups (a batch the filter could not fill).
  """
  prompt_tokens: np.ndarray
  prompt_mask: np.ndarray
  tokens: np.ndarray
  mask: np.ndarray
  lengths: np.ndarray
  truncated: np.ndarray
  sampler_logp: np.ndarray
  behaviour_logp: np.ndarray
  correct: np.ndarray
  parseable: np.ndarray
  rewards: np.ndarray
  reward_components: np.ndarray
  valid: np.ndarray

  @property
  def num_groups(self) -> int:
    return self.rewards.shape[0]

  def kinds(self) -> np.ndarray:
    """int32[N]: 0 mixed, 1 all-correct, 2 all-wrong, -1 padding."""
    kinds = np.where(self.correct.all(-1), KIND_ALL_CORRECT, np.where((~self.correct).all(-1), KIND_ALL_WRONG,
                                                                      KIND_MIXED)).astype(np.int32)
    return np.where(self.valid, kinds, KIND_PAD).astype(np.int32)

  def select(self, index) -> "Groups":
    return Groups(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

  def pad_to(self, n: int) -> "Groups":
    """The first ``n`` groups, padded with invalid all-zero groups to exactly ``n``."""
    def pad(x):
      x = x[:n]
      return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x
    return Groups(**{f.name: pad(getattr(self, f.name)) for f in dataclasses.fields(self)})


def concat(groups: Sequence[Groups]) -> Groups:
  """The groups of several records, in order."""
  return Groups(**{f.name: np.concatenate([getattr(g, f.name) for g in groups])
                   for f in dataclasses.fields(Groups)})


@dataclasses.dataclass
class DrawStats:
  """Bookkeeping of one step's draws (filled by :func:`draw_groups` and :func:`fill`)."""
  sampled: int = 0            # sampler calls made (speculative ones included)
  used: int = 0               # draws whose groups were offered to the filter
  sampling_s: float = 0.0
  grading_s: float = 0.0      # decode + grade work, wherever it ran
  grading_wait_s: float = 0.0  # this thread blocked on grades
  seen: list = dataclasses.field(default_factory=list)   # every used draw's Groups (metrics of all groups)


Sampler = Callable[..., sampling.GenerateOutput]        # (params, prompt_tokens, prompt_mask, key) -> output
Grader = Callable[[Sequence[str], Sequence[str]], Sequence]   # (golds, responses) -> results


def draw_groups(sample: Sampler, grade: Grader, decode: Callable[[list], str], params, stream: PromptStream,
                position: int, key, *, cfg: RolloutConfig, reward: grading.RewardConfig, pad_id: int,
                stats: DrawStats, max_draws: int = 1, lookahead: int = 1) -> Iterator[Groups]:
  """Yields graded :class:`Groups` of ``cfg.groups_per_batch`` prompts per draw, at most ``max_draws``.

  Draw d takes the prompts at stream positions [position + d·n, position + (d+1)·n) and samples with
  ``fold_in(key, d)``. With ``cfg.pipeline_grading`` each draw is graded on one background thread and up to
  ``lookahead`` draws are sampled before their predecessors' grades are in (the loop passes the number of
  draws recent steps used); a speculative draw that is never consumed is discarded when the generator is
  closed. ``stats`` accumulates the timings.
  """
  n, g = cfg.groups_per_batch, cfg.group_size
  executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grading") if cfg.pipeline_grading \
      else None
  pending = {}

  def start(d):
    problems = stream.take(position + d * n, n)
    ptoks, pmask = sampling.left_pad([p["prompt_ids"] for p in problems], cfg.max_prompt_len, pad_id)
    t0 = time.perf_counter()
    out = sample(params, ptoks, pmask, jax.random.fold_in(key, d))
    stats.sampling_s += time.perf_counter() - t0
    stats.sampled += 1
    golds = [p["answer"] for p in problems for _ in range(g)]
    job = (_grade, out, golds, decode, grade, stats)
    pending[d] = (ptoks, pmask, out, executor.submit(*job) if executor else job)

  try:
    for d in range(max_draws):
      for ahead in range(d, min(d + (lookahead if executor else 1), max_draws)):
        if ahead not in pending:
          start(ahead)
      ptoks, pmask, out, job = pending.pop(d)
      t0 = time.perf_counter()
      results = job.result() if executor else job[0](*job[1:])
      stats.grading_wait_s += time.perf_counter() - t0
      yield _groups(ptoks, pmask, out, results, g, cfg, reward)
  finally:
    if executor is not None:
      executor.shutdown(wait=True, cancel_futures=True)


def _grade(out: sampling.GenerateOutput, golds, decode, grade, stats: DrawStats):
  t0 = time.perf_counter()
  responses = [decode(out.tokens[i, :out.lengths[i]].tolist()) for i in range(len(out.tokens))]
  results = grade(golds, responses)
  if len(results) != len(golds):
    raise ValueError(f"the grader returned {len(results)} results for {len(golds)} responses")
  stats.grading_s += time.perf_counter() - t0
  return results


def _groups(ptoks, pmask, out: sampling.GenerateOutput, results, g: int, cfg: RolloutConfig,
            reward: grading.RewardConfig) -> Groups:
  """The record of one draw (rows prompt-major: row = i·G + j)."""
  n, r = ptoks.shape[0], out.tokens.shape[1]
  correct, parseable = grading.verdicts(results)
  lengths = np.asarray(out.lengths, np.int32)
  rewards = grading.rewards(correct, parseable, reward, lengths=lengths, max_new_tokens=cfg.max_new_tokens)
  components = grading.reward_components(correct, parseable, reward, lengths=lengths,
                                         max_new_tokens=cfg.max_new_tokens)
  sampler_logp = np.asarray(out.logprobs, np.float32).reshape(n, g, r)
  if cfg.filters and out.sampling_logprobs is None and (cfg.is_correction or cfg.reject != "none"):
    raise ValueError("the rollout filters its sampling distribution (temperature / top-k / top-p / min-p) and "
                     "corrects the mismatch, but the sampler returned no sampling log-probs: make it with "
                     "return_sampling_logprobs=True (weights against π alone would ignore the truncation)")
  behaviour = sampler_logp if out.sampling_logprobs is None else \
      np.asarray(out.sampling_logprobs, np.float32).reshape(n, g, r)
  return Groups(prompt_tokens=ptoks, prompt_mask=pmask, tokens=np.asarray(out.tokens, np.int32).reshape(n, g, r),
                mask=np.asarray(out.mask, bool).reshape(n, g, r), lengths=lengths.reshape(n, g),
                truncated=(np.asarray(out.finish_reason) == sampling.FINISH_LENGTH).reshape(n, g),
                sampler_logp=sampler_logp, behaviour_logp=behaviour,
                correct=correct.reshape(n, g), parseable=parseable.reshape(n, g),
                rewards=rewards.reshape(n, g), reward_components=components.reshape(n, g, -1), valid=np.ones(n, bool))


def fill(draws: Iterator[Groups], keep: Callable[[np.ndarray], np.ndarray], num_groups: int,
         stats: DrawStats) -> Groups:
  """The first ``num_groups`` groups that ``keep(rewards f32[n, G]) -> bool[n]`` accepts, drawing until the
  batch is full or ``draws`` ends, padded with invalid groups to exactly ``num_groups`` (a fixed shape)."""
  kept = []
  try:
    for groups in draws:
      stats.used += 1
      stats.seen.append(groups)
      kept.append(groups.select(np.asarray(keep(groups.rewards), bool)))
      if sum(k.num_groups for k in kept) >= num_groups:
        break
  finally:
    draws.close()
  return concat(kept).pad_to(num_groups)


def draw_metrics(stats: DrawStats, kept: Groups) -> dict:
  """Per-step rollout metrics over every used draw's groups (all of them, not only the kept ones)."""
  seen = concat(stats.seen)
  kinds = seen.kinds()
  tokens = int(seen.lengths.sum())
  return {
      "reward_mean": float(np.mean(seen.rewards)),
      "accuracy": float(np.mean(seen.correct)),
      "parseable_frac": float(np.mean(seen.parseable)),
      "groups/all_correct_frac": float(np.mean(kinds == KIND_ALL_CORRECT)),
      "groups/all_wrong_frac": float(np.mean(kinds == KIND_ALL_WRONG)),
      "groups/mixed_frac": float(np.mean(kinds == KIND_MIXED)),
      "groups/kept": int(kept.valid.sum()),
      "groups/padding": int((~kept.valid).sum()),
      "sampling/draws": stats.used,
      "sampling/refills": stats.used - 1,
      "sampling/discarded_draws": stats.sampled - stats.used,
      "response_len_mean": float(np.mean(seen.lengths)),
      "response_len_max": int(np.max(seen.lengths)),
      "truncated_frac": float(np.mean(seen.truncated)),
      "time/sampling": stats.sampling_s,
      "time/grading": stats.grading_s,
      "time/grading_wait": stats.grading_wait_s,
      "time/grading_overlap": max(stats.grading_s - stats.grading_wait_s, 0.0),
      "tokens_generated": tokens,
      "tokens_per_sec/sampling": tokens / max(stats.sampling_s, 1e-9),
  }
