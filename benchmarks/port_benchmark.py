"""No speed regression from the Flax NNX port: sampling and the RL train step of the code at HEAD (functional
path and NNX-module path) side by side with the pre-port code, in one process, interleaved.

The pre-port package is ``git archive <--baseline> ngrpo_jax`` extracted to a temporary directory and imported
under another name (``ngrpo_jax_preport``: its absolute imports are renamed), so both versions run in the
same process on the same machine state. Timed per case (median seconds over ``--repeats`` rounds; each round
runs every implementation once, in turn, after warm-up):

  sampling   ``sampling.make_sampler(...)(prepare_params(params), prompts, mask, key)`` — G responses of
             ``--new_tokens`` tokens per prompt (no stop token, so every call decodes the same length):
             pre-port | HEAD functional (params pytree) | HEAD NNX (``modules.to_params`` of the module's
             split state, i.e. the functional view the sampler takes)
  step       a hand-written RL step (hidden states → ``token_logprobs`` → ``losses.policy_loss`` → AdamW, one
             jit): pre-port and HEAD functional on the params pytree | HEAD NNX written against the module
             (``nnx.merge`` of the state inside jit, ``model.hidden_states``, gradients with respect to the
             ``nnx.State``, AdamW on it)
  trainer    ``training.update.make_train_step`` (NGRPO objective, AdamW, 2 minibatches) on the rollout batch:
             pre-port | HEAD | HEAD with rank-16 LoRA on every projection (informative: a different computation)

Before timing, the script compares the StableHLO (``jit(...).lower(...).as_text()``, no debug info) of the
prefill, the hand-written step and the trainer step with the pre-port code's, ignoring the output names
(``jax.result_info``): "identical" means XLA compiles the same program, so any timing difference is noise of
the machine.

Ratios are median over rounds of (time / pre-port time): 1.00 = same speed, > 1 slower than before the port.

  python benchmarks/port_benchmark.py --cases TINY,SMALL [--repeats 7] [--baseline <commit>]
"""
import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import configs  # noqa: E402  (before jax: defaults JAX to CPU)

PREPORT = "ngrpo_jax_preport"


