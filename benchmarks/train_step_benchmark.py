"""Side-by-side speed of one RL update step: ngrpo_jax (JAX/XLA CPU) vs transformers + torch (CPU).

One step = log-probs of the response tokens under the policy, the token-level clipped surrogate
(``ngrpo_jax.losses.policy_loss``, ``aggregation="token_mean"``, eps 0.2), the backward pass and one AdamW
update (lr 1e-6, weight decay 0.01). Both sides use the same random float32 Qwen2 config, the same shapes
(batch × seq tokens: the model reads ``tokens[:, :seq]`` and scores ``tokens[:, 1:seq+1]``; the first
``prompt`` targets of each row are masked out of the loss) and the same loss:

  ρ_t = exp(log π_θ(y_t) − log π_old(y_t)),
  L = Σ_t m_t · max(−A ρ_t, −A clip(ρ_t, 1 − ε, 1 + ε)) / Σ_t m_t

JAX side: ``qwen2.hidden_states`` → ``logprobs.token_logprobs`` (chunked over time) → ``policy_loss`` →
``jax.value_and_grad`` → ``optax.adamw``, all in one ``jax.jit`` with the params and optimiser state donated.
Torch side: ``Qwen2ForCausalLM(...).logits`` → ``log_softmax`` + gather → the same loss → ``backward`` →
``torch.optim.AdamW`` with ``torch.set_num_threads(--threads)``.

Printed per case: median seconds per step over ``--repeats`` interleaved rounds (every implementation
steps once per round, after two warm-up steps, so load changes on a shared machine hit all alike), tokens/s
(batch × seq / step time), "vs torch" = the median over rounds of torch time / JAX time (> 1: JAX faster),
the median process CPU seconds per step (user + system, all threads; less sensitive to other processes
than wall time, though torch's OpenMP spin-waiting inflates it), and the fraction of this CPU's float32
matmul peak, where the peak is the best 2048³ ``jnp.dot`` / ``torch.mm`` rate measured in this run (once
at the start and once per round) and the model FLOPs of a step are

  6 · N_matmul · tokens + 12 · L · B · T² · H · d_head

(N_matmul = decoder-layer kernels + LM head; the embedding lookup is not a matmul; the attention term counts
QKᵀ and PV over the full T×T square, forward + backward = 3× forward). Several JAX variants can be timed
in the same run (``--variants``): ``f32`` (default path), ``f32_c<N>`` (log-prob chunk size N),
``f32_remat`` (decoder-layer rematerialisation), ``bf16`` (bfloat16 compute, float32 masters).

  python benchmarks/train_step_benchmark.py --cases TINY,SMALL [--repeats 5] [--variants f32,bf16]

The machine may be shared: timings are noisy; compare ratios measured in the same run. The script prints
the 1-minute load average before and after the run.
"""
import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import configs  # noqa: E402  (before jax: defaults JAX to CPU)


@dataclasses.dataclass(frozen=True)
class Case:
  """A model shape and a training batch: ``batch`` rows of ``seq`` tokens, the first ``prompt`` unscored."""
  shape: configs.ModelShape
  batch: int
  seq: int
  prompt: int


CASES = {
    "TINY": Case(configs.SHAPES["TINY"], 8, 256, 32),
    "SMALL": Case(configs.SHAPES["SMALL"], 8, 256, 32),
}

EPS = 0.2
LR = 1e-6
WEIGHT_DECAY = 0.01


def matmul_params(case: Case) -> int:
  """Parameters that enter a matmul per token: decoder kernels + LM head (biases/norms are negligible)."""
  m = case.shape
  hd = m.hidden // m.heads
  per_layer = m.hidden * m.heads * hd * 2 + m.hidden * m.kv_heads * hd * 2 + 3 * m.hidden * m.intermediate
  return m.layers * per_layer + m.hidden * m.vocab


def step_flops(case: Case) -> float:
  """6 · N_matmul · tokens + attention (QKᵀ and PV, fwd + bwd) for one step."""
  tokens = case.batch * case.seq
  attn = 12 * case.shape.layers * case.batch * case.seq ** 2 * case.shape.hidden
  return 6.0 * matmul_params(case) * tokens + attn


