"""Evaluates a policy: N samples per problem, graded, → pass@k for every k ≤ N, Pass@k AUC, bootstrap CIs.

The NGRPO paper's protocol (arXiv 2509.18851, §5.1.2): N = 256 samples per problem, temperature 0.6,
top-p 0.95, up to 4096 new tokens; unbiased pass@k averaged over problems; Pass@k AUC over k = 1, 2, 4, …, N.

Usage:
  # A Hugging Face directory (or a trainer checkpoint directory) on a problem set:
  python -m experiments.evaluate --model=<hf_dir> --dataset=math500 --data_dir=../shared/data \
      --output_dir=/tmp/eval_math500 [--num_samples=256 --max_new_tokens=4096 --limit=50]
  # The built-in synthetic addition task (held-out split), e.g. for the default experiment's policy:
  python -m experiments.evaluate --model=<workdir>/hf --dataset=synthetic --output_dir=/tmp/eval_syn
  # Recompute the metrics from a per-problem counts file, no model:
  python -m experiments.evaluate --counts_file=/tmp/eval_math500/counts.jsonl

Outputs in --output_dir: samples.jsonl (every response with its verdict), counts.jsonl (per-problem
num_samples / num_correct), summary.json (pass@k for every k, AUC, CIs, settings), plan.json. An
interrupted run continues where it stopped when rerun with the same flags (finished batches are skipped).
"""
import json
import pathlib
import sys
import time
from typing import Optional

from absl import app
from absl import flags

_MODEL = flags.DEFINE_string("model", None, "Policy: a Hugging Face Qwen2 directory (config.json + "
                             "safetensors) or a trainer checkpoint directory.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory; default the model directory, or the "
                                 "synthetic task's tokenizer for --dataset=synthetic when the model has none.")
_DATASET = flags.DEFINE_string("dataset", "synthetic", "'synthetic' (built-in addition task), a set name under "
                               "--data_dir (math500, amc23, aime24, aime25, math_test, ...) or a .jsonl/.parquet "
                               "file with problem/answer fields.")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "Folder with one subfolder per named problem set.")
_LIMIT = flags.DEFINE_integer("limit", None, "Evaluate only the first N problems.")
_SYN_NUM = flags.DEFINE_integer("synthetic_num_problems", 100, "Synthetic task: number of held-out problems.")
_SYN_SEED = flags.DEFINE_integer("synthetic_seed", 1234, "Synthetic task: dataset seed.")
_SYN_DIFF = flags.DEFINE_list("synthetic_difficulty", ["1", "4"], "Synthetic task: difficulty range lo,hi "
                              "(expected operand digits).")
_TEMPLATE = flags.DEFINE_enum("prompt_template", None, ["compact", "qwen_math"], "Prompt template; default "
                              "'compact' for the synthetic task, 'qwen_math' (the paper's) otherwise.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 256, "Samples per problem N (paper: 256).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.6, "Sampling temperature (paper: 0.6).")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "Nucleus mass (paper: 0.95).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Top-k filter (0 = off).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "Response budget; default min(4096, room left by the "
                                "longest prompt in max_position_embeddings).")
_BATCH = flags.DEFINE_integer("prompts_per_batch", 8, "Problems per sampler call (the unit of resumption).")
_PER_CALL = flags.DEFINE_integer("samples_per_call", None, "Split the N samples into sampler calls of this "
                                 "many per prompt (bounds memory); default N.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter / compute dtype.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Grading worker processes.")
_GRADE_TIMEOUT = flags.DEFINE_float("grade_timeout", 1.0, "Seconds per answer for the symbolic checker.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory (required unless --counts_file).")
_LABEL = flags.DEFINE_string("label", None, "Method name in reports; default the model directory's name.")
_COUNTS_FILE = flags.DEFINE_string("counts_file", None, "Recompute metrics from a per-problem counts file "
                                   "(JSONL or CSV with num_samples/num_correct) instead of sampling.")
_NUM_BOOTSTRAP = flags.DEFINE_integer("num_bootstrap", 1000, "Bootstrap resamples for the CIs (0 = off).")


def dataset_name(dataset: str) -> str:
  """A short name for reports: 'synthetic', the set name, or the file's folder/stem."""
  path = pathlib.Path(dataset)
  if path.suffix in (".jsonl", ".parquet"):
    return path.parent.name if path.stem in ("normalized", "test", "train") and path.parent.name else path.stem
  return dataset