def extract_preport(commit: str, into: pathlib.Path) -> str:
  """``git archive <commit> ngrpo_jax`` into ``into/ngrpo_jax_preport`` with its imports renamed; returns the
  commit's short hash."""
  sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, check=True, capture_output=True,
                       text=True).stdout.strip()
  archive = subprocess.run(["git", "archive", "--format=tar", commit, "ngrpo_jax"], cwd=REPO, check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
  shutil.move(str(into / "ngrpo_jax"), str(into / PREPORT))
  for path in (into / PREPORT).rglob("*.py"):
    text = path.read_text()
    path.write_text(re.sub(r"\bngrpo_jax\b", PREPORT, text))
  return sha


def _program(stablehlo: str) -> str:
  """StableHLO text without the output names (``jax.result_info``: an ``nnx.State`` leaf is named
  ``...['kernel'].value``, a dict leaf ``...['kernel']``), i.e. only the computation."""
  return re.sub(r'\{jax\.result_info = "[^"]*"\}', "", stablehlo)


def _time_call(fn, *args):
  t0 = time.perf_counter()
  fn(*args)
  return time.perf_counter() - t0


def build(pkg, shape: configs.ModelShape, args, *, nnx_path=False, lora_rank=0):
  """(sample_fn, train_fn) of a package: zero-argument callables that run one sampler call / train step."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  models, sampling = pkg.models, pkg.sampling
  update, state_lib, algorithms = pkg.training.update, pkg.training.state, pkg.training.algorithms
  qwen2 = models.qwen2
  config = qwen2.Qwen2Config(**shape.qwen2_kwargs(), max_position_embeddings=4096, eos_token_id=None, pad_token_id=0)
  params = qwen2.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(1, shape.vocab, (args.prompts, args.prompt_len)), jnp.int32)
  pmask = jnp.ones_like(prompts, bool)
  sampler = sampling.make_sampler(config, num_samples=args.group, max_new_tokens=args.new_tokens, temperature=1.0,
                                  pad_token_id=0)
  if nnx_path:
    from flax import nnx  # pylint: disable=g-import-not-at-top
    modules = pkg.models.modules
    graphdef, state = modules.functional_view(modules.from_params(config, params))
    prepared = sampling.prepare_params(modules.to_params(state))
  else:
    prepared = sampling.prepare_params(params)

  def sample():
    sampler(prepared, prompts, pmask, jax.random.PRNGKey(1))

  # One rollout batch: rows = prompts × G, prompt + response tokens.
  rows, length = args.prompts * args.group, args.prompt_len + args.new_tokens
  tokens = rng.integers(1, shape.vocab, (rows, length)).astype(np.int32)
  loss_mask = np.zeros((rows, length - 1), np.float32)
  loss_mask[:, args.prompt_len - 1:] = 1
  batch = {"tokens": tokens, "attention_mask": np.ones_like(tokens, bool), "loss_mask": loss_mask,
           "old_logp": np.full((rows, length - 1), -5.0, np.float32),
           "advantages": (rng.standard_normal((rows, 1)) * loss_mask).astype(np.float32)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  algo = algorithms.get_algorithm("ngrpo", learning_rate=1e-6)
  ucfg = update.UpdateConfig(num_minibatches=2, logprob_chunk_size=None, unroll_layers=True)
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-6)
  out = {"sampling": sample}

  # The hand-written step, on the params pytree or (nnx_path) on the module's state.
  import optax  # pylint: disable=g-import-not-at-top
  losses, logprobs = pkg.losses, pkg.models.logprobs
  tx = optax.adamw(1e-6)
  if nnx_path:
    graphdef, state = nnx.split(modules.from_params(config, jax.tree_util.tree_map(jnp.array, params)))
  else:
    state = jax.tree_util.tree_map(jnp.array, params)

  def forward(state, tokens, mask):
    if nnx_path:
      model = nnx.merge(graphdef, state)
      hidden, _ = model.hidden_states(tokens, attention_mask=mask, unroll_layers=True)
      return logprobs.token_logprobs(model.functional_params(), config, hidden, batch["tokens"][:, 1:],
                                     chunk_size=None)
    hidden, _ = qwen2.hidden_states(state, config, tokens, attention_mask=mask, unroll_layers=True)
    return logprobs.token_logprobs(state, config, hidden, batch["tokens"][:, 1:], chunk_size=None)

  @jax.jit
  def hand_step(state, opt_state, batch):
    def loss(state):
      logp = forward(state, batch["tokens"][:, :-1], batch["attention_mask"][:, :-1])
      return losses.policy_loss(logp, batch["old_logp"], batch["advantages"], batch["loss_mask"],
                                eps_pos=0.24, eps_neg=0.16, aggregation="token_mean")[0]
    value, grads = jax.value_and_grad(loss)(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, value

  holder = {"state": state, "opt": tx.init(state)}

  def step():
    holder["state"], holder["opt"], value = hand_step(holder["state"], holder["opt"], batch)
    jax.block_until_ready(value)

  out["step"] = step
  # StableHLO of the compiled pieces (no debug info), to check that the port changed no computation.
  hlo = {"prefill": lambda: sampling._prefill.lower(   # pylint: disable=protected-access
             prepared, prompts, pmask, config=config, cache_len=args.prompt_len + args.new_tokens,
             num_samples=args.group).as_text(),
         "step": lambda: hand_step.lower(holder["state"], holder["opt"], batch).as_text()}
  out["_hlo"] = hlo
  if nnx_path:
    return out
  for key, rank in (("trainer", 0), ("trainer_lora", lora_rank)):
    if key == "trainer_lora" and not rank:
      continue
    kwargs = {}
    if rank:
      lc = models.lora.LoRAConfig(rank=rank, alpha=2 * rank)
      kwargs = dict(lora_params=models.lora.init_lora_params(params, lc, jax.random.PRNGKey(2)), lora_config=lc)
    st = {"s": state_lib.create_train_state(params, opt, 0, **kwargs)}
    train_step = update.make_train_step(config, algo, ucfg, opt, sched)

    def train(st=st, train_step=train_step):
      st["s"], metrics = train_step(st["s"], batch)
      jax.block_until_ready(metrics["loss"])

    out[key] = train
    if key == "trainer":
      hlo["trainer"] = lambda st=st, train_step=train_step: train_step.lower(st["s"], batch).as_text()
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="TINY,SMALL")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--baseline", default=None,
                      help="git commit of the pre-port code (default: the merge base of main and HEAD)")
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--group", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--threads", type=int, default=1, help="XLA CPU intra-op threads (env)")
  args = parser.parse_args()
  if args.baseline is None:
    args.baseline = subprocess.run(["git", "merge-base", "main", "HEAD"], cwd=REPO, check=True, capture_output=True,
                                   text=True).stdout.strip()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="port_bench_"))
  sha = extract_preport(args.baseline, tmp)
  sys.path.insert(0, str(tmp))
  import jax  # pylint: disable=g-import-not-at-top
  import ngrpo_jax  # pylint: disable=g-import-not-at-top
  import ngrpo_jax.training  # pylint: disable=g-import-not-at-top
  preport = __import__(PREPORT)
  __import__(PREPORT + ".training")
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
  dirty = subprocess.run(["git", "status", "--porcelain", "ngrpo_jax"], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
  print(f"pre-port: {args.baseline} ({sha}) from {tmp}; HEAD {head}{' + uncommitted changes' if dirty else ''}; "
        f"jax {jax.__version__}; load average {os.getloadavg()[0]:.2f}")
  print(f"workload: {args.prompts} prompts × G={args.group}, prompt {args.prompt_len} + {args.new_tokens} new "
        f"tokens; train step on the {args.prompts * args.group} × {args.prompt_len + args.new_tokens} batch, "
        f"{args.repeats} interleaved rounds, median")
  rows = (("sampling", ("pre-port", "functional", "nnx")), ("step", ("pre-port", "functional", "nnx")),
          ("trainer", ("pre-port", "functional", "lora r16")))
  for name in args.cases.split(","):
    shape = configs.SHAPES[name]
    built = {"pre-port": build(preport, shape, args), "functional": build(ngrpo_jax, shape, args, lora_rank=16),
             "nnx": build(ngrpo_jax, shape, args, nnx_path=True)}
    built["lora r16"] = {"trainer": built["functional"].pop("trainer_lora")}
    hlo = {impl: built[impl].pop("_hlo") for impl in ("pre-port", "functional", "nnx")}
    same = []
    for piece in ("prefill", "step", "trainer"):
      base = _program(hlo["pre-port"][piece]())
      for impl in ("functional", "nnx"):
        if piece in hlo[impl]:
          same.append(f"{piece} {impl}: {'identical' if _program(hlo[impl][piece]()) == base else 'DIFFERENT'}")
    print(f"\n{name}: StableHLO vs pre-port — " + "; ".join(same))
    fns = {(what, impl): built[impl][what] for what, impls in rows for impl in impls}
    for fn in fns.values():
      fn()
      fn()                                   # compile + warm up
    times = {key: [] for key in fns}
    for _ in range(args.repeats):
      for key, fn in fns.items():            # interleaved: every implementation once per round
        times[key].append(_time_call(fn))
    print(f"\n{name}: median seconds per call (ratio to pre-port: median over rounds of t / t_pre-port)")
    for what, impls in rows:
      base = times[(what, "pre-port")]
      cells = []
      for impl in impls:
        t = times[(what, impl)]
        ratio = statistics.median(a / b for a, b in zip(t, base))
        cells.append(f"{impl} {statistics.median(t):.4f}s ({ratio:.3f})")
      print(f"  {what:<9} " + " | ".join(cells))
  print(f"\nload average after: {os.getloadavg()[0]:.2f}")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
