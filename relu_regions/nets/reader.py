"""Reading a piecewise-linear model as the counters see it: affine maps and ReLUs.

A model is read into a list of *ops*: :class:`Affine` (``x -> x W^T + b``) and :class:`ReLU`
(``max(x, 0)``, or ``max(x, a x)`` with a negative slope ``a``). Consecutive affine maps are
composed, so the counters get alternating (W, b) pairs and one negative slope per hidden layer.

Layers of this package say what they are by the :class:`PiecewiseLinear` protocol, a
``region_ops()`` method returning their ops; torch's own ``nn.Linear``, ``nn.ReLU``,
``nn.LeakyReLU`` and ``nn.Identity`` are read here. Any other module implementing
``region_ops()`` is read the same way, without registering anything.

>>> from torch import nn
>>> layers, leaks = layer_stack(nn.Sequential(nn.Linear(1, 3), nn.LeakyReLU(0.1), nn.Linear(3, 1)))
>>> [w.shape for w, _ in layers], [leak.tolist() for leak in leaks]
([(3, 1), (1, 3)], [[0.1, 0.1, 0.1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InputError
from .lowering import lower_module  # conv nets, skip connections, traced forwards
from .operators import AffineOperator, check_dense

Layers = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Affine:
    """``x -> x W^T + b``: ``weight`` (out, in) and ``bias`` (out,), tensors or arrays; a bias
    of None is zero."""

    weight: Any
    bias: Any = None


@dataclass(frozen=True)
class ReLU:
    """``max(x, 0)`` per unit; with ``negative_slope`` a, ``max(x, a x)`` (a leaky ReLU). A
    slope per unit (an array) is allowed: 1 makes a unit pass its input on unchanged."""

    negative_slope: float | np.ndarray = 0.0


@runtime_checkable
class PiecewiseLinear(Protocol):
    """A module the counters read through its ops: ``region_ops()`` returns the
    :class:`Affine` and :class:`ReLU` ops that compute the module's function, in order."""

    def region_ops(self) -> list[Affine | ReLU]: ...


def relu_layers(model: nn.Module | Sequence, *, finite: bool = True) -> Layers:
    """The (W, b) pairs, float64, of a Linear (ReLU Linear)* stack.

    Accepts what :func:`layer_stack` accepts, without leaky ReLUs.
    """
    layers, leaks = layer_stack(model, finite=finite)
    if any(leak.any() for leak in leaks):
        raise InputError("nn.LeakyReLU is not supported by the 1D counter: only nn.ReLU")
    return check_one_output(layers)


def check_one_output(layers: Layers) -> Layers:
    """``layers`` if the model has one output, else InputError."""
    if layers[-1][0].shape[0] != 1:
        raise InputError(f"the model must have one output, has {layers[-1][0].shape[0]}")
    return layers


@dataclass(frozen=True)
class Lowered:
    """A model as the counters read it: ``layers`` the (W, b) pairs (float64, W (out, in); k
    outputs in the last; a W may be an :class:`~relu_regions.nets.operators.AffineOperator`, a
    large conv stage kept as its ops), ``leaks`` one slope array per hidden layer, ``notes``
    what the reading changed (a float32 model counted in float64, a final Softmax dropped),
    ``input_shape`` the per-sample shape whose C-order flattening the first layer takes.

    ``max_nodes`` (None when the model takes no max): the tournament nodes of its max windows
    (max-pooling, ``torch.maximum``; see :meth:`~relu_regions.nets.lowering.Builder.maximum`),
    an int64 array of rows (hidden layer, unit, window, parent row or -1 at a window's root,
    side: 0 when the node is its parent's ``a`` (the side that wins when the parent's unit is
    on), 1 when it is its ``b``, -1 at a root). An activation region is a cell of constant
    signs of the other units and constant winners of every window: :func:`region_keys`.
    """

    layers: Layers
    leaks: list[np.ndarray]
    notes: list[str]
    input_shape: tuple[int, ...] | None = None
    max_nodes: np.ndarray | None = None


MAX_NODE_COLUMNS = ("layer", "unit", "window", "parent", "side")


