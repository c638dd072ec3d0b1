"""MoE routing traces: which experts each token picked in each layer, on disk and in memory.

A routing trace records, per MoE layer and token, the ``top_k`` expert ids the router chose
(optionally their gate weights) and the GPU (expert-parallel rank) each token starts on. It is
what ``placement/`` fits an expert→GPU map on and what the MoE workload replays.

On disk a trace is one ``.npz`` file (``numpy.savez_compressed``) holding:

===============  ===============================  ==============================================
array            dtype, shape                     meaning
===============  ===============================  ==============================================
``experts``      integer (layers, tokens, top_k)  expert ids in [0, experts), distinct within a
                                                  token's k choices; slot 0 = the highest gate
``gates``        float32 (layers, tokens, top_k)  optional: the gate weights of those choices
``source_gpu``   int32 (tokens,)                  the GPU each token starts on, in [0, gpus)
``batch``        int32 (tokens,)                  optional: batch/step index, non-decreasing
``meta``         0-d string                       JSON, see below
===============  ===============================  ==============================================

``meta`` is ``{"format": "moesim-routing-trace", "version": 1, "model": str, "experts": int,
"top_k": int, "layers": int, "hidden": int, "bytes_per_element": int, "gpus": int}`` plus optional
free-form ``"source"`` and ``"notes"`` strings (other keys are ignored). ``hidden`` is the width of
a token's hidden vector in elements and ``bytes_per_element`` its element size in bytes, so one
token sent to one expert moves ``hidden * bytes_per_element`` bytes.

In memory a trace is a frozen :class:`RoutingTrace`. Its arrays are read-only views; the meta
``experts`` count is the attribute ``num_experts`` (``experts`` is the id array). Every
constructor call validates the whole trace with vectorised checks and raises :class:`TraceError`
(a ``ValueError``) with one line that names the array or field and says how to fix it.

Example::

    >>> import numpy as np
    >>> t = RoutingTrace(experts=np.array([[[0, 1], [2, 3]]]), source_gpu=np.array([0, 1]),
    ...                  num_experts=4, top_k=2, layers=1, gpus=2, hidden=8, bytes_per_element=2)
    >>> t.tokens, t.tokens_per_gpu.tolist(), expert_load(t).tolist()
    (2, [1, 1], [[1, 1, 1, 1]])
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "moesim-routing-trace"
VERSION = 1
META_KEYS = (
    "format",
    "version",
    "model",
    "experts",
    "top_k",
    "layers",
    "hidden",
    "bytes_per_element",
    "gpus",
)
_META_INTS = ("experts", "top_k", "layers", "hidden", "bytes_per_element", "gpus")
_REQUIRED_ARRAYS = ("experts", "source_gpu", "meta")
_OPTIONAL_ARRAYS = ("gates", "batch")
_DENSE_JOINT_LIMIT = 1 << 22  # joint (expert, expert) histograms up to this many bins use bincount


class TraceError(ValueError):
    """A routing trace that cannot be read or is inconsistent; the message is one line."""


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class RoutingTrace:
    """One routing trace: per layer and token, the top-k experts chosen, plus metadata.

    Attributes:
        experts: (layers, tokens, top_k) expert ids, distinct per token, slot 0 = highest gate.
            Stored as int16 when ``num_experts`` <= 32767, else int32.
        source_gpu: (tokens,) int32, the GPU (expert-parallel rank) each token starts on.
        num_experts: experts per MoE layer (meta ``experts``).
        top_k: experts chosen per token.
        layers: MoE layers.
        gpus: GPUs (expert-parallel ranks) the tokens start on.
        hidden: hidden size, elements per token vector.
        bytes_per_element: bytes per element of the token vector (2 for bf16).
        model: the model name.
        gates: optional (layers, tokens, top_k) float32 gate weights.
        batch: optional (tokens,) int32 batch/step index, non-decreasing.
        source: free-form provenance (where the trace came from).
        notes: free-form notes.
    """

    experts: np.ndarray
    source_gpu: np.ndarray
    num_experts: int
    top_k: int
    layers: int
    gpus: int
    hidden: int
    bytes_per_element: int
    model: str = "unknown"
    gates: np.ndarray | None = None
    batch: np.ndarray | None = None
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        for name in ("num_experts", "top_k", "layers", "gpus", "hidden", "bytes_per_element"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        if self.top_k > self.num_experts:
            raise TraceError(
                f"meta.top_k: {self.top_k} > meta.experts={self.num_experts} "
                "(a token picks top_k distinct experts)"
            )
        for name in ("model", "source", "notes"):
            if not isinstance(getattr(self, name), str):
                raise TraceError(f"meta.{name}: must be a string, got {getattr(self, name)!r}")
        object.__setattr__(self, "experts", _check_experts(self))
        tokens = self.experts.shape[1]
        object.__setattr__(self, "source_gpu", _check_tokens_array(self.source_gpu, "source_gpu", tokens))
        _check_source_gpu(self.source_gpu, self.gpus)
        object.__setattr__(self, "source_gpu", _frozen(self.source_gpu.astype(np.int32, copy=False)))
        if self.gates is not None:
            object.__setattr__(self, "gates", _check_gates(self.gates, self.experts.shape))
        if self.batch is not None:
            batch = _check_tokens_array(self.batch, "batch", tokens)
            _check_batch(batch)
            object.__setattr__(self, "batch", _frozen(batch.astype(np.int32, copy=False)))

    @property
    def tokens(self) -> int:
        """Number of tokens (per layer)."""
        return int(self.experts.shape[1])

    @property
    def tokens_per_gpu(self) -> np.ndarray:
        """(gpus,) int64: how many tokens start on each GPU."""
        return np.bincount(self.source_gpu, minlength=self.gpus)

    @property
    def token_bytes(self) -> int:
        """Bytes of one token's hidden vector (``hidden * bytes_per_element``)."""
        return self.hidden * self.bytes_per_element

    def __repr__(self) -> str:
        return (
            f"RoutingTrace(model={self.model!r}, layers={self.layers}, tokens={self.tokens}, "
            f"experts={self.num_experts}, top_k={self.top_k}, gpus={self.gpus}, hidden={self.hidden}, "
            f"bytes_per_element={self.bytes_per_element}, gates={self.gates is not None}, "
            f"batch={self.batch is not None})"
        )


