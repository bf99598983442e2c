"""Evaluation loop: N samples per problem → grades → per-problem correct counts → pass@k curve, AUC, CIs.

The NGRPO paper (Nan et al. 2025, arXiv 2509.18851, §5.1.2) evaluates with N = 256 samples per problem at
temperature 0.6 / top-p 0.95 and reports the unbiased pass@k for k = 1, 2, 4, …, 256 and the Pass@k AUC.
This module is the host-side loop that produces those numbers for any policy:

    problems ──prompt_fn──▶ prompts ──sample_fn──▶ N responses each ──grade_fn──▶ correct bool[P, N]
        └──▶ counts c[P] (n[P] = N) ──▶ summarize: pass@k for every k ≤ N, AUC, bootstrap CIs

The sampler and the grader are injected (``SampleFn`` / ``GradeFn``), so the loop runs with a fake sampler
in tests, with :func:`make_policy_sample_fn` (``ngrpo_jax.sampling.generate`` on a Qwen2 policy) and
:class:`ngrpo_jax.grading.Grader` (the SymPy checker in worker processes) in ``experiments/evaluate.py``.

Resumability. :func:`evaluate` writes one shard file per batch of problems into ``<out_dir>/shards/``
(atomically: a temporary file renamed into place), so the set of shard files on disk *is* the done-set; a
rerun with the same settings skips finished batches. ``plan.json`` fingerprints the settings (problems,
N, batch size, key, sampling options) and a rerun with different settings is refused instead of mixing
results. Samples are a function of (key, problem index, sample index) only — :func:`make_policy_sample_fn`
gives sample j of problem i the PRNG stream ``i·N + j`` — so a resumed evaluation equals an uninterrupted
one. When every batch is done the shards are merged into ``samples.jsonl`` and removed, and
``counts.jsonl`` (per-problem correct counts: pass@k curves can be recomputed without resampling) and
``summary.json`` are written.
"""
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import jax
import numpy as np

from ngrpo_jax import metrics

PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
SAMPLES_FILE = "samples.jsonl"
COUNTS_FILE = "counts.jsonl"
SUMMARY_FILE = "summary.json"
AUC_DEFINITION = ("100 * trapezoid over x = log2 k of linear pass@k, normalised by the x range "
                  "(NGRPO authors' Pass@k AUC)")


# ----------------------------------------------------------------------------------------------------------
# Injected pieces.


@dataclasses.dataclass(frozen=True)
class Completions:
  """What a sample function returns for B prompts and N samples each.

  Attributes:
    texts: B lists of N response strings (prompt excluded).
    num_tokens: optional int[B, N] generated tokens per response.
    truncated: optional bool[B, N], True when a response hit the token budget without a stop token.
  """
  texts: Sequence[Sequence[str]]
  num_tokens: Optional[np.ndarray] = None
  truncated: Optional[np.ndarray] = None


# sample_fn(prompts: B strings, problem_indices: int[B] (positions in the problem list), key) -> Completions
# with N responses per prompt. Sample j of problem i must depend only on (key, i, j) for resumed and
# re-batched evaluations to equal uninterrupted ones.
SampleFn = Callable[[Sequence[str], np.ndarray, jax.Array], Completions]
# grade_fn(golds: M strings, responses: M strings) -> M verdicts: bools, or objects with ``.equivalent``
# (and optionally ``.pred_answer``) such as ``ngrpo_jax.grading.GradeResult``.
GradeFn = Callable[[Sequence[str], Sequence[str]], Sequence[Any]]


