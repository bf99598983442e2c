"""Evaluates a policy: N samples per problem, graded, → pass@k for every k ≤ N, Pass@k AUC, bootstrap CIs.

The NGRPO paper's protocol (arXiv 2509.18851, §5.1.2): N = 256 samples per problem, temperature 0.6,
top-p 0.95, up to 4096 new tokens; unbiased pass@k averaged over problems; Pass@k AUC over k = 1, 2, 4, …, N.

Usage:
  # A Hugging Face directory (or a trainer checkpoint directory) on a problem set:
  python -m experiments.evaluate --model=<hf_dir> --dataset=math500 --data_dir=../shared/data \
      --output_dir=/tmp/eval_math500 [--num_samples=256 --max_new_tokens=4096 --limit=50]
  # The built-in synthetic addition task (held-out split):
  python -m experiments.evaluate --model=<hf_dir> --dataset=synthetic --output_dir=/tmp/eval_syn
  # A trainer run (its latest orbax checkpoint) on that run's own held-out problems:
  python -m experiments.evaluate --model=<workdir> --heldout_of=<workdir> --output_dir=<workdir>/eval256
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

FLAGS = flags.FLAGS


def define_flags():
  """Registers this binary's flags (called only when run as a program, so that importing the module — e.g.
  from tests, next to other binaries — defines no flags)."""
  flags.DEFINE_string("model", None, "Policy: a Hugging Face Qwen2 directory (config.json + "
                      "safetensors) or a trainer checkpoint directory.")
  flags.DEFINE_string("tokenizer", None, "Tokenizer directory; default the model directory, or the "
                      "synthetic task's tokenizer for --dataset=synthetic when the model has none.")
  flags.DEFINE_string("dataset", "synthetic", "'synthetic' (built-in addition task), a set name under "
                      "--data_dir (math500, amc23, aime24, aime25, math_test, ...) or a .jsonl/.parquet "
                      "file with problem/answer fields.")
  flags.DEFINE_string("data_dir", "../shared/data", "Folder with one subfolder per named problem set.")
  flags.DEFINE_integer("limit", None, "Evaluate only the first N problems.")
  flags.DEFINE_integer("synthetic_num_problems", 100, "Synthetic task: number of held-out problems.")
  flags.DEFINE_integer("synthetic_seed", 1234, "Synthetic task: dataset seed.")
  flags.DEFINE_list("synthetic_difficulty", ["1", "4"], "Synthetic task: difficulty range lo,hi "
                    "(expected operand digits).")
  flags.DEFINE_enum("prompt_template", None, ["compact", "qwen_math"], "Prompt template; default "
                    "'compact' for the synthetic task, 'qwen_math' (the paper's) otherwise.")
  flags.DEFINE_integer("num_samples", 256, "Samples per problem N (paper: 256).")
  flags.DEFINE_float("temperature", 0.6, "Sampling temperature (paper: 0.6).")
  flags.DEFINE_float("top_p", 0.95, "Nucleus mass (paper: 0.95).")
  flags.DEFINE_integer("top_k", 0, "Top-k filter (0 = off).")
  flags.DEFINE_integer("max_new_tokens", None, "Response budget; default min(4096, room left by the "
                       "longest prompt in max_position_embeddings).")
  flags.DEFINE_integer("prompts_per_batch", 8, "Problems per sampler call (the unit of resumption).")
  flags.DEFINE_integer("samples_per_call", None, "Split the N samples into sampler calls of this "
                       "many per prompt (bounds memory); default N.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter / compute dtype.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("num_workers", 2, "Grading worker processes.")
  flags.DEFINE_float("grade_timeout", 1.0, "Seconds per answer for the symbolic checker.")
  flags.DEFINE_bool("require_boxed", False, "Only answers inside \\boxed{} count (the trainer's RL reward "
                    "rule); default the checker's extraction (boxed, else a bare final answer).")
  flags.DEFINE_string("output_dir", None, "Output directory (required unless --counts_file).")
  flags.DEFINE_string("label", None, "Method name in reports; default the model directory's name.")
  flags.DEFINE_string("counts_file", None, "Recompute metrics from a per-problem counts file "
                      "(JSONL or CSV with num_samples/num_correct) instead of sampling.")
  flags.DEFINE_integer("num_bootstrap", 1000, "Bootstrap resamples for the CIs (0 = off).")
  flags.DEFINE_string("heldout_of", None, "A trainer workdir: evaluate on that run's held-out set (its "
                      "config.json's task: synthetic seed / difficulty / count, or eval_path), with its prompt "
                      "template and response budget, unless those flags are given explicitly.")


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


def _trainer_checkpoint_dirs(path: pathlib.Path):
  """(workdir, checkpoints dir, step or None) for a trainer workdir, its checkpoints/ or one step folder."""
  if (path / "checkpoints").is_dir():
    return path, path / "checkpoints", None
  if path.name.isdigit() and (path / "state").is_dir():
    return path.parent.parent, path.parent, int(path.name)
  if any(p.name.isdigit() and (p / "state").is_dir() for p in path.iterdir()):
    return path.parent, path, None
  return None


def load_trainer_policy(path, *, dtype: str = "float32"):
  """(config, params, tokenizer or None) of the policy in a trainer's orbax checkpoint.

  ``path`` is a trainer workdir (latest checkpoint), its ``checkpoints/`` folder (latest) or one step
  folder. The model config is rebuilt from the workdir's ``config.json`` (``model`` section: a HF
  ``init_from`` directory, or the sizes of a from-scratch model over the synthetic tokenizer); the
  policy params are the checkpoint's ``state/params/policy`` (a LoRA run's: ``state/ref_params`` with the
  adapters ``state/params/lora`` merged in).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.models import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top

  dirs = _trainer_checkpoint_dirs(pathlib.Path(path))
  if dirs is None:
    raise ValueError(f"--model {path} is neither a Hugging Face directory (config.json) nor a trainer "
                     "workdir / checkpoints folder / checkpoint step folder")
  workdir, ckpt_dir, step = dirs
  run_config_path = workdir / "config.json"
  if not run_config_path.is_file():
    raise ValueError(f"trainer checkpoint {path}: the run's config.json is missing from {workdir}")
  model_spec = json.loads(run_config_path.read_text()).get("model") or {}
  manager = ocp.CheckpointManager(ckpt_dir.absolute())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise ValueError(f"trainer checkpoint folder {ckpt_dir} holds no checkpoint")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  try:
    trained = restored["state"]["params"]
    if "lora" in trained:                  # a LoRA run: the frozen base (ref_params) + the adapters, merged
      lora_config = config_lib.ModelSpec(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in model_spec.items()}).lora_config()
      params = models.lora.merge_params(restored["state"]["ref_params"], trained["lora"], lora_config)
    else:
      params = trained["policy"]
  except (KeyError, TypeError):
    raise ValueError(f"trainer checkpoint {ckpt_dir}/{step} has no params/policy (nor LoRA params/lora and "
                     "ref_params)") from None
  jdtype = jnp.dtype(dtype)
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jdtype), params)
  if model_spec.get("init_from"):
    config = hf_checkpoint.load_config(model_spec["init_from"], dtype=jdtype, param_dtype=jdtype)
    tokenizer = models.load_tokenizer(model_spec["init_from"])
  else:
    tokenizer = data.build_tokenizer()
    spec = config_lib.ModelSpec(**{**model_spec, "dtype": dtype})
    config, _ = builders.build_model(spec, tokenizer, seed=0)
  return config, params, tokenizer


