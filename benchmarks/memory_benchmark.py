"""Peak memory of one RL update step at the Qwen2.5-0.5B shape: chunked log-probs and layer remat vs naive.

One step = ``qwen2.hidden_states`` → log-probs (+ entropy) of the response tokens → the token-level clipped
surrogate of ``ngrpo_jax.losses.policy_loss`` minus 0.001 · entropy → ``jax.value_and_grad`` →
``optax.adamw``, jitted with params and optimiser state donated (as the trainer does). Variants:

  naive          full float32 logits [B, T, V] (``qwen2.forward``), ``log_softmax`` + gather, no remat
  naive+remat    as naive, decoder layers rematerialised (``Qwen2Config.remat``)
  chunked        ``logprobs.token_logprobs`` (time chunks of --chunk_size, logits recomputed in the VJP), no remat
  chunked+remat  both

For each variant XLA's buffer assignment is read from ``jax.jit(step).lower(...).compile().memory_analysis()``
without running the step (the inputs are ``jax.ShapeDtypeStruct``s): arguments (params + AdamW state +
batch), outputs, temporaries, and the peak estimate arguments + outputs + temporaries − aliased (donated)
bytes. ``--execute VARIANT[,VARIANT]`` also runs one real step of those variants, each in a fresh
subprocess, and reports its peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
and the step time.

  python benchmarks/memory_benchmark.py [--batch 4 --seq 1024] [--execute chunked+remat]

Default shape: Qwen2.5-0.5B (vocab 151,936, hidden 896, 24 layers, 14/2 heads, intermediate 4,864, tied
embeddings), float32, batch 4 × 1,024 tokens.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import configs  # noqa: E402  (before jax: defaults JAX to CPU)

VARIANTS = ("naive", "naive+remat", "chunked", "chunked+remat")
QWEN05B = configs.SHAPES["QWEN05B"].qwen2_kwargs()
ENTROPY_COEF = 0.001


def make_step(variant: str, chunk_size: int, model_kwargs: dict):
  """(jitted step(params, opt_state, batch) -> (params, opt_state, loss), config, optimizer)."""
  import jax
  import jax.numpy as jnp
  import optax
  from ngrpo_jax import losses
  from ngrpo_jax.models import logprobs
  from ngrpo_jax.models import qwen2

  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  config = qwen2.Qwen2Config(**model_kwargs, remat=variant.endswith("+remat"))
  optimizer = optax.adamw(1e-6, weight_decay=0.01)

  def loss_fn(params, batch):
    tokens = batch["tokens"]
    if variant.startswith("naive"):
      logits, _ = qwen2.forward(params, config, tokens[:, :-1])
      logz = jax.nn.log_softmax(logits, axis=-1)
      logp = jnp.take_along_axis(logz, tokens[:, 1:, None], axis=-1)[..., 0]
      entropy = -jnp.sum(jnp.exp(logz) * logz, axis=-1)
    else:
      hidden, _ = qwen2.hidden_states(params, config, tokens[:, :-1])
      logp, entropy = logprobs.token_logprobs(params, config, hidden, tokens[:, 1:], chunk_size=chunk_size,
                                              return_entropy=True)
    mask = batch["mask"] > 0
    pg, _ = losses.policy_loss(logp, batch["old_logp"], batch["adv"], mask, aggregation="token_mean")
    return pg - ENTROPY_COEF * losses.aggregate(entropy, mask, aggregation="token_mean")

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1)), config, optimizer


def abstract_inputs(config, optimizer, batch: int, seq: int):
  import jax
  import jax.numpy as jnp
  from ngrpo_jax.models import qwen2
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))
  opt_state = jax.eval_shape(optimizer.init, params)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  data = dict(tokens=jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32), mask=f32(batch, seq),
              old_logp=f32(batch, seq), adv=f32(batch))
  return params, opt_state, data


def analyse(variant, chunk_size, batch, seq, model_kwargs):
  step, config, optimizer = make_step(variant, chunk_size, model_kwargs)
  t0 = time.perf_counter()
  compiled = step.lower(*abstract_inputs(config, optimizer, batch, seq)).compile()
  seconds = time.perf_counter() - t0
  m = compiled.memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
  return dict(variant=variant, arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes,
              temps=m.temp_size_in_bytes, aliased=m.alias_size_in_bytes, peak=peak, compile_s=seconds)


def execute(variant, chunk_size, batch, seq, model_kwargs):
  """Runs one step for real (in this process) → dict with peak RSS (bytes) and step seconds."""
  import resource
  import jax
  import numpy as np
  from ngrpo_jax.models import qwen2
  step, config, optimizer = make_step(variant, chunk_size, model_kwargs)
  params = qwen2.init_params(config, jax.random.PRNGKey(0))
  opt_state = optimizer.init(params)
  rng = np.random.default_rng(0)
  data = dict(tokens=rng.integers(0, config.vocab_size, (batch, seq + 1), dtype=np.int32),
              mask=np.ones((batch, seq), np.float32), old_logp=np.full((batch, seq), -12.0, np.float32),
              adv=np.where(np.arange(batch) % 2 == 0, 1.0, -1.0).astype(np.float32))
  jax.block_until_ready((params, opt_state))
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, data)
  loss.block_until_ready()
  seconds = time.perf_counter() - t0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return dict(variant=variant, peak_rss=rss, rss_before_step=rss_before, step_s_incl_compile=seconds,
              loss=float(loss))


def _gb(x):
  return f"{x / 2 ** 30:8.2f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--chunk_size", type=int, default=128)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--execute", default="", help="variants to also run once (each in a subprocess)")
  parser.add_argument("--model", default=json.dumps(QWEN05B), help="Qwen2Config kwargs as JSON")
  parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  model_kwargs = json.loads(args.model)

  if args._child:
    print(json.dumps(execute(args._child, args.chunk_size, args.batch, args.seq, model_kwargs)))
    return

  print(f"model {model_kwargs}, batch {args.batch} × {args.seq} tokens, float32, log-prob chunk "
        f"{args.chunk_size}; sizes in GiB (2^30 bytes)")
  logits_gib = args.batch * args.seq * model_kwargs["vocab_size"] * 4 / 2 ** 30
  print(f"one float32 [B, T, V] buffer = {logits_gib:.2f} GiB")
  rows = [analyse(v, args.chunk_size, args.batch, args.seq, model_kwargs) for v in args.variants.split(",")]
  print(f"{'variant':14s} {'args':>8s} {'outputs':>8s} {'temps':>8s} {'aliased':>8s} {'peak':>8s} {'compile s':>9s}")
  for r in rows:
    print(f"{r['variant']:14s} {_gb(r['arguments'])} {_gb(r['outputs'])} {_gb(r['temps'])} {_gb(r['aliased'])} "
          f"{_gb(r['peak'])} {r['compile_s']:9.1f}", flush=True)
  for variant in filter(None, args.execute.split(",")):
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", variant, "--batch", str(args.batch),
           "--seq", str(args.seq), "--chunk_size", str(args.chunk_size), "--model", args.model]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
      print(f"executed {variant}: FAILED (exit {out.returncode}): {out.stderr[-500:]}")
      continue
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"executed {variant}: peak RSS {r['peak_rss'] / 2 ** 30:.2f} GiB (before the step "
          f"{r['rss_before_step'] / 2 ** 30:.2f} GiB), first step incl. compile {r['step_s_incl_compile']:.1f} s, "
          f"loss {r['loss']:.4f}", flush=True)


if __name__ == "__main__":
  main()
