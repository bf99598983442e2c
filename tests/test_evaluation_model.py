"""End-to-end evaluation of a tiny random Qwen2 with the real sampler and checker (experiments/evaluate.py's
``run``): expected files, interruption + resumption without redoing finished batches, equal results."""
import json
import math

import jax
import numpy as np
import pytest

from experiments import evaluate as evaluate_bin
from ngrpo_jax import data
from ngrpo_jax import evaluation
from ngrpo_jax import models
from tests import tiny_checkpoints


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  """A random tiny Qwen2 over the synthetic task's 100-token vocabulary, with that tokenizer saved beside it."""
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path_factory.mktemp("model"), vocab_size=data.tokenizer.VOCAB_SIZE,
                                               with_tokenizer=False)
  data.save_tokenizer(path)
  return path


class _Interrupt(Exception):
  pass


def _run(model, out, **kwargs):
  args = dict(model=str(model), dataset="synthetic", output_dir=str(out), synthetic_num_problems=5,
              num_samples=4, prompts_per_batch=2, max_new_tokens=12, num_workers=1, num_bootstrap=50,
              log=lambda s: None)
  args.update(kwargs)
  return evaluate_bin.run(**args)


def test_run_end_to_end_resumes_after_interruption(tiny_model, tmp_path):
  calls = []

  def interrupt_on_second_call(sample_fn):
    def wrapped(prompts, indices, key):
      if len(calls) == 1:
        raise _Interrupt()
      calls.append(list(indices))
      return sample_fn(prompts, indices, key)
    return wrapped

  with pytest.raises(_Interrupt):
    _run(tiny_model, tmp_path / "a", sample_fn_wrapper=interrupt_on_second_call)
  assert calls == [[0, 1]]
  assert sorted(p.name for p in (tmp_path / "a" / "shards").iterdir()) == ["batch-000000.jsonl"]

  def record(sample_fn):
    def wrapped(prompts, indices, key):
      calls.append(list(indices))
      return sample_fn(prompts, indices, key)
    return wrapped

  calls.clear()
  resumed = _run(tiny_model, tmp_path / "a", sample_fn_wrapper=record, label="tiny")
  assert calls == [[2, 3], [4]]  # only the unfinished batches
  full = _run(tiny_model, tmp_path / "b")

  for out in (tmp_path / "a", tmp_path / "b"):
    assert sorted(p.name for p in out.iterdir()) == ["counts.jsonl", "plan.json", "samples.jsonl", "summary.json"]
  a_samples = (tmp_path / "a" / "samples.jsonl").read_text()
  assert a_samples == (tmp_path / "b" / "samples.jsonl").read_text()  # resumed == uninterrupted
  np.testing.assert_array_equal(resumed.num_correct, full.num_correct)

  samples = [json.loads(line) for line in a_samples.splitlines()]
  assert len(samples) == 5 * 4
  assert all(1 <= s["num_tokens"] <= 12 for s in samples)
  assert all(s["num_tokens"] == 12 for s in samples if s["truncated"])  # truncated = hit the token budget
  summary = json.loads((tmp_path / "a" / "summary.json").read_text())
  assert summary["label"] == "tiny" and summary["dataset"] == "synthetic"
  assert summary["num_problems"] == 5 and summary["auc_ks"] == [1, 2, 4]
  assert summary["settings"]["temperature"] == 0.6 and summary["settings"]["top_p"] == 0.95
  counts = [json.loads(line) for line in (tmp_path / "a" / "counts.jsonl").read_text().splitlines()]
  by_problem = [sum(s["correct"] for s in samples if s["problem_index"] == i) for i in range(5)]
  assert [r["num_correct"] for r in counts] == by_problem