def region_keys(on: np.ndarray, max_nodes: np.ndarray, widths: Sequence[int],
                rows: int = 1 << 16) -> np.ndarray:
    """The activation-region keys of cells whose hidden units have the on-signs ``on`` (cells,
    units; bool, hidden layer by hidden layer of ``widths``): ``on`` with every tree unit of
    ``max_nodes`` that is off its window's winning root-to-leaf path set to False.

    A window's max is its winner's value whatever its losers compare to each other, so two cells
    that differ only in such units are one region of one affine map. The path is read from the
    root down (a node's parents lie in later layers): a node is on it when its parent is and the
    parent's unit picks its side (on: ``a``, off: ``b``). The masked bits of a window spell its
    path, so equal keys are equal winners. A copy; ``rows`` cells at a time bound the memory.
    """
    keys = np.array(on, dtype=bool, copy=True)
    start = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    col = start[max_nodes[:, 0]] + max_nodes[:, 1]
    parent, side = max_nodes[:, 3], max_nodes[:, 4]
    layers = np.unique(max_nodes[:, 0])[::-1]  # parents before their children
    groups = [np.flatnonzero(max_nodes[:, 0] == layer) for layer in layers]
    for a in range(0, keys.shape[0], rows):
        part = keys[a:a + rows]
        active = np.zeros((part.shape[0], max_nodes.shape[0]), dtype=bool)
        for group in groups:
            up = parent[group]
            root = up < 0
            picked = part[:, col[np.where(root, group, up)]] == (side[group] == 0)
            active[:, group] = root | (active[:, np.where(root, group, up)] & picked)
            part[:, col[group]] &= active[:, group]
    return keys


def check_max_nodes(nodes, widths: Sequence[int]) -> np.ndarray:
    """``nodes`` as an int64 (N, 5) array of tree nodes (see :class:`Lowered`) that fits hidden
    layers of ``widths``; InputError naming what is wrong otherwise (a malformed checkpoint)."""
    nodes = np.asarray(nodes)
    if nodes.ndim != 2 or nodes.shape[1] != 5 or nodes.dtype.kind not in "iu":
        raise InputError(f"the model's max nodes must be an integer (N, 5) array, got shape "
                         f"{nodes.shape}")
    nodes = nodes.astype(np.int64)
    layer, unit, _, parent, side = nodes.T
    bad = None
    if ((layer < 0) | (layer >= len(widths))).any():
        bad = "a layer out of range"
    elif (unit < 0).any() or (unit >= np.asarray(widths)[layer]).any():
        bad = "a unit out of range"
    elif ((parent < -1) | (parent >= len(nodes))).any():
        bad = "a parent out of range"
    elif ((parent < 0) != (side < 0)).any() or (side > 1).any():
        bad = "a side that does not match its parent"
    elif (layer[parent[parent >= 0]] <= layer[parent >= 0]).any():
        bad = "a parent that is not in a later layer"
    if bad:
        columns = ", ".join(MAX_NODE_COLUMNS)
        raise InputError(f"the model's max nodes are malformed: {bad} ({columns} per row)")
    return nodes


def lower(model: nn.Module | Sequence, input_shape: Sequence[int] | None = None, *,
          finite: bool = True, operators: bool | None = None) -> Lowered:
    """``model`` as a :class:`Lowered` chain: what :func:`layer_stack` returns, plus the notes
    and the input shape. ``input_shape`` is one sample's shape (e.g. ``(1, 8, 8)`` for a conv
    net); by default ``model.input_shape`` or the first linear layer's ``in_features``.

    ``operators`` (shaped models: conv, BatchNorm, pooling, padding, reshapes): a stage of
    these ending at a ReLU-like layer, with no skip connection across it, is kept as an
    :class:`~relu_regions.nets.operators.AffineOperator` when its dense matrix would have more
    than 2^22 entries (None), always (True), or never (False: every layer dense). The last
    layer is always dense."""
    return _read(model, input_shape, finite, notes=True, operators=operators)


def layer_stack(model: nn.Module | Sequence, *, finite: bool = True,
                input_shape: Sequence[int] | None = None) -> tuple[Layers, list[np.ndarray]]:
    """(layers, leaks): the (W, b) pairs, float64, of the model's chain of affine maps with any
    number of outputs, and each hidden layer's negative-side slope per unit, a float64 array (0
    for nn.ReLU, alpha for nn.LeakyReLU(alpha); 1 for a unit that passes its input on).

    Accepts a module with ``region_ops()`` (:class:`PiecewiseLinear`, e.g.
    :class:`~relu_regions.nets.parametrize.ConstructionNet`), an ``nn.Sequential`` (nested ones
    are flattened) of the layers in docs/models.md (``nn.Linear``, convolutions, BatchNorm and
    Dropout in eval mode, pooling, padding, ReLU-like activations, this package's layers), any
    module with ``as_sequential()``, any other module through its traced ``forward``, or a list
    of (W, b) pairs with ReLU between them (e.g. one seed of a composite layout's
    ``raw(theta)``). Non-finite weights raise InputError (``finite=False``: the caller checks
    them).
    """
    lowered = _read(model, input_shape, finite, notes=False)
    return lowered.layers, lowered.leaks


