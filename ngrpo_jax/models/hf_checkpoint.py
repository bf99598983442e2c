"""Hugging Face checkpoint I/O for the Qwen2 / Qwen3 port: safetensors ⇄ params, config.json, tokenizer.

Loading reads tensor by tensor from memory-mapped safetensors files (single ``model.safetensors`` or sharded
with ``model.safetensors.index.json``), stacks the per-layer tensors into the ``[num_layers, ...]`` layout of
``qwen2.py``, converts dtypes, and optionally places each param directly with a target ``jax.sharding``
(each device reads only its slice). Saving writes ``config.json`` plus safetensors in the HF layout, sharded
with an index above ``max_shard_size``, that ``transformers.AutoModelForCausalLM.from_pretrained`` loads.

The whole name mapping is the table ``HF_PARAM_TABLE`` below: HF tensor name ⇄ params path, and whether
the HF ``[out, in]`` linear weight is transposed to the Flax ``[in, out]`` kernel. One table serves both
families: a row applies to a config exactly when its params path exists in ``qwen2.param_shapes(config)``
(Qwen2: q/k/v biases; Qwen3: q_norm / k_norm and no biases; tied models: no lm_head).
"""
import json
import os
import pathlib
import re
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from ngrpo_jax.models import qwen2

# (HF tensor name, params path, transpose). "{i}" = decoder layer index; those params are stacked on axis 0.
# Rows whose params path the config does not have (qwen2.param_shapes) are skipped.
HF_PARAM_TABLE = (
    ("model.embed_tokens.weight",                       ("embed_tokens", "embedding"), False),
    ("model.layers.{i}.input_layernorm.weight",         ("layers", "input_layernorm", "scale"), False),
    ("model.layers.{i}.self_attn.q_proj.weight",        ("layers", "self_attn", "q_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.q_proj.bias",          ("layers", "self_attn", "q_proj", "bias"), False),
    ("model.layers.{i}.self_attn.k_proj.weight",        ("layers", "self_attn", "k_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.k_proj.bias",          ("layers", "self_attn", "k_proj", "bias"), False),
    ("model.layers.{i}.self_attn.v_proj.weight",        ("layers", "self_attn", "v_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.v_proj.bias",          ("layers", "self_attn", "v_proj", "bias"), False),
    ("model.layers.{i}.self_attn.o_proj.weight",        ("layers", "self_attn", "o_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.o_proj.bias",          ("layers", "self_attn", "o_proj", "bias"), False),  # Qwen3 + attention_bias
    ("model.layers.{i}.self_attn.q_norm.weight",        ("layers", "self_attn", "q_norm", "scale"), False),  # Qwen3
    ("model.layers.{i}.self_attn.k_norm.weight",        ("layers", "self_attn", "k_norm", "scale"), False),  # Qwen3
    ("model.layers.{i}.post_attention_layernorm.weight", ("layers", "post_attention_layernorm", "scale"), False),
    ("model.layers.{i}.mlp.gate_proj.weight",           ("layers", "mlp", "gate_proj", "kernel"), True),
    ("model.layers.{i}.mlp.up_proj.weight",             ("layers", "mlp", "up_proj", "kernel"), True),
    ("model.layers.{i}.mlp.down_proj.weight",           ("layers", "mlp", "down_proj", "kernel"), True),
    ("model.norm.weight",                               ("norm", "scale"), False),
    ("lm_head.weight",                                  ("lm_head", "kernel"), True),   # untied only
)

# Tensors some checkpoints carry that the port recomputes or does not need.
_IGNORED_TENSORS = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")

_SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_DTYPE_NAMES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}


# ----------------------------------------------------------------------------------------------------------
# safetensors files (format: u64 header length, JSON header {name: {dtype, shape, data_offsets}}, bytes).


class _SafetensorsFile:
  """A memory-mapped safetensors file: ``get(name)`` is a lazy numpy view (slicing reads only that part)."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    self.header, self._data_start = _read_safetensors_header(path)
    self._mmap = np.memmap(path, dtype=np.uint8, mode="r")

  def get(self, name: str) -> np.ndarray:
    info = self.header[name]
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"tensor {name!r} in {self.path}: unsupported safetensors dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    raw = self._mmap[self._data_start + begin:self._data_start + end]
    return raw.view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])


def _read_safetensors_header(path: pathlib.Path) -> tuple[dict, int]:
  """({tensor name: {dtype, shape, data_offsets}}, data start) of a safetensors file, validated as the
  safetensors library does: the header fits in the file and is a JSON object, every tensor's byte range
  matches its dtype and shape, and the ranges cover the data section exactly (no gap, overlap or tail).

  Raises:
    ValueError: ``<path> is not a valid safetensors file: <the problem>`` (truncated, random bytes...).
  """
  size = path.stat().st_size

  def bad(problem):
    return ValueError(f"{path} is not a valid safetensors file: {problem} (re-export or re-download it)")

  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise bad(f"{size} bytes, shorter than the 8-byte header length")
    header_len = int.from_bytes(head, "little")
    if header_len > size - 8:
      raise bad(f"the header claims {header_len} bytes but the file has {size} (truncated, or not safetensors)")
    try:
      header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise bad(f"its header is not JSON ({type(e).__name__})") from None
  if not isinstance(header, dict):
    raise bad("its header is not a JSON object")
  header.pop("__metadata__", None)
  data_size, ranges = size - 8 - header_len, []
  for name, info in header.items():
    try:
      dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
      shape = [int(d) for d in info["shape"]]
      begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise bad(f"tensor {name!r} has a malformed header entry {info!r}") from None
    if dtype is not None and end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
      raise bad(f"tensor {name!r} of shape {shape} and dtype {info['dtype']} spans {end - begin} bytes")
    ranges.append((begin, end, name))
  position = 0
  for begin, end, name in sorted(ranges):
    if begin != position:
      raise bad(f"tensor {name!r} starts at byte {begin} of the data instead of {position} (overlap or gap)")
    position = end
  if position != data_size:
    raise bad(f"incomplete data: the tensors need {position} bytes, the file holds {data_size}"
              + (" (truncated)" if position > data_size else ""))
  return header, 8 + header_len


def _write_safetensors(path: pathlib.Path, tensors: list):
  """Writes a safetensors file from [(name, shape, dtype, produce)], streaming one tensor at a time.

  ``produce()`` returns the tensor as a numpy array; only one tensor is on the host at any time.
  """
  header, offset, arrays = {}, 0, []
  for name, shape, dtype, _ in tensors:
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  header["__metadata__"] = {"format": "pt"}
  header_bytes = json.dumps(header, separators=(",", ":")).encode()
  header_bytes += b" " * (-len(header_bytes) % 8)
  with open(path, "wb") as f:
    f.write(len(header_bytes).to_bytes(8, "little"))
    f.write(header_bytes)
    for name, shape, dtype, produce in tensors:
      array = np.ascontiguousarray(produce(), dtype=dtype)
      if array.shape != tuple(shape):
        raise ValueError(f"tensor {name!r}: produced shape {array.shape}, expected {tuple(shape)}")
      f.write(array.tobytes())


# ----------------------------------------------------------------------------------------------------------
# Name mapping.


def _table_rows(config: qwen2.Qwen2Config) -> list:
  """The rows of ``HF_PARAM_TABLE`` that apply to ``config`` (their params path exists), in table order."""
  shapes = qwen2.param_shapes(config)
  return [row for row in HF_PARAM_TABLE if _tree_has(shapes, row[1])]


def _tree_has(tree, path) -> bool:
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True


def _expected_hf_tensors(config: qwen2.Qwen2Config) -> list:
  """[(hf_name, params_path, layer index or None, transpose, hf_shape)] in table order."""
  shapes = qwen2.param_shapes(config)
  out = []
  for template, path, transpose in _table_rows(config):
    shape = _tree_get(shapes, path)
    if "{i}" in template:
      layer_shape = tuple(reversed(shape[1:])) if transpose else tuple(shape[1:])
      for i in range(config.num_hidden_layers):
        out.append((template.format(i=i), path, i, transpose, layer_shape))
    else:
      out.append((template, path, None, transpose, tuple(reversed(shape)) if transpose else tuple(shape)))
  return out


def _tree_get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _tree_set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------------------------------------
# Loading.


def load_config(path, *, dtype=jnp.float32, param_dtype=jnp.float32) -> qwen2.Qwen2Config:
  """Reads ``path/config.json`` (Qwen2 or Qwen3) into a ``Qwen2Config`` (raises on unsupported options, see
  ``Qwen2Config.from_hf_dict``)."""
  config_path = pathlib.Path(path) / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"no config.json in checkpoint directory {path}")
  return qwen2.Qwen2Config.from_hf_dict(json.loads(config_path.read_text()), dtype=dtype,
                                        param_dtype=param_dtype)


def _open_checkpoint(path: pathlib.Path) -> dict:
  """{hf tensor name: _SafetensorsFile} for a single-file or sharded checkpoint."""
  index_path = path / "model.safetensors.index.json"
  single_path = path / "model.safetensors"
  if index_path.is_file():
    weight_map = json.loads(index_path.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index_path} has no 'weight_map'")
    files = {}
    for filename in sorted(set(weight_map.values())):
      if not (path / filename).is_file():
        raise FileNotFoundError(f"shard {filename!r} listed in {index_path} does not exist")
      files[filename] = _SafetensorsFile(path / filename)
    located = {}
    for name, filename in weight_map.items():
      if name not in files[filename].header:
        raise ValueError(f"tensor {name!r} is listed in the index for {filename!r} but is not in that file")
      located[name] = files[filename]
    return located
  if single_path.is_file():
    f = _SafetensorsFile(single_path)
    return {name: f for name in f.header}
  raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path} "
                          "(only safetensors checkpoints are supported)")


def load_pretrained(path, *, dtype=None, compute_dtype=None, shardings=None):
  """Loads a Hugging Face Qwen2 / Qwen3 (dense) checkpoint directory into (config, params).

  Args:
    path: directory with config.json and model.safetensors or model.safetensors.index.json (+ shards).
    dtype: parameter dtype (``config.param_dtype``); default float32. Tensors are converted on load.
    compute_dtype: ``config.dtype``; default = ``dtype`` (float32 when both are None).
    shardings: optional pytree matching params whose leaves are ``jax.sharding.Sharding`` (or None for the
      default device); each param is assembled with ``jax.make_array_from_callback`` so every device reads
      only its own slice of the file.

  Returns:
    (Qwen2Config, params) with params laid out as in ``qwen2.py``.

  Raises:
    FileNotFoundError / ValueError naming the missing file, missing or unexpected tensor, wrong shape, or
    unsupported config key.
  """
  path = pathlib.Path(path)
  param_dtype = jnp.dtype(dtype) if dtype is not None else jnp.dtype(jnp.float32)
  compute = jnp.dtype(compute_dtype) if compute_dtype is not None else param_dtype
  config = load_config(path, dtype=compute, param_dtype=param_dtype)
  tensors = _open_checkpoint(path)
  expected = _expected_hf_tensors(config)

  expected_names = {name for name, *_ in expected}
  for name, _, _, _, shape in expected:
    if name not in tensors:
      raise ValueError(f"checkpoint {path} is missing tensor {name!r}")
    found = tuple(tensors[name].header[name]["shape"])
    if found != shape:
      raise ValueError(f"tensor {name!r} has shape {found}, expected {shape} from config.json")
  unexpected = sorted(n for n in tensors if n not in expected_names and not _IGNORED_TENSORS.match(n)
                      and not (n == "lm_head.weight" and config.tie_word_embeddings))
  if unexpected:
    raise ValueError(f"checkpoint {path} has unexpected tensor(s) {unexpected[:5]}"
                     f"{' ...' if len(unexpected) > 5 else ''}; is this really a "
                     f"{qwen2.ARCHITECTURES[config.model_type]} (as its config.json says)?")

  by_path = {}
  for name, p, layer, transpose, _ in expected:
    by_path.setdefault(p, []).append((name, layer, transpose))

  params = {}
  for p, entries in by_path.items():
    shape = _tree_get(qwen2.param_shapes(config), p)
    sharding = _tree_get(shardings, p) if shardings is not None else None
    stacked = entries[0][1] is not None

    def read(index, entries=entries, stacked=stacked, shape=shape):
      """Host block of the param for a tuple of slices ``index`` over its (stacked, [in, out]) shape."""
      index = tuple(index) + (slice(None),) * (len(shape) - len(index))
      layer_index, inner = (index[0], index[1:]) if stacked else (slice(None), index)
      chosen = entries[layer_index] if stacked else entries
      blocks = []
      for name, _, transpose in chosen:
        src = tensors[name].get(name)
        block = src[tuple(reversed(inner))].T if transpose else src[inner]
        blocks.append(np.asarray(block).astype(param_dtype))
      return np.stack(blocks) if stacked else blocks[0]

    if sharding is None:
      value = jax.device_put(read(()))
    else:
      value = jax.make_array_from_callback(shape, sharding, read)
    _tree_set(params, p, value)
  return config, params


# ----------------------------------------------------------------------------------------------------------
# Saving.


def _parse_size(size) -> int:
  if isinstance(size, (int, np.integer)):
    return int(size)
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)\s*", str(size), re.IGNORECASE)
  if not match:
    raise ValueError(f"max_shard_size must be an int (bytes) or like '5GB' / '500MiB', got {size!r}")
  unit = match.group(2).upper()
  base = 1024 if "I" in unit else 1000
  power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
  return int(float(match.group(1)) * base ** power)


def save_pretrained(path, config: qwen2.Qwen2Config, params: dict, *, dtype=None, max_shard_size="5GB"):
  """Writes params as a Hugging Face checkpoint directory (config.json + safetensors).

  Args:
    path: output directory (created).
    config: the model's ``Qwen2Config``.
    params: params pytree (any shardings; each tensor is gathered to host one layer at a time).
    dtype: tensor dtype on disk (default ``config.param_dtype``), also recorded as ``torch_dtype``.
    max_shard_size: bytes or a string like "5GB"; above it the tensors go to
      ``model-0000k-of-0000n.safetensors`` files plus ``model.safetensors.index.json``.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  out_dtype = np.dtype(jnp.dtype(dtype) if dtype is not None else config.param_dtype)
  if out_dtype not in _DTYPE_NAMES:
    raise ValueError(f"dtype {out_dtype} cannot be written to safetensors")
  limit = _parse_size(max_shard_size)

  expected_shapes = qwen2.param_shapes(config)
  for _, p, _ in _table_rows(config):
    try:
      leaf = _tree_get(params, p)
    except (KeyError, TypeError):
      raise ValueError(f"params is missing {'/'.join(p)}") from None
    if tuple(leaf.shape) != _tree_get(expected_shapes, p):
      raise ValueError(f"params {'/'.join(p)} has shape {tuple(leaf.shape)}, expected "
                       f"{_tree_get(expected_shapes, p)} from config")

  entries = []
  for name, p, layer, transpose, shape in _expected_hf_tensors(config):
    leaf = _tree_get(params, p)

    def produce(leaf=leaf, layer=layer, transpose=transpose):
      array = np.asarray(jax.device_get(leaf if layer is None else leaf[layer]))
      return array.T if transpose else array

    entries.append((name, shape, out_dtype, produce))

  shards, current, current_size = [], [], 0
  for entry in entries:
    nbytes = int(np.prod(entry[1], dtype=np.int64)) * out_dtype.itemsize
    if current and current_size + nbytes > limit:
      shards.append(current)
      current, current_size = [], 0
    current.append(entry)
    current_size += nbytes
  shards.append(current)

  for stale in list(path.glob("model*.safetensors")) + list(path.glob("model.safetensors.index.json")):
    stale.unlink()
  if len(shards) == 1:
    _write_safetensors(path / "model.safetensors", shards[0])
  else:
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
      filename = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
      _write_safetensors(path / filename, shard)
      for name, shape, _, _ in shard:
        weight_map[name] = filename
        total += int(np.prod(shape, dtype=np.int64)) * out_dtype.itemsize
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
  hf_config = config.to_hf_dict(torch_dtype=str(out_dtype))
  (path / "config.json").write_text(json.dumps(hf_config, indent=2))


# ----------------------------------------------------------------------------------------------------------
# Tokenizer.


def load_tokenizer(path, **kwargs):
  """The checkpoint's tokenizer via ``transformers.AutoTokenizer.from_pretrained(path)`` (chat template incl.)."""
  import transformers  # Heavy import, only needed on the host side.
  if not pathlib.Path(path).is_dir():
    raise FileNotFoundError(f"tokenizer directory {path} does not exist")
  return transformers.AutoTokenizer.from_pretrained(os.fspath(path), **kwargs)


# A probe text with spaces, double spaces, newlines, digits, LaTeX and the end-of-turn marker: what a reloaded
# tokenizer must encode exactly like the one that was saved.
_TOKENIZER_PROBE = ("Compute 12 + 345.\nPlease reason step by step, and put your final answer within \\boxed{}.\n\n"
                    "  x = 357")


def save_tokenizer(path, tokenizer) -> None:
  """Writes ``tokenizer`` into the checkpoint directory ``path`` and checks that the standard loader
  (``transformers.AutoTokenizer.from_pretrained(path)``, which also reads ``path/config.json``'s
  ``model_type``) rebuilds the same tokenizer: same ids for a probe text (plus the eos token), same eos and
  pad ids, same length.

  Raises:
    ValueError: naming the reloaded class and the first difference (e.g. a tokenizer whose class the
      loader overrides from ``model_type`` and rebuilds differently).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer.save_pretrained(os.fspath(path))
  loaded = transformers.AutoTokenizer.from_pretrained(os.fspath(path))
  probe = _TOKENIZER_PROBE + (tokenizer.eos_token or "")
  want = tokenizer(probe, add_special_tokens=False)["input_ids"]
  got = loaded(probe, add_special_tokens=False)["input_ids"]
  problems = []
  if want != got:
    problems.append(f"{probe!r} encodes as {got[:24]}... instead of {want[:24]}...")
  for name in ("eos_token_id", "pad_token_id"):
    if getattr(loaded, name) != getattr(tokenizer, name):
      problems.append(f"{name} {getattr(loaded, name)} instead of {getattr(tokenizer, name)}")
  if len(loaded) != len(tokenizer):
    problems.append(f"{len(loaded)} tokens instead of {len(tokenizer)}")
  if problems:
    raise ValueError(f"the tokenizer saved in {path} does not reload as itself: AutoTokenizer builds a "
                     f"{type(loaded).__name__} (not a {type(tokenizer).__name__}) whose " + "; ".join(problems))