def load_policy(model: str, *, dtype: str = "float32"):
  """(config, params, tokenizer directory / tokenizer / None) from a HF directory or a trainer checkpoint."""
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(model)
  if not path.exists():
    raise FileNotFoundError(f"--model {model} does not exist")
  if (path / "config.json").is_file() and not (path / "checkpoints").is_dir():
    config, params = models.load_pretrained(path, dtype=dtype)
    return config, params, path if _has_tokenizer(path) else None
  return load_trainer_policy(path, dtype=dtype)


def resolve_tokenizer(tokenizer: Optional[str], model_tokenizer_dir, dataset: str):
  """The tokenizer: --tokenizer, else the model's, else the synthetic task's (synthetic dataset only)."""
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  if tokenizer:
    return models.load_tokenizer(tokenizer)
  if model_tokenizer_dir is not None and not isinstance(model_tokenizer_dir, (str, pathlib.Path)):
    return model_tokenizer_dir  # already a tokenizer (trainer checkpoints)
  if model_tokenizer_dir is not None:
    return models.load_tokenizer(model_tokenizer_dir)
  if dataset == "synthetic":
    return data.build_tokenizer()
  raise ValueError("the model directory has no tokenizer; pass --tokenizer=<dir>")


def heldout_spec(workdir) -> dict:
  """``run`` arguments that select a trainer run's held-out set (``builders.build_data``: synthetic test split
  with seed ``1000·seed + 3``, ``task.eval_difficulty``, ``task.num_eval_problems``; or ``task.eval_path``),
  its prompt template and its evaluation response budget."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"--heldout_of {workdir}: no config.json (is it a trainer workdir?)")
  config = json.loads(path.read_text())
  task, ev, rollout = config.get("task") or {}, config.get("eval") or {}, config.get("rollout") or {}
  spec = {"prompt_template": task.get("template", "compact"),
          "max_new_tokens": ev.get("max_new_tokens") or rollout.get("max_new_tokens")}
  if task.get("kind", "synthetic") == "synthetic":
    spec.update(dataset="synthetic", synthetic_seed=1000 * int(config.get("seed", 0)) + 3,
                synthetic_difficulty=tuple(task.get("eval_difficulty", (2.0, 4.0))),
                synthetic_num_problems=int(task.get("num_eval_problems", 64)))
  else:
    if not task.get("eval_path"):
      raise ValueError(f"{path}: task.kind={task.get('kind')!r} without task.eval_path")
    spec.update(dataset=str(task["eval_path"]), limit=int(task.get("num_eval_problems", 0)) or None)
  return spec


def run(*, model: str, dataset: str, output_dir: str, data_dir: str = "../shared/data", tokenizer=None,
        limit=None, synthetic_num_problems=100, synthetic_seed=1234, synthetic_difficulty=(1.0, 4.0),
        prompt_template=None, num_samples=256, temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=None,
        prompts_per_batch=8, samples_per_call=None, dtype="float32", seed=0, num_workers=2, grade_timeout=1.0,
        require_boxed=False, label=None, num_bootstrap=1000, sample_fn_wrapper=None, log=print):
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
              "dtype": dtype, "seed": seed,
              "require_boxed": bool(require_boxed)}
  if dataset == "synthetic":
    settings.update(synthetic_seed=synthetic_seed, synthetic_difficulty=list(map(float, synthetic_difficulty)))
  metadata = {"label": label or pathlib.Path(model).resolve().name, "dataset": dataset_name(dataset),
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
  log(f"evaluating {metadata['label']} on {metadata['dataset']}: {len(problems)} problems × {num_samples} "
      f"samples, T={temperature}, top-p={top_p}, max_new_tokens={max_new_tokens}")
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top
  with grading.Grader(num_workers=num_workers, timeout=grade_timeout, require_boxed=require_boxed) as grader:
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
  for name, value in (("num_samples", FLAGS.num_samples), ("prompts_per_batch", FLAGS.prompts_per_batch),
                      ("synthetic_num_problems", FLAGS.synthetic_num_problems)):
    if value < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {value}")
  if FLAGS.num_bootstrap < 0:
    raise app.UsageError(f"--num_bootstrap must be >= 0, got {FLAGS.num_bootstrap}")
  if FLAGS.counts_file:
    if not pathlib.Path(FLAGS.counts_file).is_file():
      raise app.UsageError(f"--counts_file {FLAGS.counts_file} does not exist")
    try:
      summary = recompute_from_counts(FLAGS.counts_file, FLAGS.output_dir, num_bootstrap=FLAGS.num_bootstrap,
                                      label=FLAGS.label)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    print(json.dumps({"pass_at_k": {k: summary["pass_at_k"][str(k)] for k in summary["auc_ks"]},
                      "auc": summary["auc"]}))
    print(evaluation.format_summary(summary))
    return
  if not FLAGS.model:
    raise app.UsageError("--model is required (or --counts_file to recompute metrics from counts)")
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required")
  if not 0.0 <= FLAGS.temperature or not 0.0 < FLAGS.top_p <= 1.0:
    raise app.UsageError("--temperature must be >= 0 and --top_p in (0, 1]")
  try:
    difficulty = tuple(float(x) for x in FLAGS.synthetic_difficulty)
  except ValueError:
    raise app.UsageError(f"--synthetic_difficulty must be two numbers lo,hi, got {FLAGS.synthetic_difficulty}") from None
  if len(difficulty) != 2:
    raise app.UsageError(f"--synthetic_difficulty must be two numbers lo,hi, got {FLAGS.synthetic_difficulty}")
  kwargs = dict(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tokenizer=FLAGS.tokenizer, limit=FLAGS.limit,
                synthetic_num_problems=FLAGS.synthetic_num_problems, synthetic_seed=FLAGS.synthetic_seed,
                synthetic_difficulty=difficulty, prompt_template=FLAGS.prompt_template,
                max_new_tokens=FLAGS.max_new_tokens)
  try:
    if FLAGS.heldout_of:
      explicit = {name for name in kwargs if FLAGS[name].present}
      kwargs.update({k: v for k, v in heldout_spec(FLAGS.heldout_of).items() if k not in explicit})
    result = run(model=FLAGS.model, output_dir=FLAGS.output_dir, num_samples=FLAGS.num_samples,
                 temperature=FLAGS.temperature, top_p=FLAGS.top_p, top_k=FLAGS.top_k,
                 prompts_per_batch=FLAGS.prompts_per_batch, samples_per_call=FLAGS.samples_per_call,
                 dtype=FLAGS.dtype, seed=FLAGS.seed, num_workers=FLAGS.num_workers,
                 grade_timeout=FLAGS.grade_timeout, require_boxed=FLAGS.require_boxed,
                 label=FLAGS.label, num_bootstrap=FLAGS.num_bootstrap, **kwargs)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(evaluation.format_summary(result.summary))
  print(f"wrote {result.out_dir}/summary.json, counts.jsonl, samples.jsonl")


if __name__ == "__main__":
  define_flags()
  app.run(main)
