"""Orbax checkpoints of the full train state (params, optimiser state, step, PRNG key, data position,
reference policy) plus the run's config as JSON; keep-last-N; resume from the newest intact checkpoint (a
damaged one is named in one line and set aside); HF export.

A state restored by :func:`restore_latest` is bit-identical to the one saved (on CPU), so a resumed run
continues exactly like an uninterrupted one (tested in ``tests/test_training_loop.py``).
"""
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from ngrpo_jax import models
from ngrpo_jax.training import state as state_lib


class CheckpointError(ValueError):
  """No checkpoint of a run can be read (each one's folder and error are named)."""


def _sync(name: str) -> None:
  """A barrier of every process (multi-host), so that no process reads a folder another is moving."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _stderr_kept_on_success(fn):
  """``fn()`` with the process's stderr (file descriptor 2) held back: written out when ``fn`` returns, dropped
  when it raises. TensorStore prints dozens of asyncio tracebacks while it fails to read a damaged checkpoint;
  the caller reports that failure in one line instead."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      result = fn()
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    held.seek(0)
    sys.stderr.write(held.read().decode(errors="replace"))
  return result


def _to_tree(state: state_lib.TrainState) -> dict:
  tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": state.rng,
          "data_position": state.data_position}
  if state.ref_params is not None:
    tree["ref_params"] = state.ref_params
  if state.controllers is not None:   # adaptive coefficients (KL-in-reward, adaptive entropy) resume with the run
    tree["controllers"] = state.controllers
  return tree


def _from_tree(tree: dict, like: state_lib.TrainState) -> state_lib.TrainState:
  return state_lib.TrainState(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"],
                              rng=tree["rng"], data_position=tree["data_position"],
                              ref_params=tree.get("ref_params") if like.ref_params is not None else None,
                              controllers=tree.get("controllers", like.controllers),
                              lora_config=like.lora_config)