# ----------------------------------------------------------------------------------------------
# validation


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view (the caller's array keeps its own flags)."""
    view = array.view()
    view.flags.writeable = False
    return view


def _positive_int(name: str, value: Any) -> int:
    meta = "experts" if name == "num_experts" else name
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TraceError(f"meta.{meta}: must be a whole number >= 1, got {value!r}")
    return int(value)


def _id_dtype(num_experts: int) -> type:
    return np.int16 if num_experts <= np.iinfo(np.int16).max else np.int32


def _check_experts(trace: RoutingTrace) -> np.ndarray:
    experts = np.asarray(trace.experts)
    want = f"(layers, tokens, top_k) = ({trace.layers}, tokens, {trace.top_k})"
    if experts.ndim != 3:
        raise TraceError(f"experts has shape {experts.shape} but must be (layers, tokens, top_k) = 3-D")
    if not np.issubdtype(experts.dtype, np.integer):
        raise TraceError(f"experts has dtype {experts.dtype} but must hold integer expert ids")
    if experts.shape[0] != trace.layers or experts.shape[2] != trace.top_k:
        raise TraceError(f"experts has shape {experts.shape} but meta says {want} (fix meta or the array)")
    if experts.size:
        _check_id_range(experts, trace.num_experts)
        _check_distinct(experts)
    return _frozen(experts.astype(_id_dtype(trace.num_experts), copy=False))


def _check_id_range(experts: np.ndarray, num_experts: int) -> None:
    flat = experts.reshape(experts.shape[0], -1)
    k = experts.shape[2]
    high = flat.max(axis=1)
    if (high >= num_experts).any():
        layer = int(np.argmax(high >= num_experts))
        pos = int(np.argmax(flat[layer] >= num_experts))
        raise TraceError(
            f"experts: id {flat[layer, pos]} >= experts={num_experts} in layer {layer}, token {pos // k} "
            "(ids must be below meta.experts)"
        )
    low = flat.min(axis=1)
    if (low < 0).any():
        layer = int(np.argmax(low < 0))
        pos = int(np.argmax(flat[layer] < 0))
        raise TraceError(
            f"experts: id {flat[layer, pos]} < 0 in layer {layer}, token {pos // k} "
            "(ids must be in [0, meta.experts))"
        )


def _check_distinct(experts: np.ndarray) -> None:
    k = experts.shape[2]
    if k < 2:
        return
    if k <= 16:  # pairwise comparisons beat sorting many short rows
        repeats = np.zeros(experts.shape[:2], dtype=bool)
        for i in range(k):
            for j in range(i + 1, k):
                repeats |= experts[:, :, i] == experts[:, :, j]
    else:
        ordered = np.sort(experts, axis=2)
        repeats = (ordered[:, :, 1:] == ordered[:, :, :-1]).any(axis=2)
    if repeats.any():
        layer, token = np.unravel_index(int(np.argmax(repeats)), repeats.shape)
        ids, counts = np.unique(experts[layer, token], return_counts=True)
        raise TraceError(
            f"experts: token {token} of layer {layer} repeats expert {ids[counts > 1][0]} "
            "(top-k ids must be distinct)"
        )


def _check_tokens_array(array: Any, name: str, tokens: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1:
        raise TraceError(f"{name} has shape {array.shape} but must be (tokens,) = 1-D")
    if array.shape[0] != tokens:
        raise TraceError(f"{name}: {array.shape[0]} entries but experts has {tokens} tokens")
    if not np.issubdtype(array.dtype, np.integer):
        raise TraceError(f"{name} has dtype {array.dtype} but must be integer")
    return array


def _check_source_gpu(source_gpu: np.ndarray, gpus: int) -> None:
    if not source_gpu.size:
        return
    if source_gpu.max() >= gpus:
        token = int(np.argmax(source_gpu >= gpus))
        raise TraceError(
            f"source_gpu: GPU {source_gpu[token]} >= gpus={gpus} at token {token} "
            "(GPUs must be below meta.gpus)"
        )
    if source_gpu.min() < 0:
        token = int(np.argmax(source_gpu < 0))
        raise TraceError(f"source_gpu: GPU {source_gpu[token]} < 0 at token {token} (GPUs must be >= 0)")


def _check_batch(batch: np.ndarray) -> None:
    if not batch.size:
        return
    if batch.min() < 0 or batch.max() > np.iinfo(np.int32).max:
        token = int(np.argmax((batch < 0) | (batch > np.iinfo(np.int32).max)))
        raise TraceError(f"batch: index {batch[token]} at token {token} is outside [0, 2**31)")
    steps = np.diff(batch)
    if (steps < 0).any():
        token = int(np.argmax(steps < 0)) + 1
        raise TraceError(
            f"batch: decreases at token {token} ({batch[token]} after {batch[token - 1]}); "
            "batch indices must be non-decreasing (order tokens by batch)"
        )


def _check_gates(gates: Any, shape: tuple[int, ...]) -> np.ndarray:
    gates = np.asarray(gates)
    if gates.shape != shape:
        raise TraceError(
            f"gates has shape {gates.shape} but must equal experts' shape (layers, tokens, top_k) = {shape}"
        )
    if not np.issubdtype(gates.dtype, np.floating):
        raise TraceError(f"gates has dtype {gates.dtype} but must be floating point (float32)")
    gates = gates.astype(np.float32, copy=False)
    finite = np.isfinite(gates)
    if not finite.all():
        layer, token, _ = np.unravel_index(int(np.argmin(finite)), gates.shape)
        raise TraceError(f"gates: non-finite weight at layer {layer}, token {token} (gates must be finite)")
    return _frozen(gates)


# ----------------------------------------------------------------------------------------------
# reading and writing


def save_trace(trace: RoutingTrace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` to ``path`` as a compressed ``.npz``; returns the path.

    The file appears atomically: it is written to a temporary file in the same directory, which
    then replaces ``path``. The name is used as given (no ``.npz`` is appended).
    """
    path = Path(path)
    meta = {
        key: getattr(trace, key)
        for key in ("model", "top_k", "layers", "hidden", "bytes_per_element", "gpus")
    }
    meta |= {"format": FORMAT, "version": VERSION, "experts": trace.num_experts}
    meta |= {key: getattr(trace, key) for key in ("source", "notes") if getattr(trace, key)}
    arrays = {"experts": trace.experts, "source_gpu": trace.source_gpu, "meta": np.array(json.dumps(meta))}
    arrays |= {name: getattr(trace, name) for name in _OPTIONAL_ARRAYS if getattr(trace, name) is not None}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_trace(path: str | os.PathLike[str]) -> RoutingTrace:
    """Read and validate a routing trace written by :func:`save_trace` (or any conforming tool).

    Raises:
        TraceError: one line starting with the path: unreadable or not an ``.npz``, a missing
            or unknown array, bad ``meta`` (not JSON, missing key, wrong type, unknown format or
            version), or arrays inconsistent with ``meta`` or with each other.
    """
    name = str(path)
    arrays = _read_npz(Path(path), name)
    try:
        meta = _parse_meta(arrays.pop("meta"))
        return RoutingTrace(
            experts=arrays["experts"],
            source_gpu=arrays["source_gpu"],
            gates=arrays.get("gates"),
            batch=arrays.get("batch"),
            num_experts=meta["experts"],
            top_k=meta["top_k"],
            layers=meta["layers"],
            gpus=meta["gpus"],
            hidden=meta["hidden"],
            bytes_per_element=meta["bytes_per_element"],
            model=meta["model"],
            source=meta.get("source", ""),
            notes=meta.get("notes", ""),
        )
    except TraceError as err:
        raise TraceError(f"{name}: {err}") from None


def _read_npz(path: Path, name: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise TraceError(f"{name}: no such file (give the path of a routing trace .npz)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise TraceError(
            f"{name}: not an .npz routing trace (numpy cannot read it: {_one_line(err)})"
        ) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise TraceError(
            f"{name}: is a single .npy array, not an .npz routing trace (write it with save_trace)"
        )
    with data:
        unknown = sorted(set(data.files) - set(_REQUIRED_ARRAYS) - set(_OPTIONAL_ARRAYS))
        if unknown:
            raise TraceError(
                f'{name}: unknown array "{unknown[0]}" (a routing trace holds experts, source_gpu, meta '
                "and optionally gates, batch)"
            )
        for required in _REQUIRED_ARRAYS:
            if required not in data.files:
                raise TraceError(
                    f'{name}: missing array "{required}" (a routing trace needs experts, source_gpu and meta)'
                )
        try:
            return {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise TraceError(f"{name}: corrupt .npz ({_one_line(err)}); write the trace again") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _parse_meta(meta: np.ndarray) -> dict[str, Any]:
    if meta.shape != () or meta.dtype.kind not in "US":
        raise TraceError(
            f"meta has shape {meta.shape} and dtype {meta.dtype} but must be a 0-d string of JSON"
        )
    try:
        parsed = json.loads(str(meta[()]))
    except json.JSONDecodeError as err:
        raise TraceError(f"meta: not valid JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise TraceError(f"meta: must be a JSON object, got {type(parsed).__name__}")
    if "format" not in parsed:
        raise TraceError(f'meta: missing key "format" (expected "{FORMAT}")')
    if parsed["format"] != FORMAT:
        raise TraceError(f'meta: format is {parsed["format"]!r}, not "{FORMAT}" (not a moesim routing trace)')
    if "version" not in parsed:
        raise TraceError(f'meta: missing key "version" (expected {VERSION})')
    if parsed["version"] != VERSION:
        raise TraceError(
            f"meta: version {parsed['version']!r} is not supported (this moesim reads version {VERSION}; "
            "upgrade moesim or rewrite the trace)"
        )
    for key in META_KEYS:
        if key not in parsed:
            raise TraceError(f'meta: missing key "{key}" (add it to the meta JSON)')
    for key in _META_INTS:
        value = parsed[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TraceError(f'meta: "{key}" must be a whole number, got {value!r}')
    for key in ("model", "source", "notes"):
        if key in parsed and not isinstance(parsed[key], str):
            raise TraceError(f'meta: "{key}" must be a string, got {parsed[key]!r}')
    return parsed


# ----------------------------------------------------------------------------------------------
# selecting tokens


def slice_tokens(trace: RoutingTrace, selection: np.ndarray | list[int] | list[bool]) -> RoutingTrace:
    """The trace restricted to some tokens, in the order given.

    Args:
        selection: a boolean mask of length ``tokens`` or integer token indices. With a ``batch``
            array the selected tokens must keep it non-decreasing (sorted indices do).
    """
    selection = np.asarray(selection)
    if selection.dtype == bool:
        if selection.shape != (trace.tokens,):
            raise TraceError(
                f"slice_tokens: mask has shape {selection.shape} but the trace has {trace.tokens} tokens"
            )
        index = np.flatnonzero(selection)
    elif np.issubdtype(selection.dtype, np.integer) and selection.ndim == 1:
        if selection.size and (selection.min() < 0 or selection.max() >= trace.tokens):
            raise TraceError(f"slice_tokens: token index out of range [0, {trace.tokens})")
        index = selection
    else:
        raise TraceError("slice_tokens: give a boolean mask or a 1-D array of integer token indices")
    return replace(
        trace,
        experts=trace.experts[:, index],
        gates=None if trace.gates is None else trace.gates[:, index],
        source_gpu=trace.source_gpu[index],
        batch=None if trace.batch is None else trace.batch[index],
    )


def split_by_batch(trace: RoutingTrace, fraction: float) -> tuple[RoutingTrace, RoutingTrace]:
    """Split into ``(fit, held_out)``: the first batches for fitting, the rest held out.

    ``fit`` gets the first ``round(fraction * B)`` of the trace's ``B`` distinct batch indices
    (at least one and at most ``B - 1``), ``held_out`` the others. Without a ``batch`` array, or
    with a single batch, the split is by token order instead: the first ``round(fraction *
    tokens)`` tokens (at least one, at most ``tokens - 1``) against the rest.

    Args:
        fraction: share of batches (or tokens) to fit on, 0 < fraction < 1.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split_by_batch: fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    batches = np.unique(trace.batch) if trace.batch is not None else np.empty(0, np.int32)
    if batches.size >= 2:
        cut = batches[min(max(int(np.floor(fraction * batches.size + 0.5)), 1), batches.size - 1)]
        mask = trace.batch < cut
    else:
        if trace.tokens < 2:
            raise ValueError(f"split_by_batch: a trace of {trace.tokens} token(s) cannot be split")
        first = min(max(int(np.floor(fraction * trace.tokens + 0.5)), 1), trace.tokens - 1)
        mask = np.arange(trace.tokens) < first
    return slice_tokens(trace, mask), slice_tokens(trace, ~mask)


# ----------------------------------------------------------------------------------------------
# statistics


def expert_load(trace: RoutingTrace) -> np.ndarray:
    """(layers, experts) int64: tokens each expert receives; a token counts once per chosen expert."""
    return np.stack(
        [
            np.bincount(trace.experts[layer].ravel(), minlength=trace.num_experts)
            for layer in range(trace.layers)
        ]
    )


def imbalance(trace: RoutingTrace) -> np.ndarray:
    """(layers,) float64: (max − mean) / mean of the per-expert load in each layer.

    0 means every expert gets the same number of tokens; ``experts / top_k − 1`` (every token
    picks the busiest expert) is the largest possible value. NaN for a trace without tokens.
    """
    return _imbalance_of(expert_load(trace).astype(np.float64))


def _imbalance_of(load: np.ndarray) -> np.ndarray:
    mean = load.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, (load.max(axis=-1) - mean) / mean, np.nan)


def batch_imbalance(trace: RoutingTrace) -> np.ndarray:
    """(batches, layers) float64: :func:`imbalance` of each batch's tokens alone.

    Rows follow the sorted distinct batch indices; a trace without ``batch`` is one batch. With
    few tokens per batch this includes more sampling noise than the whole-trace value.
    """
    if trace.batch is None or trace.tokens == 0:
        return imbalance(trace)[None, :]
    _, which = np.unique(trace.batch, return_inverse=True)
    count = int(which.max()) + 1
    loads = np.empty((count, trace.layers, trace.num_experts))
    for layer in range(trace.layers):
        codes = which[:, None].astype(np.int64) * trace.num_experts + trace.experts[layer]
        loads[:, layer] = np.bincount(codes.ravel(), minlength=count * trace.num_experts).reshape(count, -1)
    return _imbalance_of(loads)


def transitions(trace: RoutingTrace, layer: int) -> np.ndarray:
    """(experts, experts) int64: how often expert ``e`` at ``layer`` is followed by ``e'`` at ``layer + 1``.

    Pairs are slot-matched: slot ``i`` of a token at ``layer`` with slot ``i`` of the same token at
    ``layer + 1``, over all tokens and slots.
    """
    if not 0 <= layer < trace.layers - 1:
        raise ValueError(f"transitions: layer {layer} is out of range [0, {trace.layers - 1})")
    e = trace.num_experts
    codes = trace.experts[layer].ravel().astype(np.int64) * e + trace.experts[layer + 1].ravel()
    return np.bincount(codes, minlength=e * e).reshape(e, e)


def home_transitions(trace: RoutingTrace, layer: int) -> np.ndarray:
    """(experts, experts) int64: how often a token whose first (highest-gate) expert at ``layer`` is
    ``e`` chooses ``e'`` at ``layer + 1`` (any slot).

    These are the moves of ExFlow-style execution (``token_home: top_expert``): the token lives on
    its first expert's GPU between layers and is dispatched from there to all its next experts.
    """
    if not 0 <= layer < trace.layers - 1:
        raise ValueError(f"home_transitions: layer {layer} is out of range [0, {trace.layers - 1})")
    e = trace.num_experts
    home = trace.experts[layer][:, :1].astype(np.int64)
    codes = home * e + trace.experts[layer + 1]
    return np.bincount(codes.ravel(), minlength=e * e).reshape(e, e)


def gpu_expert_tokens(trace: RoutingTrace, layer: int) -> np.ndarray:
    """(gpus, experts) int64: tokens each source GPU sends to each expert in ``layer``."""
    if not 0 <= layer < trace.layers:
        raise ValueError(f"gpu_expert_tokens: layer {layer} is out of range [0, {trace.layers})")
    e = trace.num_experts
    codes = trace.source_gpu[:, None].astype(np.int64) * e + trace.experts[layer]
    return np.bincount(codes.ravel(), minlength=trace.gpus * e).reshape(trace.gpus, e)


def uncertainty_coefficient(x: np.ndarray, y: np.ndarray, experts: int) -> float:
    """U(Y|X) = 1 − H(Y|X) / H(Y) of paired ids ``x``, ``y`` in [0, experts), natural log.

    Plug-in estimate from the empirical joint distribution; 0 when H(Y) = 0 (or no pairs), and
    exactly 1 when every ``x`` is always followed by the same ``y``.
    """
    x = np.asarray(x).ravel()
    y = np.asarray(y).ravel()
    wide = np.int64 if experts * experts >= 2**31 else np.int32
    codes = x.astype(wide) * experts + y
    if experts * experts <= _DENSE_JOINT_LIMIT:
        joint = np.bincount(codes, minlength=experts * experts).reshape(experts, experts)
        return uncertainty_from_joint(joint)
    cells, counts = np.unique(codes, return_counts=True)
    return _uncertainty(cells // experts, counts, np.bincount(x, minlength=experts), np.bincount(y))


def uncertainty_from_joint(joint: np.ndarray) -> float:
    """U(Y|X) from a joint count matrix ``joint[x, y]`` (see :func:`uncertainty_coefficient`)."""
    rows, cols = np.nonzero(joint)
    return _uncertainty(rows, joint[rows, cols], joint.sum(axis=1), joint.sum(axis=0))


def _uncertainty(rows: np.ndarray, counts: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> float:
    """U from the non-zero joint cells (their x and count) and the marginal counts."""
    n = int(nx.sum())
    if n == 0:
        return 0.0
    py = ny[ny > 0] / n
    h_y = float(-(py * np.log(py)).sum())
    if h_y <= 0.0:
        return 0.0
    counts = counts.astype(np.float64)
    h_y_given_x = float(-(counts * np.log(counts / nx[rows])).sum() / n)
    return min(1.0, max(0.0, 1.0 - h_y_given_x / h_y))


def affinity(trace: RoutingTrace) -> np.ndarray:
    """(layers − 1,) float64: how well a token's expert at layer l predicts its expert at l + 1.

    The uncertainty coefficient U = 1 − H(E_{l+1} | E_l) / H(E_{l+1}) over slot-matched pairs
    (slot i at l with slot i at l + 1, all tokens and slots pooled), natural log; 0 when
    H(E_{l+1}) = 0. 0 means independent layers, 1 that the next expert is a function of this one.

    Finite-sample bias: the plug-in estimate is biased upwards. For independent layers it is about
    ``(Kx − 1)(Ky − 1) / (2 n H(E_{l+1}))`` (Miller–Madow), with ``Kx``, ``Ky`` the experts seen
    and ``n = tokens · top_k`` pairs — e.g. 0.015 for 64 experts, 4,096 tokens and top-8, 0.0001
    at 0.5M tokens. :func:`affinity_noise` gives this floor; values near it mean "independent".
    """
    return np.array(
        [
            uncertainty_coefficient(trace.experts[layer], trace.experts[layer + 1], trace.num_experts)
            for layer in range(trace.layers - 1)
        ]
    )


def affinity_noise(trace: RoutingTrace) -> np.ndarray:
    """(layers − 1,) float64: the expected :func:`affinity` of independent layers with these marginals.

    The first-order (Miller–Madow) bias ``(Kx − 1)(Ky − 1) / (2 n H(Y))`` of the plug-in estimate.
    """
    load = expert_load(trace)
    n = trace.tokens * trace.top_k
    out = np.zeros(max(trace.layers - 1, 0))
    for layer in range(trace.layers - 1):
        ny = load[layer + 1][load[layer + 1] > 0]
        h_y = float(-(ny / n * np.log(ny / n)).sum()) if n else 0.0
        if h_y > 0:
            kx, ky = np.count_nonzero(load[layer]), ny.size
            out[layer] = (kx - 1) * (ky - 1) / (2.0 * n * h_y)
    return out


def summary(trace: RoutingTrace) -> dict[str, Any]:
    """The trace's size and statistics as plain Python values (JSON-able), for printing.

    Keys: model, layers, experts, top_k, tokens, gpus, tokens_per_gpu_min/max, batches (distinct
    batch indices, 0 without a batch array), hidden, bytes_per_element, gates (bool),
    dispatch_bytes_per_layer (tokens × top_k × hidden × bytes_per_element: a layer's dispatch
    bytes if no choice were local), and per layer: imbalance, busiest_expert, busiest_load,
    batch_imbalance (mean over batches of the per-batch imbalance); per layer pair: affinity and
    affinity_noise.
    """
    load = expert_load(trace)
    per_gpu = trace.tokens_per_gpu
    return {
        "model": trace.model,
        "layers": trace.layers,
        "experts": trace.num_experts,
        "top_k": trace.top_k,
        "tokens": trace.tokens,
        "gpus": trace.gpus,
        "tokens_per_gpu_min": int(per_gpu.min()),
        "tokens_per_gpu_max": int(per_gpu.max()),
        "batches": 0 if trace.batch is None else int(np.unique(trace.batch).size),
        "hidden": trace.hidden,
        "bytes_per_element": trace.bytes_per_element,
        "gates": trace.gates is not None,
        "dispatch_bytes_per_layer": trace.tokens * trace.top_k * trace.token_bytes,
        "imbalance": [float(v) for v in _imbalance_of(load.astype(np.float64))],
        "busiest_expert": [int(v) for v in load.argmax(axis=1)],
        "busiest_load": [int(v) for v in load.max(axis=1)],
        "batch_imbalance": [float(v) for v in np.nanmean(batch_imbalance(trace), axis=0)]
        if trace.tokens
        else [float("nan")] * trace.layers,
        "affinity": [float(v) for v in affinity(trace)],
        "affinity_noise": [float(v) for v in affinity_noise(trace)],
    }


def format_summary(stats: dict[str, Any] | RoutingTrace) -> str:
    """A small human-readable table of :func:`summary` (give the dict or the trace)."""
    s = summary(stats) if isinstance(stats, RoutingTrace) else stats
    per_gpu = _span(s["tokens_per_gpu_min"], s["tokens_per_gpu_max"])
    dispatch = _bytes(s["dispatch_bytes_per_layer"])
    lines = [
        f"model {s['model']}: {s['layers']} layers, {s['experts']} experts, top-{s['top_k']}, "
        f"{s['tokens']} tokens on {s['gpus']} GPUs ({per_gpu} per GPU), "
        f"{_batches(s['batches'])}{', with gates' if s['gates'] else ''}",
        f"hidden {s['hidden']} x {s['bytes_per_element']} B; dispatch {dispatch} per layer "
        "if no choice is local",
        f"{'layer':>5}  {'imbalance':>9}  {'batch imb.':>10}  {'busiest expert (tokens)':>23}  "
        f"{'affinity to next (noise)':>24}",
    ]
    for layer in range(s["layers"]):
        busiest = f"{s['busiest_expert'][layer]} ({s['busiest_load'][layer]})"
        nxt = (
            f"{s['affinity'][layer]:.3f} ({s['affinity_noise'][layer]:.4f})"
            if layer < s["layers"] - 1
            else "-"
        )
        lines.append(
            f"{layer:>5}  {s['imbalance'][layer]:>9.3f}  {s['batch_imbalance'][layer]:>10.3f}  "
            f"{busiest:>23}  {nxt:>24}"
        )
    return "\n".join(lines)


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _batches(n: int) -> str:
    return "no batch index" if n == 0 else f"{n} batch" if n == 1 else f"{n} batches"