def test_policy_sample_fn_counts_with_a_lenient_grader(tiny_model, tmp_path):
  """With the real sampler and a grader that accepts responses containing '1', the summary's pass@k equals
  an independent numpy computation from the written samples."""
  config, params = models.load_pretrained(tiny_model)
  tok = models.load_tokenizer(tiny_model)
  sample_fn = evaluation.make_policy_sample_fn(params, config, tok, num_samples=4, max_new_tokens=12,
                                               samples_per_call=2, pad_batch_to=2)
  problems = data.make_dataset(7, 3, (1.0, 2.0), split="test", unique=True)
  res = evaluation.evaluate(problems, sample_fn, lambda golds, rs: ["1" in r for r in rs], tmp_path,
                            num_samples=4, prompts_per_batch=2, key=jax.random.key(1),
                            prompt_fn=lambda p: data.compact_prompt(p["problem"]), log=lambda s: None)
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  c = np.array([sum("1" in s["response"] for s in samples if s["problem_index"] == i) for i in range(3)])
  np.testing.assert_array_equal(res.num_correct, c)
  for k in (1, 2, 4):
    want = 100 * np.mean([1 - math.comb(4 - ci, k) / math.comb(4, k) for ci in c])
    assert res.summary["pass_at_k"][str(k)] == pytest.approx(want)
  # Samples are distinct draws (temperature 0.6 on a random model), not one response repeated.
  assert len({s["response"] for s in samples}) > 3


def test_load_trainer_checkpoint_restores_the_saved_policy(tmp_path):
  """A trainer workdir (config.json + orbax checkpoints/, written with the trainer's own Checkpointer) loads
  as the same model config and bit-identical policy params; bad paths give clear errors."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders, checkpoint, config as config_lib  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  spec = config_lib.ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1)
  checkpoint.write_json(tmp_path / "config.json", config_lib.to_dict(dataclasses.replace(config_lib.ExperimentConfig(),
                                                                                    model=spec)))
  config, params = builders.build_model(spec, data.build_tokenizer(), seed=3)
  optimizer, _ = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-3)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  ckpt.save(state_lib.create_train_state(params, optimizer, 0).replace(step=jax.numpy.int32(5)), {})
  ckpt.close()
  for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "5"):
    got_config, got_params, tok = evaluate_bin.load_policy(str(path))
    assert got_config == config
    assert jax.tree_util.tree_structure(got_params) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(got_params), jax.tree_util.tree_leaves(params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert tok.eos_token_id == config.eos_token_id
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate_bin.load_policy(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="neither a Hugging Face directory"):
    evaluate_bin.load_policy(str(tmp_path / "empty"))


def test_heldout_spec_selects_the_trainers_heldout_problems(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders, checkpoint, config as config_lib  # pylint: disable=g-import-not-at-top
  task = config_lib.TaskSpec(eval_difficulty=(1.5, 3.0), num_eval_problems=9, num_sft_examples=2, num_rl_prompts=2)
  cfg = dataclasses.replace(config_lib.ExperimentConfig(), seed=4, task=task)
  checkpoint.write_json(tmp_path / "config.json", config_lib.to_dict(cfg))
  spec = evaluate_bin.heldout_spec(tmp_path)
  assert spec["prompt_template"] == "compact" and spec["max_new_tokens"] == cfg.rollout.max_new_tokens
  problems = evaluate_bin.load_dataset(spec["dataset"], data_dir=".", synthetic_seed=spec["synthetic_seed"],
                                       synthetic_difficulty=spec["synthetic_difficulty"],
                                       synthetic_num_problems=spec["synthetic_num_problems"])
  tok = data.build_tokenizer()
  theirs = builders.build_data(task, tok, cfg.seed)["eval"]
  assert [p["answer"] for p in problems] == [q["answer"] for q in theirs]
  assert [tok(data.compact_prompt(p["problem"]), add_special_tokens=False)["input_ids"] for p in problems] == \
      [q["prompt_ids"] for q in theirs]
  with pytest.raises(FileNotFoundError, match="no config.json"):
    evaluate_bin.heldout_spec(tmp_path / "nothing")