def make_policy_sample_fn(params, config, tokenizer, *, num_samples: int, max_new_tokens: int,
                          temperature: float = 0.6, top_p: float = 0.95, top_k: int = 0,
                          samples_per_call: Optional[int] = None, pad_batch_to: Optional[int] = None,
                          pad_prompts_to: Optional[int] = None,
                          stop_token_ids: Optional[Sequence[int]] = None) -> SampleFn:
  """A ``SampleFn`` drawing from a Qwen2 policy with ``ngrpo_jax.sampling.generate``.

  Sample j of problem i uses the PRNG stream ``i·N + j`` of ``key`` (``generate``'s ``stream_ids``), so
  the samples do not depend on how problems are batched or how N is split into calls.

  Args:
    params, config: the policy (``ngrpo_jax.models`` params pytree and ``Qwen2Config``).
    tokenizer: Hugging Face tokenizer (prompts are encoded without added special tokens, responses
      decoded with ``skip_special_tokens=True``).
    num_samples: N responses per prompt.
    max_new_tokens: response budget in tokens (paper: 4096).
    temperature, top_p, top_k: sampling filters (paper: 0.6, 0.95, off).
    samples_per_call: split the N samples of a batch into ``generate`` calls of at most this many
      samples per prompt (bounds the KV cache: rows = B · samples_per_call); default N.
    pad_batch_to: pad every prompt batch to this many prompts (repeating the last prompt; the extra rows
      are dropped) so a short final batch reuses the compiled sampler; default no padding.
    pad_prompts_to: left-pad every prompt batch to this many tokens (one compiled sampler for all batches;
      the trainer passes its ``max_prompt_len``); a longer prompt raises a ValueError. Default: the
      longest prompt of each batch.
    stop_token_ids: default the config's eos ids.

  Returns:
    ``sample_fn(prompts, problem_indices, key) -> Completions``.
  """
  from ngrpo_jax import sampling  # pylint: disable=g-import-not-at-top  (the evaluation namespace is lazy)
  n = _positive_int("num_samples", num_samples)
  per_call = n if samples_per_call is None else _positive_int("samples_per_call", samples_per_call)
  per_call = min(per_call, n)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (config.pad_token_id or 0)
  samplers = {g: sampling.make_sampler(config, num_samples=g, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, top_k=top_k, stop_token_ids=stop_token_ids, pad_token_id=pad_id)
              for g in {per_call, n % per_call} if g}

  def sample_fn(prompts, problem_indices, key):
    b = len(prompts)
    indices = np.asarray(problem_indices, np.int64)
    if indices.shape != (b,):
      raise ValueError(f"problem_indices must be int[{b}], got shape {indices.shape}")
    prompts = list(prompts)
    if pad_batch_to is not None and b < pad_batch_to:
      extra = pad_batch_to - b
      prompts = prompts + [prompts[-1]] * extra
      indices = np.concatenate([indices, np.full((extra,), indices[-1])])
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if min(len(x) for x in ids) == 0:
      raise ValueError("a prompt encodes to zero tokens")
    length = max(len(x) for x in ids) if pad_prompts_to is None else pad_prompts_to
    tokens, mask = sampling.left_pad(ids, length, pad_id, what="pad_prompts_to")
    texts = [[None] * n for _ in range(b)]
    num_tokens = np.zeros((b, n), np.int64)
    truncated = np.zeros((b, n), bool)
    for j0 in range(0, n, per_call):
      g = min(per_call, n - j0)
      stream_ids = (indices[:, None] * n + j0 + np.arange(g)[None, :]).reshape(-1)
      out = samplers[g](params, tokens, mask, key, stream_ids=stream_ids)
      for p in range(b):
        for s in range(g):
          r = p * g + s
          texts[p][j0 + s] = tokenizer.decode(out.tokens[r, :out.lengths[r]].tolist(), skip_special_tokens=True)
          num_tokens[p, j0 + s] = out.lengths[r]
          truncated[p, j0 + s] = out.finish_reason[r] == sampling.FINISH_LENGTH
    return Completions(texts=texts, num_tokens=num_tokens, truncated=truncated)

  return sample_fn


# ----------------------------------------------------------------------------------------------------------
# Metrics from counts.