def make_batch(case: Case, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, case.shape.vocab, size=(case.batch, case.seq + 1), dtype=np.int32)
  mask = np.ones((case.batch, case.seq), np.float32)
  mask[:, :case.prompt] = 0.0
  old_logp = (-np.log(case.shape.vocab) + 0.1 * rng.standard_normal((case.batch, case.seq))).astype(np.float32)
  adv = np.where(np.arange(case.batch) % 2 == 0, 1.0, -1.0).astype(np.float32)
  return dict(tokens=tokens, mask=mask, old_logp=old_logp, adv=adv)


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def _cpu_seconds():
  """User + system CPU seconds of this process (all threads)."""
  import resource
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------------------------------------
# JAX.


def jax_step_fn(case: Case, variant: str):
  """(jitted step(params, opt_state, batch) -> (params, opt_state, loss), config, optimizer)."""
  import jax
  import jax.numpy as jnp
  import optax
  from ngrpo_jax import losses
  from ngrpo_jax.models import logprobs
  from ngrpo_jax.models import qwen2

  chunk = 128
  unroll = False
  remat = False
  dtype = jnp.float32
  for part in variant.split("_")[1:]:
    if part == "cfull":
      chunk = None
    elif part.startswith("c"):
      chunk = int(part[1:])
    elif part == "remat":
      remat = True
    elif part == "unroll":
      unroll = True
    else:
      raise ValueError(f"unknown variant part {part!r} in {variant!r}")
  if variant.startswith("bf16"):
    dtype = jnp.bfloat16
  elif not variant.startswith("f32"):
    raise ValueError(f"variant must start with f32 or bf16, got {variant!r}")
  config = qwen2.Qwen2Config(**case.shape.qwen2_kwargs(), dtype=dtype, remat=remat)
  optimizer = optax.adamw(LR, weight_decay=WEIGHT_DECAY)

  def loss_fn(params, batch):
    p = params if dtype == jnp.float32 else jax.tree.map(lambda x: x.astype(dtype), params)
    tokens = batch["tokens"]
    hidden, _ = qwen2.hidden_states(p, config, tokens[:, :-1], unroll_layers=unroll)
    logp = logprobs.token_logprobs(p, config, hidden, tokens[:, 1:], chunk_size=chunk)
    loss, _ = losses.policy_loss(logp, batch["old_logp"], batch["adv"], batch["mask"] > 0, eps_pos=EPS,
                                 eps_neg=EPS, aggregation="token_mean")
    return loss

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1)), config, optimizer


def jax_runner(case: Case, variant: str, params_np, batch_np):
  """(one_step() -> None, first-step loss, compile+first-step seconds) for a JAX variant."""
  import jax
  import jax.numpy as jnp
  step, _, optimizer = jax_step_fn(case, variant)
  params = jax.tree.map(jnp.asarray, params_np)
  opt_state = optimizer.init(params)
  batch = jax.tree.map(jnp.asarray, batch_np)
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, batch)
  loss.block_until_ready()
  first = time.perf_counter() - t0
  state = [params, opt_state]

  def one():
    p, o, l = step(state[0], state[1], batch)
    l.block_until_ready()
    state[0], state[1] = p, o

  return one, float(loss), first


# --------------------------------------------------------------------------------------------------------
# Torch.


def torch_loss(model, batch):
  import torch
  tokens = batch["tokens"]
  logits = model(input_ids=tokens[:, :-1]).logits.float()
  logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None].long())[..., 0]
  ratio = torch.exp(logp - batch["old_logp"])
  adv = batch["adv"][:, None]
  per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - EPS, 1 + EPS))
  mask = batch["mask"]
  return (per_token * mask).sum() / mask.sum()


def torch_runner(case: Case, model, batch_np):
  """(one_step() -> None, first-step loss) for the torch model."""
  import torch
  batch = {k: torch.from_numpy(v) for k, v in batch_np.items()}
  opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

  def one():
    opt.zero_grad(set_to_none=True)
    loss = torch_loss(model, batch)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return one, one()


# --------------------------------------------------------------------------------------------------------
# Peak.