def load_dataset(dataset: str, *, data_dir: str, limit: Optional[int] = None, synthetic_num_problems: int = 100,
                 synthetic_seed: int = 1234, synthetic_difficulty=(1.0, 4.0)) -> list:
  """Problem records for --dataset (see the flag)."""
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  if dataset == "synthetic":
    problems = data.make_dataset(synthetic_seed, synthetic_num_problems, tuple(synthetic_difficulty),
                                 split=data.synthetic.TEST, unique=True)
  elif pathlib.Path(dataset).suffix in (".jsonl", ".parquet"):
    if not pathlib.Path(dataset).is_file():
      raise FileNotFoundError(f"--dataset file {dataset} does not exist")
    problems = data.load_problems(dataset)
  else:
    problems = data.load_problem_set(dataset, data_dir)
  if limit is not None:
    if limit < 1:
      raise ValueError(f"--limit must be >= 1, got {limit}")
    problems = problems[:limit]
  return problems


def _has_tokenizer(path: pathlib.Path) -> bool:
  return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


def load_policy(model: str, *, dtype: str = "float32"):
  """(config, params, tokenizer directory or None) from a HF directory or a trainer checkpoint."""
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(model)
  if not path.exists():
    raise FileNotFoundError(f"--model {model} does not exist")
  if (path / "config.json").is_file():
    config, params = models.load_pretrained(path, dtype=dtype)
    return config, params, path if _has_tokenizer(path) else None
  try:
    from ngrpo_jax.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  except ImportError:
    checkpoint_lib = None
  restore = getattr(checkpoint_lib, "restore_policy", None)
  if restore is None:
    raise ValueError(f"--model {model} has no config.json (not a Hugging Face directory) and this version of "
                     "ngrpo_jax.training has no checkpoint.restore_policy to read trainer checkpoints; export "
                     "the policy to a Hugging Face directory and pass that")
  config, params, tokenizer_dir = restore(path, dtype=dtype)
  return config, params, tokenizer_dir


def resolve_tokenizer(tokenizer: Optional[str], model_tokenizer_dir, dataset: str):
  """The tokenizer: --tokenizer, else the model's, else the synthetic task's (synthetic dataset only)."""
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  if tokenizer:
    return models.load_tokenizer(tokenizer)
  if model_tokenizer_dir is not None:
    return models.load_tokenizer(model_tokenizer_dir)
  if dataset == "synthetic":
    return data.build_tokenizer()
  raise ValueError("the model directory has no tokenizer; pass --tokenizer=<dir>")