def forward(layers: Layers, leaks: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The lowered chain's function at the rows of ``x`` (n, n_in), float64: for each hidden
    layer ``z = x W^T + b`` (by its ops for an operator layer), then ``z`` where ``z >= 0`` else
    ``leak * z``; the last layer affine."""
    x = np.asarray(x, dtype=np.float64)
    for (w, b), leak in zip(layers[:-1], leaks, strict=True):
        z = (w.apply(x) if isinstance(w, AffineOperator) else x @ w.T) + b
        x = np.where(z >= 0, z, leak * z)
    w, b = layers[-1]
    return x @ w.T + b


def _read(model, input_shape, finite, notes, operators=None) -> Lowered:
    if isinstance(model, (list, tuple)):
        layers = _raw_layers(model, finite)
        return Lowered(layers, [np.zeros(w.shape[0]) for w, _ in layers[:-1]], [])
    ops = None
    if input_shape is None or len(input_shape) == 1:
        ops = _known_ops(model)
    if ops is not None:
        layers, leaks = _stack(ops, finite)
        if input_shape is not None and tuple(input_shape) != (layers[0][0].shape[1],):
            raise InputError(f"input_shape={tuple(input_shape)!r} does not match the model's "
                             f"{layers[0][0].shape[1]} inputs")
        nodes = None
        if type(model) is LoweredNet and model.has_max_nodes:  # a saved max-pooling model
            nodes = check_max_nodes(model.max_nodes.numpy(), [w.shape[0] for w, _ in layers[:-1]])
        if not notes:
            return Lowered(layers, leaks, [], max_nodes=nodes)
        # dtype objects, not their names: this runs on every count
        dtypes = {op.weight.dtype for op in ops if type(op) is Affine
                  and isinstance(op.weight, torch.Tensor)} - {torch.float64}
        names = sorted(str(d).replace("torch.", "") for d in dtypes)
        note = ([f"the model's weights are {', '.join(names)}: counted as the float64 model "
                 f"with the same weights"] if names else [])
        shape = _declared_shape(model) or (layers[0][0].shape[1],)
        return Lowered(layers, leaks, note, tuple(shape), nodes)
    layers, leaks, found, shape, nodes = lower_module(model, input_shape, operators)
    return Lowered(_check_layers(layers, finite), leaks, found, shape,
                   np.array(nodes, dtype=np.int64).reshape(-1, 5) if nodes else None)


def model_ops(model: nn.Module) -> list[Affine | ReLU]:
    """The ops of a model of dense layers in order (see the module docstring), or InputError
    naming the layer that cannot be read; :func:`lower` reads every other model."""
    ops = _known_ops(model)
    if ops is None:
        raise InputError(f"{type(model).__name__} has layers other than dense ones: read it "
                         f"with lower(model)")
    return ops


def _known_ops(model: nn.Module) -> list[Affine | ReLU] | None:
    """The ops of a model made of dense layers only, None if it has any other (those are read
    by the lowering, with shapes)."""
    if hasattr(model, "region_ops"):
        ops = list(model.region_ops())
        return ops if all(isinstance(op, (Affine, ReLU)) for op in ops) else None
    if hasattr(model, "as_sequential"):
        model = model.as_sequential()
    if not isinstance(model, nn.Sequential):
        return None
    declared = _declared_shape(model)
    if declared is not None and len(declared) != 1:
        return None
    ops = []
    with parametrize.cached():  # derived weights are computed once, not once per tensor
        for m in _flatten(model):
            kind = type(m)  # exact types first: a protocol check per layer costs microseconds
            if kind is nn.Linear:
                ops.append(Affine(m.weight, m.bias))
            elif kind is nn.ReLU:
                ops.append(ReLU())
            elif kind is nn.Identity:
                continue
            elif hasattr(m, "region_ops"):
                sub = m.region_ops()
                if not all(isinstance(op, (Affine, ReLU)) for op in sub):
                    return None
                ops.extend(sub)
            elif kind is nn.LeakyReLU:
                ops.append(ReLU(float(m.negative_slope)))
            else:
                return None
    return ops


def _declared_shape(model: nn.Module) -> tuple | None:
    """``model.input_shape`` if the model says it: an attribute set in ``__init__``, or one of
    its class (a property too). Plain ``getattr`` would cost an ``nn.Module.__getattr__`` miss
    on every count."""
    if "input_shape" in model.__dict__:
        return model.__dict__["input_shape"]
    return getattr(model, "input_shape", None) if hasattr(type(model), "input_shape") else None


def _stack(ops, finite) -> tuple[Layers, list[np.ndarray]]:
    """Compose consecutive affine ops; check that the stack starts and ends affine."""
    affine = [op for op in ops if isinstance(op, Affine)]
    arrays = iter(_tensors_to_numpy([(op.weight, _bias(op)) for op in affine]))
    layers, leaks, last = [], [], None
    for op in ops:
        if isinstance(op, ReLU):
            if last is not Affine:
                raise InputError("every ReLU must follow a linear layer: the model must start "
                                 "with nn.Linear and alternate linear / ReLU layers")
            leaks.append(op.negative_slope)
            last = ReLU
            continue
        w, b = (_float64(a) for a in next(arrays))
        if last is Affine:  # x W1^T + b1, then W2: one map
            w1, b1 = layers.pop()
            w, b = w @ w1, w @ b1 + b
        layers.append((w, b))
        last = Affine
    if last is not Affine:
        raise InputError("the model must start and end with nn.Linear")
    layers = _check_layers(layers, finite)
    return layers, [_per_unit(leak, w.shape[0])
                    for leak, (w, _) in zip(leaks, layers, strict=False)]


def _per_unit(slope, width: int) -> np.ndarray:
    """A layer's negative-side slope as one value per unit (float64)."""
    if isinstance(slope, (int, float)):  # the common case, 10x cheaper than a broadcast
        return np.zeros(width) if slope == 0 else np.full(width, float(slope))
    return np.broadcast_to(np.asarray(slope, dtype=np.float64), (width,)).copy()


def _raw_layers(pairs, finite=True) -> Layers:
    pairs = _tensors_to_numpy(pairs)
    layers = []
    for i, pair in enumerate(pairs):
        try:
            w, b = map(_float64, pair)
        except (TypeError, ValueError):
            raise InputError(f"layer {i} must be a (W, b) pair of arrays") from None
        if w.ndim == 3 and w.shape[0] == 1:
            w = np.squeeze(w, 0)
        if b.ndim != 1:
            b = b.reshape(-1)
        if w.ndim != 2 or b.size != w.shape[0]:
            raise InputError(f"layer {i}: W must be (out, in) and b (out,), got {w.shape}, "
                             f"{b.shape}")
        layers.append((w, b))
    if not layers:
        raise InputError("the model has no layers")
    return _check_layers(layers, finite)


def _float64(t) -> np.ndarray:
    if type(t) is np.ndarray and t.dtype == np.float64:  # as it is: the common case
        return t
    if isinstance(t, torch.Tensor):
        if t.is_meta:
            raise InputError("the model is on the meta device (its weights are not loaded): "
                             "load its weights before counting")
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _tensors_to_numpy(pairs):
    """(W, b) pairs of CPU tensors of one dtype as float64 numpy arrays, in one copy out of torch
    (per tensor, the calls cost more than counting a small net); anything else as given."""
    if (not pairs or type(pairs[0]) not in (list, tuple) or len(pairs[0]) != 2
            or type(pairs[0][0]) is np.ndarray):
        return pairs
    flat = [t for pair in pairs if isinstance(pair, (list, tuple)) and len(pair) == 2
            for t in pair]
    if (len(flat) != 2 * len(pairs)
            or not all(isinstance(t, torch.Tensor) and t.device.type == "cpu"
                       and t.dtype == flat[0].dtype for t in flat)):
        return pairs
    with torch.no_grad():
        joined = torch.cat([t.reshape(-1) for t in flat]).double().numpy()
    sizes = np.cumsum([t.numel() for t in flat])[:-1]
    arrays = [a.reshape(t.shape) for a, t in zip(np.split(joined, sizes), flat, strict=True)]
    return list(zip(arrays[::2], arrays[1::2], strict=True))


def _bias(op: Affine):
    """The op's bias, zeros of the weight's kind where it has none."""
    if op.bias is not None:
        return op.bias
    if isinstance(op.weight, torch.Tensor):
        return op.weight.new_zeros(op.weight.shape[0])
    return np.zeros(np.shape(op.weight)[0])


def _check_layers(layers, finite=True) -> Layers:
    for (w1, _), (w2, _) in zip(layers, layers[1:], strict=False):
        if w2.shape[1] != w1.shape[0]:
            raise InputError(f"layer widths do not chain: {w1.shape[0]} outputs feed "
                             f"{w2.shape[1]} inputs")
    if finite:
        _check_finite(np.concatenate([a.reshape(-1) for w, b in layers for a in
                                      (w.parameters() if isinstance(w, AffineOperator)
                                       else [w]) + [b]]))
    return layers


def _check_finite(flat) -> None:
    """All weights at once: a call per array cost more than counting a small net."""
    if not np.isfinite(flat).all():
        raise InputError("the model has non-finite weights")


def _flatten(seq):
    for m in seq:
        if isinstance(m, nn.Sequential):
            yield from _flatten(m)
        else:
            yield m


# --------------------------------------------------------------------------------------------
# The lowered chain as a module
# --------------------------------------------------------------------------------------------
class LoweredNet(nn.Module):
    """A lowered chain as a countable module (float64): ``linears[i]`` the (W, b) pairs and a
    buffer ``leak{i}`` per hidden layer (the negative-side slope per unit). What a checkpoint of
    kind ``"lowered"`` loads as: counting it needs none of the original model's code.
    ``input_shape`` is one sample's shape; the forward takes rows of its flattening or samples
    of that shape. A model with max windows has ``max_nodes``, an int64 buffer of ``n_max``
    rows (:class:`Lowered`), so its count merges what the original's does."""

    def __init__(self, widths: list[int], input_shape: tuple[int, ...] | None = None,
                 n_max: int = 0) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b, dtype=torch.float64)
                                     for a, b in zip(widths[:-1], widths[1:], strict=True))
        for i, width in enumerate(widths[1:-1]):
            self.register_buffer(f"leak{i}", torch.zeros(width, dtype=torch.float64))
        self.input_shape = tuple(input_shape) if input_shape else (widths[0],)
        self.has_max_nodes = n_max > 0
        if n_max:
            self.register_buffer("max_nodes", torch.zeros(n_max, 5, dtype=torch.int64))

    @classmethod
    def from_layers(cls, layers, leaks, input_shape=None, max_nodes=None) -> LoweredNet:
        check_dense(layers, "a lowered checkpoint (LoweredNet)")
        widths = [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]
        n_max = 0 if max_nodes is None else len(max_nodes)
        net = cls(widths, input_shape, n_max)
        with torch.no_grad():
            for lin, (w, b) in zip(net.linears, layers, strict=True):
                lin.weight.copy_(torch.as_tensor(w))
                lin.bias.copy_(torch.as_tensor(b))
            for i, leak in enumerate(leaks):
                getattr(net, f"leak{i}").copy_(torch.as_tensor(leak))
            if n_max:
                net.max_nodes.copy_(torch.as_tensor(max_nodes))
        return net

    @property
    def widths(self) -> list[int]:
        return [self.linears[0].in_features] + [lin.out_features for lin in self.linears]

    def leaks(self) -> list[torch.Tensor]:
        return [getattr(self, f"leak{i}") for i in range(len(self.linears) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.input_shape) > 1 and tuple(x.shape[-len(self.input_shape):]) == \
                self.input_shape:
            x = x.reshape(*x.shape[:-len(self.input_shape)], -1)
        for lin, leak in zip(self.linears[:-1], self.leaks(), strict=True):
            z = lin(x)
            x = torch.where(z >= 0, z, leak * z)
        return self.linears[-1](x)

    def region_ops(self) -> list:
        ops = []
        for lin, leak in zip(self.linears, [*self.leaks(), None], strict=True):
            ops.append(Affine(lin.weight.detach(), lin.bias.detach()))
            if leak is not None:
                ops.append(ReLU(leak.detach().numpy()))
        return ops
