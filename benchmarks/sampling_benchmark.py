"""Side-by-side speed of ``ngrpo_jax.sampling.generate`` and transformers' ``generate`` (torch CPU).

Random float32 Qwen2 configs, the stop token disabled so every row produces the full length, greedy and
temperature 0.6 + top-p 0.95 (``top_k=0`` so only top-p filters). Prints tokens/s (median of repeats) for
both, the ratio, ms per decode step against the memory-bandwidth floor (weight bytes / bandwidth), and the
JAX compile time (first call minus a warm call) separately.

  python benchmarks/sampling_benchmark.py --cases TINY,SMALL [--repeats 3] [--bandwidth_gbs 25]

The machine may be shared: timings are noisy, compare the ratios measured in the same run.
"""
import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import configs  # noqa: E402  (before jax: defaults JAX to CPU)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
  """A model shape and a generation workload: batch × prompt → new tokens."""
  shape: configs.ModelShape
  batch: int
  prompt: int
  new: int

  @property
  def name(self):
    return self.shape.name


CASES = {
    "TINY": Case(configs.SHAPES["TINY"], 16, 32, 128),
    "SMALL": Case(configs.SHAPES["SMALL"], 16, 32, 128),
    "QWEN05B": Case(configs.SHAPES["QWEN05B"], 4, 32, 64),
}

MODES = {"greedy": dict(greedy=True), "top_p": dict(temperature=0.6, top_p=0.95)}


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def run_case(case, repeats, bandwidth_gbs):
  import torch

  from ngrpo_jax import sampling
  from ngrpo_jax.models import qwen2

  model = configs.torch_model(case.shape, seed=0)
  config = qwen2.Qwen2Config.from_hf_dict(model.config.to_dict())
  params = jax.tree.map(jnp.asarray, configs.params_from_torch(model, case.shape))
  n_params = sum(p.numel() for p in model.parameters())
  floor_ms = 4 * n_params / (bandwidth_gbs * 1e9) * 1e3

  rng = np.random.RandomState(0)
  tokens = rng.randint(1, case.shape.vocab, (case.batch, case.prompt)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  n_tokens = case.batch * case.new
  rows = []
  for mode, kw in MODES.items():
    # JAX: first call compiles; later calls (new keys) reuse the compiled code.
    def jax_run(seed):
      # The decode layout (per-layer weights) is made inside the timed call: a trainer pays it once per
      # policy update, i.e. once per rollout batch.
      out = sampling.generate(sampling.prepare_params(params), config, tokens, mask, jax.random.key(seed),
                              max_new_tokens=case.new,
                              stop_token_ids=(), top_k=0, **kw)
      jax.block_until_ready(out.tokens)
      return out
    t = time.perf_counter()
    out = jax_run(0)
    first = time.perf_counter() - t
    assert bool(np.all(np.asarray(out.lengths) == case.new))
    seeds = iter(range(1, 1000))
    jax_s = _median_time(lambda: jax_run(next(seeds)), repeats)
    # Per-step cost: difference of a full run and a shorter run of the same length bucket (no recompile).
    short = case.new // 2 + 1
    def jax_short():
      o = sampling.generate(sampling.prepare_params(params), config, tokens, mask, jax.random.key(7),
                            max_new_tokens=short,
                            stop_token_ids=(), top_k=0, **kw)
      jax.block_until_ready(o.tokens)
    jax_short()
    short_s = _median_time(jax_short, repeats) if sampling.bucket_length(short) == sampling.bucket_length(case.new) \
        else None
    step_ms = (jax_s - short_s) / (case.new - short) * 1e3 if short_s is not None else jax_s / case.new * 1e3

    torch_kw = dict(do_sample=False) if mode == "greedy" else dict(do_sample=True, temperature=0.6, top_p=0.95,
                                                                   top_k=0)
    tt, tm = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    def torch_run():
      with torch.no_grad():
        o = model.generate(tt, attention_mask=tm, max_new_tokens=case.new, min_new_tokens=case.new,
                           pad_token_id=0, **torch_kw)
      assert o.shape[1] == case.prompt + case.new
    torch_run()  # warm-up
    torch_s = _median_time(torch_run, repeats)
    rows.append(dict(case=case.name, mode=mode, jax_tps=n_tokens / jax_s, hf_tps=n_tokens / torch_s,
                     ratio=torch_s / jax_s, step_ms=step_ms, floor_ms=floor_ms, compile_s=first - jax_s))
    r = rows[-1]
    print(f"{r['case']:8s} {r['mode']:7s} jax {r['jax_tps']:9.1f} tok/s  transformers {r['hf_tps']:9.1f} tok/s  "
          f"ratio {r['ratio']:5.2f}x  step {r['step_ms']:7.2f} ms (floor {r['floor_ms']:6.2f} ms)  "
          f"compile {r['compile_s']:5.1f} s", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="TINY,SMALL", help="comma-separated subset of TINY,SMALL,QWEN05B")
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--bandwidth_gbs", type=float, default=25.0, help="memory bandwidth for the step floor")
  args = parser.parse_args()
  try:
    names = configs.parse_shapes(args.cases, CASES)
  except ValueError as e:
    parser.error(str(e))
  import torch
  configs.set_threads(args.threads)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} with {args.threads} "
        "threads; tokens/s = batch * new tokens / median wall time")
  rows = []
  for name in names:
    rows += run_case(CASES[name], args.repeats, args.bandwidth_gbs)
  print("\n| case | mode | ngrpo_jax tok/s | transformers tok/s | ratio | ms/step | floor ms | compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['case']} | {r['mode']} | {r['jax_tps']:.0f} | {r['hf_tps']:.0f} | {r['ratio']:.2f}x | "
          f"{r['step_ms']:.2f} | {r['floor_ms']:.2f} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
  main()