def run(*, model: str, dataset: str, output_dir: str, data_dir: str = "../shared/data", tokenizer=None,
        limit=None, synthetic_num_problems=100, synthetic_seed=1234, synthetic_difficulty=(1.0, 4.0),
        prompt_template=None, num_samples=256, temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=None,
        prompts_per_batch=8, samples_per_call=None, dtype="float32", seed=0, num_workers=2, grade_timeout=1.0,
        label=None, num_bootstrap=1000, sample_fn_wrapper=None, log=print):
  """The evaluation as a function of plain arguments (the flags of the same names); returns ``EvalResult``.

  ``sample_fn_wrapper`` (tests): a function applied to the sampler before the loop uses it.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top

  problems = load_dataset(dataset, data_dir=data_dir, limit=limit, synthetic_num_problems=synthetic_num_problems,
                          synthetic_seed=synthetic_seed, synthetic_difficulty=synthetic_difficulty)
  config, params, tok_dir = load_policy(model, dtype=dtype)
  tok = resolve_tokenizer(tokenizer, tok_dir, dataset)
  template = prompt_template or ("compact" if dataset == "synthetic" else "qwen_math")
  prompt_fn = lambda p: data.format_prompt(p["problem"], tok, template)
  longest = max(len(tok(prompt_fn(p), add_special_tokens=False)["input_ids"]) for p in problems)
  room = config.max_position_embeddings - longest
  if room < 1:
    raise ValueError(f"the longest prompt ({longest} tokens) leaves no room in max_position_embeddings="
                     f"{config.max_position_embeddings}")
  if max_new_tokens is None:
    max_new_tokens = min(4096, room)
  elif max_new_tokens > room:
    raise ValueError(f"--max_new_tokens={max_new_tokens} exceeds the room left by the longest prompt "
                     f"({longest} tokens) in max_position_embeddings={config.max_position_embeddings}")
  sample_fn = evaluation.make_policy_sample_fn(
      params, config, tok, num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
      top_p=top_p, top_k=top_k, samples_per_call=samples_per_call,
      pad_batch_to=min(prompts_per_batch, len(problems)))
  if sample_fn_wrapper is not None:
    sample_fn = sample_fn_wrapper(sample_fn)
  settings = {"model": str(pathlib.Path(model).resolve()), "dataset": dataset_name(dataset), "template": template,
              "temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens,
              "dtype": dtype, "seed": seed}
  if dataset == "synthetic":
    settings.update(synthetic_seed=synthetic_seed, synthetic_difficulty=list(map(float, synthetic_difficulty)))
  metadata = {"label": label or pathlib.Path(model).resolve().name, "dataset": dataset_name(dataset),
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
  log(f"evaluating {metadata['label']} on {metadata['dataset']}: {len(problems)} problems × {num_samples} "
      f"samples, T={temperature}, top-p={top_p}, max_new_tokens={max_new_tokens}")
  with evaluation.CheckerGrader(num_workers=num_workers, timeout=grade_timeout) as grader:
    return evaluation.evaluate(problems, sample_fn, grader, output_dir, num_samples=num_samples,
                               prompts_per_batch=prompts_per_batch, key=jax.random.key(seed),
                               prompt_fn=prompt_fn, settings=settings, metadata=metadata,
                               num_bootstrap=num_bootstrap, log=log)


def recompute_from_counts(counts_file: str, output_dir: Optional[str] = None, *, num_bootstrap: int = 1000,
                          label: Optional[str] = None) -> dict:
  """--counts_file mode: the summary of a counts file (written to output_dir/summary.json if given)."""
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top
  n, c, _ = evaluation.load_counts(counts_file)
  summary = evaluation.summarize(n, c, key_or_seed=0, num_bootstrap=num_bootstrap)
  path = pathlib.Path(counts_file)
  old = path.parent / evaluation.SUMMARY_FILE
  meta = {}
  if old.is_file():
    try:
      meta = {k: v for k, v in json.loads(old.read_text()).items() if k in ("label", "dataset", "settings")}
    except json.JSONDecodeError:
      meta = {}
  summary.update(meta)
  if label:
    summary["label"] = label
  summary.setdefault("label", path.parent.name or path.stem)
  summary["counts_file"] = str(path)
  if output_dir:
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / evaluation.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top
  for name, value in (("num_samples", _NUM_SAMPLES.value), ("prompts_per_batch", _BATCH.value),
                      ("synthetic_num_problems", _SYN_NUM.value)):
    if value < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {value}")
  if _NUM_BOOTSTRAP.value < 0:
    raise app.UsageError(f"--num_bootstrap must be >= 0, got {_NUM_BOOTSTRAP.value}")
  if _COUNTS_FILE.value:
    if not pathlib.Path(_COUNTS_FILE.value).is_file():
      raise app.UsageError(f"--counts_file {_COUNTS_FILE.value} does not exist")
    try:
      summary = recompute_from_counts(_COUNTS_FILE.value, _OUTPUT_DIR.value, num_bootstrap=_NUM_BOOTSTRAP.value,
                                      label=_LABEL.value)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    print(json.dumps({"pass_at_k": {k: summary["pass_at_k"][str(k)] for k in summary["auc_ks"]},
                      "auc": summary["auc"]}))
    print(evaluation.format_summary(summary))
    return
  if not _MODEL.value:
    raise app.UsageError("--model is required (or --counts_file to recompute metrics from counts)")
  if not _OUTPUT_DIR.value:
    raise app.UsageError("--output_dir is required")
  if not 0.0 <= _TEMPERATURE.value or not 0.0 < _TOP_P.value <= 1.0:
    raise app.UsageError("--temperature must be >= 0 and --top_p in (0, 1]")
  try:
    difficulty = tuple(float(x) for x in _SYN_DIFF.value)
  except ValueError:
    raise app.UsageError(f"--synthetic_difficulty must be two numbers lo,hi, got {_SYN_DIFF.value}") from None
  if len(difficulty) != 2:
    raise app.UsageError(f"--synthetic_difficulty must be two numbers lo,hi, got {_SYN_DIFF.value}")
  try:
    result = run(model=_MODEL.value, dataset=_DATASET.value, output_dir=_OUTPUT_DIR.value, data_dir=_DATA_DIR.value,
                 tokenizer=_TOKENIZER.value, limit=_LIMIT.value, synthetic_num_problems=_SYN_NUM.value,
                 synthetic_seed=_SYN_SEED.value, synthetic_difficulty=difficulty, prompt_template=_TEMPLATE.value,
                 num_samples=_NUM_SAMPLES.value, temperature=_TEMPERATURE.value, top_p=_TOP_P.value,
                 top_k=_TOP_K.value, max_new_tokens=_MAX_NEW.value, prompts_per_batch=_BATCH.value,
                 samples_per_call=_PER_CALL.value, dtype=_DTYPE.value, seed=_SEED.value,
                 num_workers=_NUM_WORKERS.value, grade_timeout=_GRADE_TIMEOUT.value, label=_LABEL.value,
                 num_bootstrap=_NUM_BOOTSTRAP.value)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(evaluation.format_summary(result.summary))
  print(f"wrote {result.out_dir}/summary.json, counts.jsonl, samples.jsonl")


if __name__ == "__main__":
  app.run(main)