def matmul_peak(n: int = 2048, repeats: int = 3):
  """(XLA, torch) float32 GFLOP/s of an n×n×n matmul (best of ``repeats``)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = torch.from_numpy(np.array(a))
  torch.mm(t, t)
  best_jax = min(_median_time(lambda: f(a).block_until_ready(), 1)[0] for _ in range(repeats))
  best_torch = min(_median_time(lambda: torch.mm(t, t), 1)[0] for _ in range(repeats))
  return 2 * n ** 3 / best_jax / 1e9, 2 * n ** 3 / best_torch / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="TINY,SMALL")
  parser.add_argument("--variants", default="f32", help="comma-separated JAX variants (see docstring)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--no_torch", action="store_true")
  args = parser.parse_args()

  import jax
  import numpy as np
  import torch
  configs.set_threads(args.threads)
  print(f"jax {jax.__version__} ({jax.default_backend()}, {len(jax.devices())} devices), torch "
        f"{torch.__version__} ({args.threads} threads); load avg {os.getloadavg()[0]:.1f}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  peaks = [matmul_peak()]
  print(f"f32 matmul (2048³) at start: XLA {peaks[0][0]:.0f} GFLOP/s, torch {peaks[0][1]:.0f} GFLOP/s", flush=True)
  rows = []
  try:
    names = configs.parse_shapes(args.cases, CASES)
  except ValueError as e:
    parser.error(str(e))
  for name in names:
    case = CASES[name]
    tokens = case.batch * case.seq
    flops = step_flops(case)
    model = configs.torch_model(case.shape)
    model.train()
    params_np = configs.params_from_torch(model, case.shape)
    batch_np = make_batch(case)
    runners = {}
    if not args.no_torch:
      runners["torch"], loss = torch_runner(case, model, batch_np)
      print(f"{name} torch: first-step loss {loss:.6f}", flush=True)
    compile_s = {}
    for variant in args.variants.split(","):
      key = "jax " + variant
      runners[key], loss, compile_s[key] = jax_runner(case, variant, params_np, batch_np)
      print(f"{name} {key}: first-step loss {loss:.6f}, compile + first step {compile_s[key]:.1f} s", flush=True)
    for one in runners.values():  # second warm-up
      one()
    # Interleaved rounds: every implementation runs once per round, so load changes hit all of them alike.
    times = {k: [] for k in runners}
    cpu_times = {k: [] for k in runners}
    for _ in range(args.repeats):
      peaks.append(matmul_peak(repeats=1))  # the peak is re-measured every round; the best one is used
      for k, one in runners.items():
        t0, c0 = time.perf_counter(), _cpu_seconds()
        one()
        times[k].append(time.perf_counter() - t0)
        cpu_times[k].append(_cpu_seconds() - c0)
    for k, ts in times.items():
      med = statistics.median(ts)
      ratio = (statistics.median([t / j for t, j in zip(times["torch"], ts)]) if "torch" in times
               else float("nan"))
      cpu = statistics.median(cpu_times[k])
      rows.append((name, k, med, tokens / med, ratio, flops / med / 1e9, compile_s.get(k),
                   (min(ts), max(ts)), cpu))
      print(f"{name} {k}: median {med:.3f} s/step, times {[round(t, 3) for t in ts]}, cpu {cpu:.3f} s/step",
            flush=True)
    del model, runners
  peak = max(max(p) for p in peaks)
  print()
  print(f"batch {CASES[names[0]].batch} × {CASES[names[0]].seq} tokens, "
        f"medians of {args.repeats}; peak = best 2048³ matmul seen in the run {peak:.0f} GFLOP/s (XLA best "
        f"{max(p[0] for p in peaks):.0f}, torch best {max(p[1] for p in peaks):.0f}); load avg now "
        f"{os.getloadavg()[0]:.1f}")
  print(f"{'case':6s} {'impl':16s} {'s/step':>8s} {'tokens/s':>9s} {'vs torch':>8s} {'% peak':>7s} "
        f"{'compile s':>9s} {'cpu s':>7s}   [min, max] s")
  for name, impl, med, tps, ratio, frac, comp, (lo, hi), cpu in rows:
    comp_s = f"{comp:9.1f}" if comp is not None else f"{'':9s}"
    print(f"{name:6s} {impl:16s} {med:8.3f} {tps:9.0f} {ratio:7.2f}x {100 * frac / peak:6.1f}% {comp_s} {cpu:7.2f}   "
          f"[{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
  main()