def auc_ks(max_k: int) -> np.ndarray:
  """The k grid of the Pass@k AUC for N = ``max_k`` samples: 1, 2, 4, …, 2^⌊log2 N⌋, then N if N is not a
  power of two (the general form; for N = 2^m it is exactly the authors' grid, e.g. 1 … 256)."""
  max_k = _positive_int("max_k", max_k)
  ks = [1 << i for i in range(max_k.bit_length()) if (1 << i) <= max_k]
  if ks[-1] != max_k:
    ks.append(max_k)
  return np.asarray(ks, np.int64)


def summarize(num_samples, num_correct, *, key_or_seed=0, num_bootstrap: int = 1000,
              alpha: float = 0.05) -> dict:
  """pass@k for every k ≤ N, the Pass@k AUC and percentile-bootstrap CIs over problems.

  pass@k = mean_i [1 − C(n_i − c_i, k) / C(n_i, k)]   (Chen et al. 2021; ``metrics.pass_at_k``)
  AUC    = 100 · Σ_j (x_{j+1} − x_j)(y_j + y_{j+1}) / 2 / (x_last − x_first),  x = log2 k, k ∈ ``auc_ks(N)``
           (NGRPO §5.1.2 / the authors' code: 100·[p1 + 2(p2 + … + p128) + p256]/16 for N = 256;
           ``metrics.pass_at_k_auc``). The AUC is linear in the curve, so the AUC of the mean curve is
           the mean of per-problem AUCs, which is what is bootstrapped.

  Args:
    num_samples: int[P] n per problem (or a scalar).
    num_correct: int[P] c per problem, 0 ≤ c ≤ n.
    key_or_seed: int seed or ``jax.random`` key of the bootstrap resampling (default 0).
    num_bootstrap: bootstrap resamples of the problems (default 1000; 0 disables the CIs).
    alpha: 1 − confidence level of the intervals (default 0.05 → 95 %).

  Returns:
    A JSON-ready dict (percentages): ``num_problems``, ``max_k`` (= min n), ``pass_at_k`` {k: %} for
    k = 1 … max_k, ``auc`` (None when max_k < 2), ``auc_ks``, ``auc_loglog`` (true log-log variant or
    None when a value is 0), ``ci`` {k: [lo, hi]} for k in ``auc_ks`` and ``"auc"``, ``ci_level``,
    ``never_solved_share`` / ``always_solved_share`` (% of problems with c = 0 / c = n), ``mean_accuracy``.
  """
  c = np.atleast_1d(np.asarray(num_correct))
  n = np.broadcast_to(np.asarray(num_samples), c.shape)
  if c.ndim != 1 or c.size == 0:
    raise ValueError(f"num_correct must be a non-empty 1-D array of counts, got shape {c.shape}")
  ks, curve = metrics.pass_at_k_curve(n, c)
  max_k = int(ks[-1])
  grid = auc_ks(max_k)
  per_problem = np.stack([metrics.pass_at_k(n, c, int(k)) for k in grid], axis=1)  # [P, K]
  summary = {
      "num_problems": int(c.size),
      "num_samples": int(n.max()) if np.all(n == n.max()) else [int(x) for x in np.unique(n)],
      "max_k": max_k,
      "pass_at_k": {str(int(k)): 100.0 * float(v) for k, v in zip(ks, curve)},
      "auc_ks": [int(k) for k in grid],
      "auc_definition": AUC_DEFINITION,
      "auc": None,
      "auc_loglog": None,
      "never_solved_share": 100.0 * float(np.mean(c == 0)),
      "always_solved_share": 100.0 * float(np.mean(c == n)),
      "mean_accuracy": 100.0 * float(np.mean(c / n)),
      "ci_level": 1.0 - alpha,
      "ci": {},
  }
  columns = per_problem
  if max_k >= 2:
    mean_curve = per_problem.mean(axis=0)
    summary["auc"] = metrics.pass_at_k_auc(mean_curve, grid)
    if np.all(mean_curve > 0):
      summary["auc_loglog"] = metrics.pass_at_k_auc_loglog(mean_curve, grid)
    per_problem_auc = np.array([metrics.pass_at_k_auc(row, grid) / 100.0 for row in per_problem])
    columns = np.concatenate([per_problem, per_problem_auc[:, None]], axis=1)
  if num_bootstrap:
    ci = metrics.bootstrap_ci(columns, key_or_seed, num_resamples=num_bootstrap, alpha=alpha)
    names = [str(int(k)) for k in grid] + (["auc"] if max_k >= 2 else [])
    summary["ci"] = {name: [100.0 * float(lo), 100.0 * float(hi)]
                     for name, lo, hi in zip(names, ci.lower, ci.upper)}
  return summary


