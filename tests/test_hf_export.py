"""A trained policy's Hugging Face export scores like its orbax checkpoint: through ``experiments.evaluate``
and through plain transformers (``AutoTokenizer`` + ``AutoModelForCausalLM.generate``).

Regression (issue 15): the export held the task's character tokenizer beside ``model_type: qwen2``, and
``AutoTokenizer`` rebuilt it as a Qwen2 tokenizer that dropped every space and newline: the export scored
0% where the checkpoint scored 95%.
"""
import dataclasses
import io
import json

import jax
import numpy as np
import pytest

from experiments import evaluate
from experiments.configs import cpu
from ngrpo_jax import data
from ngrpo_jax import grading
from ngrpo_jax import sampling
from ngrpo_jax.training import loop

torch = pytest.importorskip("torch")
import transformers  # pylint: disable=g-import-not-at-top,wrong-import-position

MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A policy warm-started until it solves about a third of its held-out problems (~15 s), exported."""
  base = cpu.smoke()
  cfg = dataclasses.replace(
      base, model=dataclasses.replace(base.model, hidden_size=64, intermediate_size=128),
      task=dataclasses.replace(base.task, num_sft_examples=512, num_eval_problems=16),
      sft=dataclasses.replace(base.sft, steps=1000, batch_size=16), rl_steps=0, grading_workers=0,
      tensorboard=False)
  workdir = tmp_path_factory.mktemp("run")
  loop.run(cfg, workdir, log_stream=io.StringIO())
  return workdir


def _evaluate(model, workdir, out_dir):
  spec = evaluate.heldout_spec(workdir)
  return evaluate.run(model=str(model), output_dir=str(out_dir), num_samples=4, temperature=1.0, top_p=1.0,
                      num_workers=1, require_boxed=True, num_bootstrap=0, log=lambda _: None, **spec)


def test_export_scores_like_the_checkpoint_through_experiments_evaluate(trained_run, tmp_path):
  from_checkpoint = _evaluate(trained_run, trained_run, tmp_path / "ckpt")
  from_export = _evaluate(trained_run / "hf_export", trained_run, tmp_path / "export")
  c_ckpt = from_checkpoint.summary["per_problem_correct"]
  c_export = from_export.summary["per_problem_correct"]
  assert sum(c_ckpt) > 0, "the warm-started policy should solve some problems"
  assert c_export == c_ckpt
  assert from_export.summary["pass_at_k"]["1"] == from_checkpoint.summary["pass_at_k"]["1"]
  texts = lambda d: [json.loads(line)["response"] for line in (d / "samples.jsonl").read_text().splitlines()]
  assert texts(tmp_path / "export") == texts(tmp_path / "ckpt")


def test_export_generates_like_the_checkpoint_through_transformers(trained_run):
  export = trained_run / "hf_export"
  tok = transformers.AutoTokenizer.from_pretrained(export)
  model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
  config, params, ours_tok = evaluate.load_policy(str(trained_run))
  problems = evaluate.load_dataset(**{k: v for k, v in evaluate.heldout_spec(trained_run).items()
                                      if k in ("dataset", "synthetic_seed", "synthetic_difficulty",
                                               "synthetic_num_problems")}, data_dir="")
  check = grading.get_backend("sympy")
  theirs, ours = [], []
  for p in problems:
    prompt = data.format_prompt(p["problem"], tok, "compact")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids == ours_tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
      out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    theirs.append(tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True))
    mine = sampling.generate(params, config, np.asarray([ids], np.int32), np.ones((1, len(ids)), bool),
                             jax.random.PRNGKey(0), max_new_tokens=MAX_NEW_TOKENS, greedy=True)
    ours.append(ours_tok.decode(mine.tokens[0, :mine.lengths[0]].tolist(), skip_special_tokens=True))
  correct = lambda texts: [check(p["answer"], t, require_boxed=True).equivalent for p, t in zip(problems, texts)]
  assert sum(correct(ours)) > 0
  assert correct(theirs) == correct(ours)
  assert theirs == ours