class Checkpointer:
  """Saves / restores ``TrainState`` under ``directory`` (one orbax step folder per saved step).

  Args:
    directory: checkpoint root (created).
    keep: keep the last ``keep`` checkpoints (older ones are deleted).
    keep_steps: steps kept whatever ``keep`` says (the trainer keeps step 0, the warm-started policy whose
      evaluation is the run's "before RL").
  """

  def __init__(self, directory, keep: int = 3, keep_steps: Sequence[int] = ()):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.directory = pathlib.Path(directory).absolute()
    self.directory.mkdir(parents=True, exist_ok=True)
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if keep_steps:
      policies.append(ocp.checkpoint_managers.CustomSteps([int(s) for s in keep_steps]))
    self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies), create=True))

  def save(self, state: state_lib.TrainState, config: Optional[dict] = None, extra: Optional[dict] = None):
    """Writes the state at ``int(state.step)`` (blocking) with the JSON ``config`` / ``extra`` metadata."""
    step = int(jax.device_get(state.step))
    meta = {"config": config or {}, "extra": extra or {}, "step": step}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_tree(state)),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return list(self._manager.all_steps())

  def latest_metadata(self) -> Optional[dict]:
    """The JSON metadata (``config``, ``extra``, ``step``) of the newest checkpoint whose metadata is readable,
    or None (no arrays read; a damaged checkpoint is reported by :meth:`restore_latest`)."""
    for step in sorted(self.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception:  # pylint: disable=broad-except  (damaged: restore_latest names it)
        continue
      return dict(restored["meta"])
    return None

  def restore_latest(self, like: state_lib.TrainState, shardings=None,
                     log: Callable[[str], None] = print) -> tuple[Optional[state_lib.TrainState], dict]:
    """(state, metadata) of the newest intact checkpoint, or (None, {}) when there is none.

    A checkpoint that cannot be read (truncated or overwritten files, a missing manifest...: the reader's
    ValueError / OSError) is reported in one line through ``log`` naming its folder and the reader's error,
    moved to ``<directory>.damaged/<step>`` (kept for inspection, out of the way of the step's re-save) and the
    next older one is tried. Other errors (out of memory, a state of another structure) propagate.

    Args:
      like: a state with the same structure (e.g. freshly created); its arrays give shapes and dtypes.
      shardings: optional pytree of ``jax.sharding.Sharding`` matching ``like`` (e.g.
        ``sharding.train_state_shardings``): every array is read straight into its shards.
      log: where the one-line damage reports go.

    Raises:
      ValueError: the checkpoint's arrays do not match ``like`` (names the first mismatching arrays).
      CheckpointError: every checkpoint is damaged (names each one and its error).
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return _stderr_kept_on_success(lambda step=step: self.restore(step, like, shardings))
      except (ValueError, OSError, EOFError, KeyError) as e:   # TensorStore / JSON / file errors of the folder
        if "does not match the train state" in str(e) or "RESOURCE_EXHAUSTED" in str(e):
          raise                                              # not damage: the caller's state or memory
        damaged.append(self._set_aside(step, e, log))
    if damaged:
      raise CheckpointError(f"no intact checkpoint in {self.directory}: " + "; ".join(damaged)
                            + f" (moved to {self.directory}.damaged/; delete them and rerun to start afresh)")
    return None, {}

  def restore(self, step: int, like: state_lib.TrainState, shardings=None) -> tuple[state_lib.TrainState, dict]:
    """(state, metadata) of the checkpoint of ``step`` (arguments as :meth:`restore_latest`; no fallback)."""
    tree = _to_tree(like)
    if "controllers" in tree and not self._saved_has(step, "controllers"):
      # A checkpoint written before controllers were saved: they restart from ``like``'s (initial) values.
      logging.warning("checkpoint %s/%d holds no controllers; %s restart from their initial values",
                      self.directory, step, sorted(tree["controllers"]))
      del tree["controllers"]
    if shardings is None:
      abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
    else:
      abstract = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                                        {k: v for k, v in _to_tree(shardings).items() if k in tree})
    self._check_shapes(step, abstract)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore()))
    return _from_tree(restored["state"], like), dict(restored["meta"])

  def _set_aside(self, step: int, error: Exception, log) -> str:
    """Reports a damaged step folder in one line and moves it to ``<directory>.damaged/<step>``."""
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    what = f"{self.directory}/{step} is damaged ({type(error).__name__}: {first_line[:300]})"
    target = pathlib.Path(f"{self.directory}.damaged") / str(step)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      if target.exists():
        shutil.rmtree(target)
      shutil.move(str(self.directory / str(step)), str(target))
    _sync(f"checkpoint_set_aside_{step}")
    self._manager.reload()
    older = [s for s in self.all_steps() if s < step]
    log(f"[resume] warning: {what}; moved to {target}; "
        + (f"trying the previous checkpoint (step {max(older)})" if older else "no older checkpoint"))
    return what

  def _saved_has(self, step: int, key: str) -> bool:
    """Whether the saved state of ``step`` has the top-level entry ``key`` (True when its metadata is unreadable:
    then orbax reports the problem)."""
    try:
      saved = self._manager.item_metadata(step)["state"]
    except Exception:  # pylint: disable=broad-except
      return True
    return saved is None or key in saved

  def _check_shapes(self, step: int, abstract) -> None:
    """Compares the saved arrays' shapes with ``abstract`` and raises a ValueError naming the differences."""
    try:
      saved = self._manager.item_metadata(step)["state"]
    except Exception:  # pylint: disable=broad-except  (no metadata: let orbax report)
      return
    if saved is None:
      return
    want = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    have = {_path(p): tuple(getattr(x, "shape", ())) for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
    diffs = [f"{k}: saved {have.get(k)} vs {want.get(k)}" for k in sorted(set(want) | set(have))
             if want.get(k) != have.get(k)]
    if diffs:
      more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
      raise ValueError(f"checkpoint {self.directory}/{step} does not match the train state to restore: "
                       + "; ".join(diffs[:5]) + more)

  def close(self):
    self._manager.close()


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def export_hf(path, model_config, policy_params, tokenizer=None):
  """Writes the policy as a Hugging Face directory (``models.save_pretrained``) plus the tokenizer, checked to
  reload as itself through ``AutoTokenizer`` (``models.save_tokenizer``)."""
  path = os.fspath(path)
  models.save_pretrained(path, model_config, jax.device_get(policy_params))
  if tokenizer is not None:
    models.save_tokenizer(path, tokenizer)
  return path


def write_json(path, obj: Any):
  """Writes ``obj`` as indented JSON (numpy / jax scalars converted)."""

  def default(o):
    if isinstance(o, (np.generic, jnp.ndarray, np.ndarray)):
      return np.asarray(o).tolist()
    return str(o)

  pathlib.Path(path).write_text(json.dumps(obj, indent=2, default=default, sort_keys=True) + "\n")
