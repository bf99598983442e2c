"""Model shapes and setup shared by the benchmark scripts.

Every benchmark compares ``ngrpo_jax`` with transformers + torch on the same random float32 Qwen2 model of
one of these shapes:

  | shape   | vocab   | hidden | layers | heads/kv | intermediate | tied |
  | TINY    | 512     | 128    | 4      | 4/2      | 512          | no   |
  | SMALL   | 32,000  | 512    | 8      | 8/2      | 1,408        | no   |
  | QWEN05B | 151,936 | 896    | 24     | 14/2     | 4,864        | yes  |   (Qwen2.5-0.5B)

A script imports this module before jax (``from benchmarks import configs``): importing it makes JAX default
to the CPU platform (``JAX_PLATFORMS=cpu`` unless already set). Workloads (batch, lengths) stay in each
script; only the model shapes, the random model builder, the torch → params copy and the thread setup live
here.
"""
import dataclasses
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """Sizes of a Qwen2 model (HF names in ``qwen2_kwargs``)."""
  name: str
  vocab: int
  hidden: int
  layers: int
  heads: int
  kv_heads: int
  intermediate: int
  tied: bool

  def qwen2_kwargs(self) -> dict:
    """Keyword arguments of ``ngrpo_jax.models.qwen2.Qwen2Config`` for this shape."""
    return dict(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                tie_word_embeddings=self.tied)


SHAPES = {
    "TINY": ModelShape("TINY", 512, 128, 4, 4, 2, 512, False),
    "SMALL": ModelShape("SMALL", 32000, 512, 8, 8, 2, 1408, False),
    "QWEN05B": ModelShape("QWEN05B", 151936, 896, 24, 14, 2, 4864, True),
}


def hf_config(shape: ModelShape):
  """transformers ``Qwen2Config`` of ``shape``: no eos (so generation always runs to its length), pad 0."""
  import transformers
  return transformers.Qwen2Config(**shape.qwen2_kwargs(), max_position_embeddings=4096, eos_token_id=None,
                                  pad_token_id=0, bos_token_id=None)


def torch_model(shape: ModelShape, seed: int = 0):
  """A random float32 ``Qwen2ForCausalLM`` of ``shape`` (torch seed ``seed``), in eval mode."""
  import torch
  import transformers
  torch.manual_seed(seed)
  return transformers.Qwen2ForCausalLM(hf_config(shape)).to(torch.float32).eval()


def params_from_torch(model, shape: ModelShape) -> dict:
  """Copies the torch weights into the ngrpo_jax params layout (numpy; [in, out] kernels, stacked layers)."""
  import numpy as np
  sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  layer = lambda name: np.stack([sd[f"model.layers.{i}.{name}"] for i in range(shape.layers)])
  kern = lambda name: {"kernel": np.ascontiguousarray(np.swapaxes(layer(name + ".weight"), 1, 2))}
  kern_b = lambda name: {**kern(name), "bias": layer(name + ".bias")}
  params = {
      "embed_tokens": {"embedding": sd["model.embed_tokens.weight"]},
      "layers": {
          "input_layernorm": {"scale": layer("input_layernorm.weight")},
          "self_attn": {"q_proj": kern_b("self_attn.q_proj"), "k_proj": kern_b("self_attn.k_proj"),
                        "v_proj": kern_b("self_attn.v_proj"), "o_proj": kern("self_attn.o_proj")},
          "post_attention_layernorm": {"scale": layer("post_attention_layernorm.weight")},
          "mlp": {"gate_proj": kern("mlp.gate_proj"), "up_proj": kern("mlp.up_proj"),
                  "down_proj": kern("mlp.down_proj")},
      },
      "norm": {"scale": sd["model.norm.weight"]},
  }
  if not shape.tied:
    params["lm_head"] = {"kernel": np.ascontiguousarray(sd["lm_head.weight"].T)}
  return params


def set_threads(threads: int) -> None:
  """Torch intra-op threads (transformers' side of a comparison); JAX/XLA picks its own."""
  import torch
  torch.set_num_threads(threads)


def parse_shapes(names: str, known) -> list:
  """Upper-cased names from a comma-separated ``names``; ValueError naming unknown ones."""
  out = [n.strip().upper() for n in names.split(",") if n.strip()]
  unknown = [n for n in out if n not in known]
  if unknown:
    raise ValueError(f"unknown case(s) {unknown}; choose from {sorted(known)}")
  return out
