"""The policy model: Qwen2 / Qwen3 (dense) in pure JAX, Hugging Face checkpoint I/O, chunked token log-probs."""
from ngrpo_jax.models import lora
from ngrpo_jax.models import modules
from ngrpo_jax.models.hf_checkpoint import load_pretrained
from ngrpo_jax.models.hf_checkpoint import load_tokenizer
from ngrpo_jax.models.hf_checkpoint import save_pretrained
from ngrpo_jax.models.hf_checkpoint import save_tokenizer
from ngrpo_jax.models.logprobs import token_logprobs
from ngrpo_jax.models.qwen2 import forward
from ngrpo_jax.models.qwen2 import hidden_states
from ngrpo_jax.models.qwen2 import init_cache
from ngrpo_jax.models.qwen2 import init_params
from ngrpo_jax.models.qwen2 import init_value_head
from ngrpo_jax.models.qwen2 import KVCache
from ngrpo_jax.models.qwen2 import lm_logits
from ngrpo_jax.models.qwen2 import Qwen2Config
from ngrpo_jax.models.qwen2 import value

__all__ = [
    "KVCache", "Qwen2Config", "forward", "hidden_states", "init_cache", "init_params", "init_value_head",
    "lm_logits", "load_pretrained", "lora", "modules", "load_tokenizer", "save_pretrained", "save_tokenizer", "token_logprobs", "value",
]