# ----------------------------------------------------------------------------------------------------------
# Counts files.


def write_counts(path, records: Sequence[dict]) -> None:
  """Writes per-problem counts as JSONL: one ``{"id", "num_samples", "num_correct", ...}`` per line."""
  _atomic_write_lines(pathlib.Path(path), [json.dumps(r) + "\n" for r in records])


def load_counts(path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
  """Reads a counts file: JSONL (``num_samples``/``num_correct`` per line, also ``n``/``c``) or CSV with a
  header holding those columns.

  Returns:
    (n int64[P], c int64[P], records).

  Raises:
    FileNotFoundError: no such file. ValueError: a malformed line (names the file and line) or c > n.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"counts file {path} does not exist")
  records = []
  if path.suffix == ".csv":
    import csv  # pylint: disable=g-import-not-at-top
    with open(path, newline="", encoding="utf-8") as f:
      records = [(i + 2, dict(row)) for i, row in enumerate(csv.DictReader(f))]
  else:
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
  if not records:
    raise ValueError(f"counts file {path} holds no problems")
  n, c, out = [], [], []
  for lineno, rec in records:
    if not isinstance(rec, dict):
      raise ValueError(f"{path}:{lineno}: expected an object with num_samples and num_correct")
    try:
      ni = _int_field(rec, ("num_samples", "n"))
      ci = _int_field(rec, ("num_correct", "c"))
    except (KeyError, ValueError) as e:
      raise ValueError(f"{path}:{lineno}: {e}") from None
    if ni < 1 or not 0 <= ci <= ni:
      raise ValueError(f"{path}:{lineno}: need num_samples >= 1 and 0 <= num_correct <= num_samples, "
                       f"got n={ni}, c={ci}")
    n.append(ni)
    c.append(ci)
    out.append(rec)
  return np.asarray(n, np.int64), np.asarray(c, np.int64), out


# ----------------------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Output of :func:`evaluate`: per-problem counts, the summary dict and the output directory."""
  num_samples: np.ndarray
  num_correct: np.ndarray
  summary: dict
  out_dir: pathlib.Path


def problem_fingerprint(problems: Sequence[dict]) -> str:
  """SHA-256 over the problems' ids, questions and answers (a rerun must evaluate the same set)."""
  h = hashlib.sha256()
  for p in problems:
    h.update(json.dumps([str(p["id"]), p["problem"], str(p["answer"])]).encode())
  return h.hexdigest()


def evaluate(problems: Sequence[dict], sample_fn: SampleFn, grade_fn: GradeFn, out_dir, *,
             num_samples: int, prompts_per_batch: int, key: jax.Array,
             prompt_fn: Callable[[dict], str] = lambda p: p["problem"], settings: Optional[dict] = None,
             metadata: Optional[dict] = None, num_bootstrap: int = 1000,
             log: Callable[[str], None] = print, summary_path=None) -> EvalResult:
  """Samples, grades and summarises; resumable (see the module docstring).

  Args:
    problems: P records with ``id`` (unique), ``problem`` and ``answer`` (the data loaders' format).
    sample_fn: see ``SampleFn``; called once per unfinished batch with the batch's prompts.
    grade_fn: see ``GradeFn``; called once per batch with B·N (gold, response) pairs.
    out_dir: output directory (created).
    num_samples: N responses per problem (paper: 256).
    prompts_per_batch: problems per ``sample_fn`` call (the unit of resumption).
    key: ``jax.random`` key of the sampler (the same key for every batch; samples are indexed by stream).
    prompt_fn: problem record → prompt string (default the raw question).
    settings: JSON-able options that change the samples (model, temperature, top-p, token budget,
      template, …); part of the fingerprint a rerun must match.
    metadata: extra JSON-able fields copied into ``summary.json`` (e.g. ``label``, ``dataset``).
    num_bootstrap: bootstrap resamples for the CIs (0 disables).
    log: progress callback (default ``print``).
    summary_path: where the summary JSON goes (default ``<out_dir>/summary.json``; the trainer writes its
      ``<workdir>/eval_<tag>.json`` next to the ``<workdir>/eval_<tag>/`` samples and counts).

  Returns:
    ``EvalResult``; its summary (also written to ``summary_path``) is :func:`summarize`'s dict plus
    ``settings``, ``metadata``'s fields, ``per_problem_correct`` (c per problem, in order), ``seconds`` (this
    call) and response statistics (``mean_response_tokens``, ``truncated_share``, ``answered_share``).

  Raises:
    ValueError: bad arguments, or ``out_dir`` holds an evaluation with different settings.
  """
  t_start = time.time()
  n = _positive_int("num_samples", num_samples)
  bsz = _positive_int("prompts_per_batch", prompts_per_batch)
  problems = _check_problems(problems)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  plan = {
      "num_problems": len(problems),
      "problem_sha256": problem_fingerprint(problems),
      "num_samples": n,
      "prompts_per_batch": bsz,
      "key": np.asarray(jax.random.key_data(key)).ravel().tolist() if _is_typed_key(key)
             else np.asarray(key).ravel().tolist(),
      "settings": json.loads(json.dumps(settings or {})),
  }
  _check_or_write_plan(out_dir / PLAN_FILE, plan)
  num_batches = math.ceil(len(problems) / bsz)
  shard_dir = out_dir / SHARD_DIR
  samples_path = out_dir / SAMPLES_FILE
  complete = samples_path.is_file() and not shard_dir.exists()

  if not complete:
    shard_dir.mkdir(exist_ok=True)
    done = sum(_shard_path(shard_dir, i).is_file() for i in range(num_batches))
    if done:
      log(f"resuming: {done}/{num_batches} batches already done in {shard_dir}")
    start = time.time()
    for i in range(num_batches):
      shard = _shard_path(shard_dir, i)
      if shard.is_file():
        continue
      lo, hi = i * bsz, min((i + 1) * bsz, len(problems))
      batch = problems[lo:hi]
      t0 = time.time()
      comp = sample_fn([prompt_fn(p) for p in batch], np.arange(lo, hi), key)
      t1 = time.time()
      lines = _grade_batch(batch, lo, comp, n, grade_fn)
      t2 = time.time()
      _atomic_write_lines(shard, lines)
      solved = sum(json.loads(line)["correct"] for line in lines)
      log(f"batch {i + 1}/{num_batches}: problems {lo}-{hi - 1}, accuracy {100 * solved / len(lines):.1f}%, "
          f"sampling {t1 - t0:.1f}s, grading {t2 - t1:.1f}s, elapsed {time.time() - start:.0f}s")
    _atomic_write_lines(samples_path, _iter_shard_lines(shard_dir, num_batches))
    shutil.rmtree(shard_dir)

  n_arr, c_arr, records = _counts_from_samples(samples_path, problems, n)
  write_counts(out_dir / COUNTS_FILE, records)
  summary = summarize(n_arr, c_arr, key_or_seed=0, num_bootstrap=num_bootstrap)
  summary.update({"settings": plan["settings"], "num_samples": n, **(metadata or {})})
  summary["per_problem_correct"] = [int(x) for x in c_arr]   # the counts (also in counts.jsonl)
  summary["seconds"] = time.time() - t_start
  lengths = _response_stats(samples_path)
  summary.update(lengths)
  summary_path = out_dir / SUMMARY_FILE if summary_path is None else pathlib.Path(summary_path)
  _atomic_write_lines(summary_path, [json.dumps(summary, indent=2) + "\n"])
  return EvalResult(num_samples=n_arr, num_correct=c_arr, summary=summary, out_dir=out_dir)


def iter_samples(out_dir) -> Iterator[dict]:
  """The sample records of a finished (``samples.jsonl``) or partial (shards) evaluation, in order."""
  out_dir = pathlib.Path(out_dir)
  if (out_dir / SAMPLES_FILE).is_file():
    paths = [out_dir / SAMPLES_FILE]
  else:
    paths = sorted((out_dir / SHARD_DIR).glob("batch-*.jsonl"))
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          yield json.loads(line)


def format_summary(summary: dict) -> str:
  """A short human-readable table of a summary: k, pass@k % and its CI at the AUC grid, then the AUC."""
  rows = [f"{'k':>6}  {'pass@k':>7}  CI"]
  for k in summary["auc_ks"]:
    ci = summary["ci"].get(str(k))
    ci_text = f"[{ci[0]:6.2f}, {ci[1]:6.2f}]" if ci else ""
    rows.append(f"{k:>6}  {summary['pass_at_k'][str(k)]:7.2f}  {ci_text}")
  if summary.get("auc") is not None:
    ci = summary["ci"].get("auc")
    ci_text = f"[{ci[0]:6.2f}, {ci[1]:6.2f}]" if ci else ""
    rows.append(f"{'AUC':>6}  {summary['auc']:7.2f}  {ci_text}")
  rows.append(f"problems {summary['num_problems']}, never solved {summary['never_solved_share']:.1f}%, "
              f"always solved {summary['always_solved_share']:.1f}%")
  return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------
# Helpers.


def _positive_int(name, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return int(value)


def _is_typed_key(key) -> bool:
  return hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _int_field(rec, names) -> int:
  for name in names:
    if name in rec:
      value = rec[name]
      if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
          raise ValueError(f"field {name!r} must be an integer, got {value!r}")
        return int(value)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ValueError(f"field {name!r} must be an integer, got {value!r}")
      return int(value)
  raise KeyError(f"missing field {names[0]!r}")


def _check_problems(problems) -> list:
  if isinstance(problems, (str, bytes, dict)) or not isinstance(problems, Iterable):
    raise TypeError(f"problems must be a sequence of dicts, got {type(problems).__name__}")
  problems = list(problems)
  if not problems:
    raise ValueError("problems is empty")
  seen = set()
  for i, p in enumerate(problems):
    if not isinstance(p, dict) or not {"id", "problem", "answer"} <= set(p):
      raise ValueError(f"problems[{i}] must be a dict with 'id', 'problem' and 'answer'")
    if p["id"] in seen:
      raise ValueError(f"problems[{i}] has a duplicate id {p['id']!r}")
    seen.add(p["id"])
  return problems


def _check_or_write_plan(path: pathlib.Path, plan: dict) -> None:
  if path.is_file():
    old = json.loads(path.read_text())
    diffs = [f"{k}: {old.get(k)!r} → {plan[k]!r}" for k in plan if old.get(k) != plan[k]]
    if diffs:
      raise ValueError(f"{path.parent} already holds an evaluation with different settings ("
                       + "; ".join(diffs) + "); use another output directory or remove it")
    return
  _atomic_write_lines(path, [json.dumps(plan, indent=2) + "\n"])


def _shard_path(shard_dir: pathlib.Path, i: int) -> pathlib.Path:
  return shard_dir / f"batch-{i:06d}.jsonl"


def _atomic_write_lines(path: pathlib.Path, lines: Iterable[str]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(lines)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _iter_shard_lines(shard_dir, num_batches) -> Iterator[str]:
  for i in range(num_batches):
    with open(_shard_path(shard_dir, i), encoding="utf-8") as f:
      yield from f


def _verdict(result) -> tuple[bool, Optional[str]]:
  if isinstance(result, (bool, np.bool_)):
    return bool(result), None
  if hasattr(result, "equivalent"):
    return bool(result.equivalent), getattr(result, "pred_answer", None)
  raise TypeError(f"grade_fn must return bools or objects with .equivalent, got {type(result).__name__}")


def _grade_batch(batch, offset, comp, n, grade_fn) -> list:
  if not isinstance(comp, Completions):
    raise TypeError(f"sample_fn must return a Completions, got {type(comp).__name__}")
  b = len(batch)
  if len(comp.texts) != b or any(len(t) != n for t in comp.texts):
    raise ValueError(f"sample_fn returned {len(comp.texts)} prompts × "
                     f"{sorted({len(t) for t in comp.texts})} samples, expected {b} × {n}")
  for name in ("num_tokens", "truncated"):
    value = getattr(comp, name)
    if value is not None and np.shape(value) != (b, n):
      raise ValueError(f"Completions.{name} must have shape ({b}, {n}), got {np.shape(value)}")
  golds = [str(p["answer"]) for p in batch for _ in range(n)]
  responses = [str(t) for texts in comp.texts for t in texts]
  results = list(grade_fn(golds, responses))
  if len(results) != len(responses):
    raise ValueError(f"grade_fn returned {len(results)} verdicts for {len(responses)} responses")
  lines = []
  for p_off, problem in enumerate(batch):
    for j in range(n):
      correct, pred = _verdict(results[p_off * n + j])
      rec = {"problem_index": offset + p_off, "id": problem["id"], "sample_index": j,
             "response": comp.texts[p_off][j], "pred_answer": pred, "correct": correct}
      if comp.num_tokens is not None:
        rec["num_tokens"] = int(comp.num_tokens[p_off][j])
      if comp.truncated is not None:
        rec["truncated"] = bool(comp.truncated[p_off][j])
      lines.append(json.dumps(rec) + "\n")
  return lines


def _counts_from_samples(samples_path, problems, n):
  correct = np.zeros((len(problems), n), np.int64)
  seen = np.zeros((len(problems), n), bool)
  with open(samples_path, encoding="utf-8") as f:
    for line in f:
      rec = json.loads(line)
      i, j = rec["problem_index"], rec["sample_index"]
      if problems[i]["id"] != rec["id"]:
        raise ValueError(f"{samples_path}: sample of problem {i} has id {rec['id']!r}, expected "
                         f"{problems[i]['id']!r}")
      correct[i, j] = rec["correct"]
      seen[i, j] = True
  if not seen.all():
    raise ValueError(f"{samples_path} is missing {int((~seen).sum())} samples")
  c = correct.sum(axis=1)
  records = [{"id": p["id"], "answer": str(p["answer"]), "num_samples": n, "num_correct": int(ci)}
             for p, ci in zip(problems, c)]
  return np.full(len(problems), n, np.int64), c, records


def _response_stats(samples_path) -> dict:
  tokens, truncated, answered = [], [], []
  with open(samples_path, encoding="utf-8") as f:
    for line in f:
      rec = json.loads(line)
      if "num_tokens" in rec:
        tokens.append(rec["num_tokens"])
      if "truncated" in rec:
        truncated.append(rec["truncated"])
      answered.append(rec.get("pred_answer") is not None)
  stats = {}
  if any(answered):   # graders returning bare bools give no extracted answers
    stats["answered_share"] = 100.0 * float(np.mean(answered))
  if tokens:
    stats["mean_response_tokens"] = float(np.mean(tokens))
  if truncated:
    stats["truncated_share"] = 100.0 * float(np.mean(truncated))
  return stats
