"""Lowering a model of shaped layers (conv, BatchNorm, pooling, skip connections) to the
counters' chain of affine maps and per-unit ReLUs, in float64.

A value the model computes is carried as an affine function of the current *stage input* (the
output of the last ReLU layer, or the model's flattened input): ``lin`` of shape
``(n, *shape)`` (the image of each stage input unit) and ``const`` of shape ``shape``. An affine
layer maps both (its bias-free part maps ``lin``; the layer itself maps ``const``), so a
conv / BatchNorm / pooling chain is composed as it is read, never as a product of dense matrices.
A piecewise-linear op ends the stage: its pre-activation becomes one (W, b) pair and the op one
slope per unit (0 ReLU, a LeakyReLU / PReLU slope). Values still needed after it (a skip
connection's ``x`` in ``x + f(x)``) ride through that layer on units of slope 1, which never
switch, so the counted function is exactly the model's. ``Hardtanh(lo, hi)`` (and ``ReLU6``) is
``lo + relu(z - lo) - relu(z - hi)``: two units per value. A max (a max-pooling window,
``torch.maximum``) is a tournament of ``max(a, b) = b + relu(a - b)``, one ReLU layer per round;
its difference units are recorded as tree nodes (``Builder.max_nodes``), so that the counters can
merge the cells that only a comparison of two losers of a window tells apart.

A ``nn.Sequential`` is read module by module; any other module's ``forward`` is traced with
``torch.fx`` and read node by node (:func:`trace`), so ``x.view``, ``x.relu()``, ``F.relu``,
``+``, ``@`` by a constant, ``cat``, ``mean`` and ``flatten`` work without registering anything.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ..errors import InputError
from .operators import DENSE_ENTRIES, AffineOperator

NOT_PL = (nn.Tanh, nn.GELU, nn.Sigmoid, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
          nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign, nn.LogSigmoid)
SOFTMAX = (nn.Softmax, nn.LogSoftmax)
MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
           nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# Linear maps with f(0) = 0 that take a batch: applied to ``lin`` as they are.
LINEAR = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
          nn.AdaptiveAvgPool3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d,
          nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
          nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
          nn.Flatten, nn.Unflatten, nn.Identity)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
           nn.FeatureAlphaDropout)
KNOWN = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm,
         nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReLU, nn.LeakyReLU, nn.PReLU,
         nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
         *SOFTMAX, *LINEAR, *DROPOUT)
NOT_PL_FUNCTIONS = {torch.tanh, torch.sigmoid, functional.gelu, functional.silu, functional.elu,
                    functional.softplus, torch.exp, torch.log, functional.tanh,
                    functional.sigmoid, torch.sin, torch.cos, torch.sqrt}
NOT_PL_METHODS = {"tanh", "sigmoid", "exp", "log", "sin", "cos", "sqrt", "abs",
                  "pow", "__pow__"}


@dataclass
class Value:
    """An affine function of the stage input: ``lin`` (n, *shape), ``const`` (*shape)."""

    lin: torch.Tensor
    const: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.const.shape)

    def map(self, fn_lin, fn_const=None) -> Value:
        """Apply a linear map to ``lin`` (batched) and an affine one to ``const``."""
        fn_const = fn_const or fn_lin
        return Value(fn_lin(self.lin), fn_const(self.const[None])[0])


# Dense entries (stage inputs x values) above which a value kept as operator steps is not made
# dense for an op that needs it (a skip connection, max-pooling): 2^26 float64 are 512 MB.
DENSE_CAP = 1 << 26


class OpValue(Value):
    """A value of the stage kept as the steps that compute it from the stage input (shape
    ``in_shape``): ``steps`` plain data for :class:`~relu_regions.nets.operators.AffineOperator`,
    ``fns`` the same linear maps as closures on a batch. Reading ``lin`` makes it dense by
    applying ``fns`` to the identity, the very ops the dense path applies, in the same order
    (so a layer made dense is the dense path's bit for bit); refused above DENSE_CAP entries."""

    def __init__(self, steps: list, fns: list, in_shape: tuple[int, ...],
                 const: torch.Tensor):
        self.steps, self.fns, self.in_shape, self.const = steps, fns, in_shape, const
        self._lin = None

    def __repr__(self) -> str:
        return f"OpValue({self.in_shape} -> {self.shape}, {len(self.steps)} steps)"

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def lin(self) -> torch.Tensor:
        if self._lin is None:
            n = self.n_in
            widest = max(n, math.prod(self.shape))
            if n * widest > DENSE_CAP:
                raise InputError(
                    f"a value of shape {self.shape} computed from a stage of {n} units would "
                    f"need a dense {n} x {widest} matrix: only conv, BatchNorm, average "
                    f"pooling, padding, reshapes and Linear layers (and ReLU-like activations "
                    f"after them) are kept as operators, not skip connections, max-pooling, "
                    f"Hardtanh or other ops on so wide a stage; use a smaller model, or "
                    f"operators=False if the dense matrices fit in memory")
            with torch.no_grad():
                lin = torch.eye(n, dtype=torch.float64).reshape(n, *self.in_shape)
                for fn in self.fns:
                    lin = fn(lin)
            self._lin = lin
        return self._lin

    def then(self, step: dict, fn_lin, fn_const=None) -> OpValue:
        """This value followed by a linear step (plain data, and its closure for ``lin``)."""
        fn_const = fn_const or fn_lin
        return OpValue([*self.steps, step], [*self.fns, fn_lin], self.in_shape,
                       fn_const(self.const[None])[0])


def _identity(shape: tuple[int, ...]) -> OpValue:
    return OpValue([], [], tuple(shape), torch.zeros(shape, dtype=torch.float64))


class Builder:
    """Collects the (W, b) layers and per-unit slopes as ops are read.

    ``operators``: False, every layer a dense matrix (each op applied to an identity basis);
    True, every stage that ends at a ReLU without carried values is an
    :class:`~relu_regions.nets.operators.AffineOperator`; None, those whose dense matrix would
    have more than DENSE_ENTRIES entries. Stage values are then :class:`OpValue`, made dense
    where an op needs it (and for the last layer)."""

    def __init__(self, input_shape: tuple[int, ...], operators: bool | None = False):
        n = math.prod(input_shape)
        self.layers: list[tuple[np.ndarray | AffineOperator, np.ndarray]] = []
        self.leaks: list[np.ndarray] = []
        self.notes: list[str] = []
        self.operators = operators
        if operators is False:
            self.input = Value(torch.eye(n, dtype=torch.float64).reshape(n, *input_shape),
                               torch.zeros(input_shape, dtype=torch.float64))
        else:
            self.input = _identity(tuple(input_shape))
        self.carry: list[Value] = []  # live values that must ride through the next ReLU layer
        # Tournament nodes of max windows: rows (layer, unit, window, parent row, side).
        self.max_nodes: list[list[int]] = []
        self.windows = 0

    def emit(self, pre: Value, slopes) -> tuple[Value, list[Value]]:
        """End the stage at a ReLU of ``pre`` with negative-side ``slopes`` (a scalar or an array
        of pre's shape); returns relu(pre) and the carried values in the new stage's units."""
        values = [pre, *self.carry]
        sizes = [math.prod(v.shape) for v in values]
        slope = np.broadcast_to(np.asarray(slopes, dtype=np.float64), pre.shape).reshape(-1)
        if (isinstance(pre, OpValue) and not self.carry
                and (self.operators or pre.n_in * sizes[0] > DENSE_ENTRIES)):
            b = pre.const.reshape(-1).numpy().copy()
            self.layers.append((AffineOperator(pre.steps, pre.in_shape), b))
            self.leaks.append(slope.copy())
            return _identity(pre.shape), []
        n = pre.lin.shape[0]
        w = torch.cat([v.lin.reshape(n, -1) for v in values], 1).T
        b = torch.cat([v.const.reshape(-1) for v in values])
        self.layers.append((w.numpy().copy(), b.numpy().copy()))
        self.leaks.append(np.concatenate([slope, np.ones(sum(sizes[1:]))]))
        if self.operators is not False and not self.carry:
            return _identity(pre.shape), []
        eye = torch.eye(sum(sizes), dtype=torch.float64)
        out, start = [], 0
        for v, size in zip(values, sizes, strict=True):
            out.append(Value(eye[:, start:start + size].reshape(-1, *v.shape),
                             torch.zeros(v.shape, dtype=torch.float64)))
            start += size
        return out[0], out[1:]

    def relu(self, v: Value, slopes=0.0) -> Value:
        out, self.carry = self.emit(v, slopes)
        return out

    def hardtanh(self, v: Value, lo: float, hi: float) -> Value:
        """``lo + relu(z - lo) - relu(z - hi)``: two units per value."""
        if not lo < hi:
            raise InputError(f"Hardtanh needs min_val < max_val, got {lo}, {hi}")
        pre = Value(torch.stack([v.lin, v.lin], 1), torch.stack([v.const - lo, v.const - hi]))
        u = self.relu(pre)
        return Value(u.lin[:, 0] - u.lin[:, 1], torch.full(v.shape, float(lo),
                                                           dtype=torch.float64))

    def maximum(self, leaves: Value, windows: list[np.ndarray]) -> Value:
        """The max of each window of ``leaves`` (a flat Value; a window is an array of its
        indices, one or more), a flat Value of one entry per window.

        A tournament of ``max(a, b) = b + relu(a - b)``: each round is one ReLU layer whose
        units are the differences ``a - b`` (slope 0, recorded in ``max_nodes`` as tree nodes
        of their window, with their parent and the side, 0 for ``a`` and 1 for ``b``, they
        take in it), the ``b`` values and a window's odd member out (slope 1: carried). Ties go
        to ``b``.
        """
        # per window: (position in ``cur``, the node row it is the output of, or -1 for a leaf)
        members = [[(int(i), -1) for i in win] for win in windows]
        first_window = self.windows
        self.windows += len(windows)
        cur = leaves
        while any(len(m) > 1 for m in members):
            a_at, b_at, kids, owner, odd = [], [], [], [], []
            for w, m in enumerate(members):
                for j in range(0, len(m) - 1, 2):
                    a_at.append(m[j][0])
                    b_at.append(m[j + 1][0])
                    kids.append((m[j][1], m[j + 1][1]))
                    owner.append(w)
                if len(m) % 2:
                    odd.append(m[-1][0])
            pairs = len(a_at)
            a_idx, b_idx, odd_idx = (torch.as_tensor(i, dtype=torch.long)
                                     for i in (a_at, b_at, odd))
            pre = Value(torch.cat([cur.lin[:, a_idx] - cur.lin[:, b_idx], cur.lin[:, b_idx],
                                   cur.lin[:, odd_idx]], 1),
                        torch.cat([cur.const[a_idx] - cur.const[b_idx], cur.const[b_idx],
                                   cur.const[odd_idx]]))
            layer = len(self.layers)
            u = self.relu(pre, np.concatenate([np.zeros(pairs), np.ones(pairs + len(odd))]))
            row0 = len(self.max_nodes)
            for p, (w, (ka, kb)) in enumerate(zip(owner, kids, strict=True)):
                self.max_nodes.append([layer, p, first_window + w, -1, -1])
                for side, kid in enumerate((ka, kb)):
                    if kid >= 0:
                        self.max_nodes[kid][3:] = [row0 + p, side]
            cur = Value(torch.cat([u.lin[:, :pairs] + u.lin[:, pairs:2 * pairs],
                                   u.lin[:, 2 * pairs:]], 1),
                        torch.cat([u.const[:pairs] + u.const[pairs:2 * pairs],
                                   u.const[2 * pairs:]]))
            nxt, p, o = [], 0, 0
            for m in members:
                new = []
                for _ in range(len(m) // 2):
                    new.append((p, row0 + p))
                    p += 1
                if len(m) % 2:
                    new.append((pairs + o, m[-1][1]))
                    o += 1
                nxt.append(new)
            members = nxt
        at = torch.as_tensor([m[0][0] for m in members], dtype=torch.long)
        return Value(cur.lin[:, at], cur.const[at])

    def finish(self, v: Value) -> None:
        n = v.lin.shape[0]
        self.layers.append((v.lin.reshape(n, -1).T.numpy().copy(),
                            v.const.reshape(-1).numpy().copy()))


def prepare(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """``model`` in float64 (a copy when it is not), refusing the meta device; the notes."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise InputError("the model is on the meta device (its weights are not loaded): load "
                         "its weights, e.g. model.to_empty(device='cpu') and load_state_dict")
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    notes = []
    if dtypes - {torch.float64} or any(t.device.type != "cpu" for t in tensors):
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        if dtypes - {torch.float64}:
            notes.append(f"the model's weights are {names}: counted as the float64 model with "
                         f"the same weights")
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    return model, notes


def check_eval(m: nn.Module) -> None:
    if isinstance(m, DROPOUT) and m.training and m.p > 0:
        raise InputError(f"{type(m).__name__} is in training mode (random): call model.eval() "
                         f"before counting")
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.training:
            raise InputError(f"{type(m).__name__} is in training mode (batch statistics): call "
                             f"model.eval() before counting")
        if m.running_mean is None:
            raise InputError(f"{type(m).__name__} has track_running_stats=False, so it uses "
                             f"batch statistics even in eval mode: it is not a fixed map")


def apply_module(b: Builder, m: nn.Module, v: Value, last: bool = False) -> Value:
    """The value ``m(v)`` for a module the reader knows; InputError naming it otherwise."""
    kind = type(m)
    name = kind.__name__
    if isinstance(m, nn.Sequential):
        mods = list(m)
        for i, sub in enumerate(mods):
            v = apply_module(b, sub, v, last and i == len(mods) - 1)
        return v
    if hasattr(m, "region_ops"):
        return apply_ops(b, m.region_ops(), v)
    if isinstance(m, nn.Linear):
        if v.shape[-1:] != (m.in_features,):
            raise InputError(f"nn.Linear({m.in_features}, ...) gets values of shape {v.shape}: "
                             f"add nn.Flatten() before it, or pass the right input_shape")
        if isinstance(v, OpValue):
            return v.then({"op": "linear", "weight": _array(m.weight)},
                          lambda t: functional.linear(t, m.weight), m)
        return v.map(lambda t: functional.linear(t, m.weight), m)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[next(k for k in (nn.Conv1d, nn.Conv2d,
                                                                         nn.Conv3d)
                                                          if isinstance(m, k))]
        if len(v.shape) != dims + 1 or v.shape[0] != m.in_channels:
            want = "(C, L)" if dims == 1 else "(C, H, W)" if dims == 2 else "(C, D, H, W)"
            raise InputError(f"{name} with {m.in_channels} input channels gets values of shape "
                             f"{v.shape}: pass input_shape={want} with C = {m.in_channels}")
        if isinstance(v, OpValue):
            return v.then(_conv_step(m, v), lambda t: m._conv_forward(t, m.weight, None), m)
        return v.map(lambda t: m._conv_forward(t, m.weight, None), m)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        check_eval(m)
        if not v.shape or v.shape[0] != m.num_features:
            raise InputError(f"{name}({m.num_features}) gets values of shape {v.shape}")
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        step = {"op": "scale", "scale": _array(scale)}
        scale = scale.reshape(-1, *[1] * (len(v.shape) - 1))
        if isinstance(v, OpValue):
            return v.then(step, lambda t: t * scale, m)
        return v.map(lambda t: t * scale, m)
    if isinstance(m, DROPOUT):
        check_eval(m)
        return v
    if isinstance(m, nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d):
        if isinstance(v, OpValue):
            return v.then({"op": "pad", "pad": tuple(m.padding), "mode": "constant"},
                          lambda t: functional.pad(t, m.padding, value=0.0), m)
        return v.map(lambda t: functional.pad(t, m.padding, value=0.0), m)
    if isinstance(m, LINEAR) and isinstance(v, OpValue):
        step = _linear_step(m, v)
        if step is not None:
            return v.then(step, m)
    if isinstance(m, LINEAR):
        out = v.map(m)
        if out.lin.shape[0] != v.lin.shape[0]:
            raise InputError(f"{name} changes the batch dimension: only per-sample reshapes "
                             f"can be read")
        return out
    if isinstance(m, nn.ReLU):
        return b.relu(v)
    if isinstance(m, nn.LeakyReLU):
        return b.relu(v, float(m.negative_slope))
    if isinstance(m, nn.PReLU):
        a = m.weight.detach().double()
        if a.numel() > 1:
            if not v.shape or v.shape[0] != a.numel():
                raise InputError(f"PReLU({a.numel()}) gets values of shape {v.shape}")
            a = a.reshape(-1, *[1] * (len(v.shape) - 1))
        return b.relu(v, torch.broadcast_to(a, v.shape).numpy())
    if isinstance(m, nn.Hardtanh):  # ReLU6 is a Hardtanh
        return b.hardtanh(v, float(m.min_val), float(m.max_val))
    if isinstance(m, SOFTMAX):
        if last:
            b.notes.append(f"the final {name} is dropped: it changes no region and no argmax")
            return v
        raise InputError(f"{name} inside the model is not piecewise linear: only a final "
                         f"Softmax / LogSoftmax can be dropped")
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        return max_pool(b, v, name, 1 if isinstance(m, nn.MaxPool1d) else 2, m.kernel_size,
                        m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        return adaptive_max_pool(b, v, name, 1 if isinstance(m, nn.AdaptiveMaxPool1d) else 2,
                                 m.output_size, m.return_indices)
    if isinstance(m, MAXPOOL):
        raise InputError(f"{name} is not supported: only 1D and 2D max-pooling (MaxPool1d, "
                         f"MaxPool2d, AdaptiveMaxPool1d/2d) can be read")
    if isinstance(m, NOT_PL):
        raise InputError(f"{name} is not piecewise linear, so its regions are not defined: "
                         f"only ReLU-like activations (ReLU, LeakyReLU, PReLU, ReLU6, Hardtanh) "
                         f"can be counted")
    raise InputError(f"{name} cannot be read: give it a region_ops() method (see "
                     f"relu_regions.nets.reader), or use supported layers")


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy().copy()


def _conv_step(m: nn.Module, v: Value) -> dict:
    """The operator step of a conv module (its ``_conv_forward`` without the bias)."""
    dims = len(v.shape) - 1
    step = {"op": "conv", "weight": _array(m.weight), "stride": tuple(m.stride),
            "dilation": tuple(m.dilation), "groups": int(m.groups),
            "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding)}
    if m.padding_mode != "zeros":  # torch pads first, then convolves without padding
        step["pad"] = tuple(m._reversed_padding_repeated_twice)
        step["pad_mode"] = m.padding_mode
        step["padding"] = (0,) * dims
    return step


_PAD_MODES = {"Zero": "constant", "Reflection": "reflect", "Replication": "replicate",
              "Circular": "circular"}


def _linear_step(m: nn.Module, v: Value) -> dict | None:
    """The operator step of a module of LINEAR (pooling, padding, reshape), None for one kept
    dense."""
    name = type(m).__name__
    out = m(v.const[None])
    if out.shape[0] != 1:
        return None  # the dense path names the error
    if isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
        return {"op": "reshape", "shape": tuple(out.shape[1:])}
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        dims = len(out.shape) - 2
        return {"op": "avg_pool", "dims": dims, "kernel": m.kernel_size,
                "stride": m.stride, "padding": m.padding, "ceil_mode": bool(m.ceil_mode),
                "count_include_pad": bool(m.count_include_pad),
                "divisor_override": getattr(m, "divisor_override", None)}
    if name.startswith("AdaptiveAvgPool"):
        return {"op": "adaptive_avg_pool", "output_size": tuple(out.shape[2:])}
    for prefix, mode in _PAD_MODES.items():
        if name.startswith(prefix + "Pad"):
            return {"op": "pad", "pad": tuple(m.padding), "mode": mode}
    return None


def _tuple(v, dims: int, what: str, name: str) -> tuple[int, ...]:
    out = tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * dims
    if len(out) != dims:
        raise InputError(f"{name}: {what}={v!r} needs {dims} value(s)")
    return out


def _pool_input(v: Value, name: str, dims: int) -> None:
    if len(v.shape) != dims + 1:
        want = "(C, L)" if dims == 1 else "(C, H, W)"
        raise InputError(f"{name} gets values of shape {v.shape}: it reads one sample of shape "
                         f"{want}; pass input_shape accordingly")


def max_pool(b: Builder, v: Value, name: str, dims: int, kernel, stride, padding, dilation,
             ceil_mode: bool = False, return_indices: bool = False) -> Value:
    """Max-pooling of ``v`` (C, L) or (C, H, W): each window's max by :meth:`Builder.maximum`.
    Padding is -inf for max, so a padded position is left out of its window."""
    if ceil_mode:
        raise InputError(f"{name} with ceil_mode=True is not supported: use ceil_mode=False "
                         f"(pad the input so the windows fit)")
    if return_indices:
        raise InputError(f"{name} with return_indices=True is not supported: indices are not "
                         f"piecewise linear in the input")
    _pool_input(v, name, dims)
    kernel = _tuple(kernel, dims, "kernel_size", name)
    stride = _tuple(stride if stride not in (None, ()) else kernel, dims, "stride", name)
    padding = _tuple(padding, dims, "padding", name)
    dilation = _tuple(dilation, dims, "dilation", name)
    if any(2 * p > (k - 1) * d + 1 for p, k, d in zip(padding, kernel, dilation, strict=True)):
        raise InputError(f"{name}: padding {padding} must be at most half the (dilated) kernel "
                         f"{kernel}")
    if dims == 1:  # as 2D on a height of 1
        kernel, stride, padding, dilation = ((1, *kernel), (1, *stride), (0, *padding),
                                             (1, *dilation))
    channels, spatial = v.shape[0], v.shape[1:]
    index = torch.arange(math.prod(v.shape), dtype=torch.float64).reshape(channels, -1,
                                                                         spatial[-1])
    padded = functional.pad(index, (padding[1], padding[1], padding[0], padding[0]), value=-1.0)
    try:
        cols = functional.unfold(padded[None], kernel, dilation=dilation, stride=stride)[0]
    except RuntimeError as e:
        raise InputError(f"{name} does not fit values of shape {v.shape}: "
                         f"{str(e).splitlines()[0][:160]}") from None
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
           zip(index.shape[1:], padding, dilation, kernel, stride, strict=True)]
    cols = cols.reshape(channels, math.prod(kernel), -1).permute(0, 2, 1)
    windows = [row[row >= 0].long().numpy() for row in cols.reshape(-1, cols.shape[-1])]
    if not windows or any(w.size == 0 for w in windows):
        raise InputError(f"{name} has windows with no input in them for values of shape "
                         f"{v.shape}: use a smaller kernel, stride or padding")
    pooled = b.maximum(Value(v.lin.reshape(v.lin.shape[0], -1), v.const.reshape(-1)), windows)
    return _unflat(pooled, (channels, *out[2 - dims:]))


def adaptive_max_pool(b: Builder, v: Value, name: str, dims: int, output_size,
                      return_indices: bool = False) -> Value:
    """Adaptive max-pooling: window i of a size-L axis into n spans
    floor(i L / n) .. ceil((i + 1) L / n), as torch's."""
    if return_indices:
        raise InputError(f"{name} with return_indices=True is not supported: indices are not "
                         f"piecewise linear in the input")
    _pool_input(v, name, dims)
    sizes = v.shape[1:]
    outs = (output_size if isinstance(output_size, (tuple, list)) else (output_size,) * dims)
    outs = tuple(s if o is None else int(o) for o, s in zip(outs, sizes, strict=True))
    spans = [[np.arange((i * size) // o, -(-((i + 1) * size) // o)) for i in range(o)]
             for size, o in zip(sizes, outs, strict=True)]
    index = np.arange(math.prod(v.shape)).reshape(v.shape)
    windows = []
    for c in range(v.shape[0]):
        if dims == 1:
            windows += [index[c, span] for span in spans[0]]
        else:
            windows += [index[c][np.ix_(r, q)].reshape(-1) for r in spans[0] for q in spans[1]]
    pooled = b.maximum(Value(v.lin.reshape(v.lin.shape[0], -1), v.const.reshape(-1)), windows)
    return _unflat(pooled, (v.shape[0], *outs))


def _unflat(v: Value, shape) -> Value:
    return Value(v.lin.reshape(v.lin.shape[0], *shape), v.const.reshape(shape))


def elementwise_max(b: Builder, x, y, label: str, sign: float = 1.0) -> Value:
    """``torch.maximum(x, y)`` (``sign`` -1: ``torch.minimum``, as -max(-x, -y)) of two values
    or a value and a constant, broadcast: a window of two per entry."""
    n = next(v.lin.shape[0] for v in (x, y) if isinstance(v, Value))
    rank = max(len(v.shape) for v in (x, y) if isinstance(v, Value))
    values = []
    for v in (x, y):
        if not isinstance(v, Value):  # a constant: aligned at the right, as torch does
            c = torch.as_tensor(v, dtype=torch.float64)
            if c.dim() > rank:
                raise InputError(f"{label} with a constant of shape {tuple(c.shape)} mixes "
                                 f"samples of the batch")
            c = c.reshape((1,) * (rank - c.dim()) + tuple(c.shape))
            v = Value(torch.zeros(1, *c.shape, dtype=torch.float64), c)
        values.append(v)
    if len(values[0].shape) != len(values[1].shape):
        raise InputError(f"{label} of values of shapes {values[0].shape} and {values[1].shape} "
                         f"broadcasts across the batch: give them equal ranks")
    try:
        shape = torch.broadcast_shapes(values[0].shape, values[1].shape)
    except RuntimeError:
        raise InputError(f"{label} of values of shapes {values[0].shape} and {values[1].shape}:"
                         f" they do not broadcast") from None
    size = math.prod(shape)
    lin = torch.cat([sign * v.lin.expand(n, *shape).reshape(n, -1) for v in values], 1)
    const = torch.cat([sign * v.const.expand(shape).reshape(-1) for v in values])
    windows = [np.array([i, size + i]) for i in range(size)]
    out = b.maximum(Value(lin, const), windows)
    return _unflat(Value(sign * out.lin, sign * out.const), shape)


def apply_ops(b: Builder, ops, v: Value) -> Value:
    """Ops of the :class:`~relu_regions.nets.reader.PiecewiseLinear` protocol: ``Affine`` and
    ``ReLU`` act on the flattened value; an ``nn.Module`` op (e.g. the plain ``nn.Conv2d`` of a
    GmP convolution) on the value as shaped."""
    for op in ops:  # Affine / ReLU of the reader, by their fields (the reader imports this module)
        if isinstance(op, nn.Module):
            v = apply_module(b, op, v)
            continue
        n = v.lin.shape[0]
        v = Value(v.lin.reshape(n, -1), v.const.reshape(-1))
        if hasattr(op, "negative_slope"):
            v = b.relu(v, op.negative_slope)
        elif hasattr(op, "weight") and hasattr(op, "bias"):
            w = torch.as_tensor(op.weight).detach().to(torch.float64)
            bias = None if op.bias is None else torch.as_tensor(op.bias).detach().double()
            if w.shape[1] != v.shape[0]:
                raise InputError(f"a layer of {w.shape[1]} inputs gets {v.shape[0]} values")
            v = Value(v.lin @ w.T, w @ v.const + (0 if bias is None else bias))
        else:
            raise InputError(f"region_ops() returned {type(op).__name__}: expected Affine or "
                             f"ReLU ops, or modules the reader knows")
    return v


def input_shape_of(model: nn.Module, input_shape, first: nn.Module | None):
    """The per-sample input shape: the argument, ``model.input_shape``, or the first layer's
    ``in_features``; InputError saying what to pass otherwise."""
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None and first is not None:
        if isinstance(first, nn.Linear):
            shape = (first.in_features,)
        elif hasattr(first, "in_features"):
            shape = (int(first.in_features),)
    if shape is None:
        what = (" (C, H, W)" if isinstance(first, nn.Conv2d) else " (C, L)"
                if isinstance(first, nn.Conv1d) else "")
        raise InputError(f"the model's input shape is unknown: pass input_shape={what or '...'}"
                         f" (the shape of one sample, without the batch dimension)")
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be a tuple of positive ints, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise InputError(f"input_shape must be a tuple of positive ints, got {shape!r}")
    return shape


def lower_sequential(model: nn.Module, input_shape=None, operators: bool | None = False):
    """(layers, leaks, notes, input_shape, max_nodes) of an ``nn.Sequential``, module by
    module; ``operators`` as in :class:`Builder`."""
    model, notes = prepare(model)
    mods = list(_flatten(model))
    for m in mods:  # an unreadable layer is named before a missing input shape
        if not (hasattr(m, "region_ops") or isinstance(m, KNOWN)):
            apply_module(None, m, None)  # raises, naming it
    shape = input_shape_of(model, input_shape, mods[0] if mods else None)
    b = Builder(shape, operators)
    b.notes += notes
    v = b.input
    with torch.no_grad():
        for i, m in enumerate(mods):
            v = apply_module(b, m, v, last=i == len(mods) - 1)
    b.finish(v)
    return b.layers, b.leaks, b.notes, shape, b.max_nodes


def _flatten(seq):
    for m in seq:
        if type(m) is nn.Sequential:
            yield from _flatten(m)
        else:
            yield m


def lower_module(model: nn.Module, input_shape=None, operators: bool | None = False):
    """(layers, leaks, notes, input_shape, max_nodes) of any module: an ``nn.Sequential`` (or a
    module with ``as_sequential()`` / ``region_ops()``) read module by module, anything else
    traced; ``operators`` as in :class:`Builder`."""
    if hasattr(model, "as_sequential") and not hasattr(model, "region_ops"):
        model = model.as_sequential()
    if isinstance(model, nn.Sequential):
        return lower_sequential(model, input_shape, operators)
    if hasattr(model, "region_ops") or type(model).__module__.startswith("torch.nn."):
        return lower_sequential(nn.Sequential(model), input_shape, operators)  # one layer
    return trace(model, input_shape, operators)


# --------------------------------------------------------------------------------------------
# Traced forwards (torch.fx)
# --------------------------------------------------------------------------------------------
class _Batch:
    """The batch size (``x.size(0)``, ``x.shape[0]``): n for ``lin``, 1 for ``const``."""

    def __repr__(self) -> str:
        return "batch"


BATCH = _Batch()
_FUNCTIONS = {
    operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub",
    operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
    operator.iadd: "add", operator.neg: "neg", torch.neg: "neg", operator.matmul: "matmul",
    torch.matmul: "matmul",
    functional.linear: "linear", torch.relu: "relu", functional.relu: "relu",
    functional.leaky_relu: "leaky_relu", functional.hardtanh: "hardtanh",
    functional.relu6: "relu6", torch.clamp: "clamp", torch.clip: "clamp", torch.cat: "cat",
    torch.concat: "cat", operator.getitem: "getitem", getattr: "getattr",
    functional.softmax: "softmax", functional.log_softmax: "softmax",
    torch.softmax: "softmax", torch.log_softmax: "softmax", functional.dropout: "dropout",
    torch.flatten: "flatten", torch.reshape: "reshape", torch.mean: "mean", torch.sum: "sum",
    functional.avg_pool1d: "pool", functional.avg_pool2d: "pool", functional.avg_pool3d: "pool",
    functional.adaptive_avg_pool1d: "pool", functional.adaptive_avg_pool2d: "pool",
    functional.adaptive_avg_pool3d: "pool", functional.pad: "pad",
    functional.max_pool1d: "max_pool1d", functional.max_pool2d: "max_pool2d",
    functional.max_pool3d: "max_pool3d", functional.adaptive_max_pool1d: "adaptive_max_pool1d",
    functional.adaptive_max_pool2d: "adaptive_max_pool2d",
    functional.adaptive_max_pool3d: "adaptive_max_pool3d", torch.maximum: "maximum",
    torch.max: "max", torch.minimum: "minimum", torch.min: "min", torch.amax: "amax",
    torch.amin: "amin",
}
# Methods and functions that keep the batch dimension and are linear in their tensor argument.
_SHAPE_OPS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "unsqueeze",
              "squeeze", "mean", "sum", "pool", "getitem", "expand", "clone", "float",
              "double", "to", "type_as"}


def trace(model: nn.Module, input_shape=None, operators: bool | None = False):
    """(layers, leaks, notes, input_shape, max_nodes) of a module through its ``torch.fx``
    graph: values affine in the input are tracked as :class:`Value`, the rest are constants."""
    from torch import fx  # only traced models pay for it

    model, notes = prepare(model)

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return hasattr(m, "region_ops") or super().is_leaf_module(m, name)

    try:
        graph = Tracer().trace(model)
    except fx.proxy.TraceError as e:
        raise InputError(f"{type(model).__name__}.forward branches or loops on the input "
                         f"(data-dependent control flow), so it cannot be read: write it "
                         f"without such branches ({str(e).splitlines()[0][:120]})") from None
    except InputError:
        raise
    except Exception as e:  # any failure of tracing user code is the user's model
        raise InputError(f"{type(model).__name__}.forward cannot be traced with torch.fx: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                         ) from None
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise InputError(f"{type(model).__name__}.forward takes {len(placeholders)} inputs: "
                         f"only models of one input tensor can be counted")
    first = None
    for user in placeholders[0].users:
        if user.op == "call_module":
            first = model.get_submodule(user.target)
    shape = input_shape_of(model, input_shape, first)
    b = Builder(shape, operators)
    b.notes += notes
    last_use = {}
    for i, node in enumerate(nodes):
        for inp in node.all_input_nodes:
            last_use[inp] = i
    output_node = nodes[-1]
    env: dict = {}
    with torch.no_grad():
        for i, node in enumerate(nodes):
            if node.op == "output":
                out = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
                if not isinstance(out, Value):
                    raise InputError(f"{type(model).__name__}.forward must return one tensor "
                                     f"that depends on the input")
                b.finish(out)
                break
            live = {}
            for n, val in env.items():
                if isinstance(val, Value) and last_use.get(n, -1) > i:
                    live.setdefault(id(val), val)
            keys = list(live)
            b.carry = [live[k] for k in keys]
            final = set(node.users) == {output_node}
            env[node] = _node_value(b, model, node, env, final)
            moved = dict(zip(keys, b.carry, strict=True))
            for n, val in env.items():
                if n is not node and isinstance(val, Value) and id(val) in moved:
                    env[n] = moved[id(val)]
            b.carry = []
            for n in [n for n in env if last_use.get(n, -1) <= i and n is not node]:
                del env[n]  # dead: its coordinates would go stale at the next ReLU
    return b.layers, b.leaks, b.notes, shape, b.max_nodes


def _node_value(b: Builder, model: nn.Module, node, env, final: bool):
    from torch import fx

    def resolve(a):
        return fx.node.map_arg(a, lambda n: env[n])

    args, kwargs = resolve(node.args), resolve(node.kwargs)
    if node.op == "placeholder":
        return b.input
    if node.op == "get_attr":
        obj = model
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj.detach() if isinstance(obj, torch.Tensor) else obj
    if node.op == "call_module":
        m = model.get_submodule(node.target)
        if not args or not isinstance(args[0], Value) or len(args) > 1 or kwargs:
            if not any(isinstance(a, Value) for a in (*args, *kwargs.values())):
                return m(*args, **kwargs)
            raise InputError(f"module {node.target} ({type(m).__name__}) is called with more "
                             f"than one tensor: only one input-dependent tensor can be read")
        return apply_module(b, m, args[0], last=final)
    if node.op == "call_function":
        name = _FUNCTIONS.get(node.target)
        label = getattr(node.target, "__name__", str(node.target))
        fn = node.target
    else:
        name = label = node.target
        fn = None
    values = [a for a in (*args, *kwargs.values()) if isinstance(a, Value)]
    nested = [a for a in args if isinstance(a, (list, tuple))
              and any(isinstance(x, Value) for x in a)]
    if not values and not nested:  # constants: computed as they are
        if any(a is BATCH for a in args):
            raise InputError(f"{label} uses the batch size: only view / reshape may")
        if fn is not None:
            return fn(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return _affine_op(b, name or label, label, fn, args, kwargs, final)


def _affine_op(b: Builder, name: str, label: str, fn, args, kwargs, final: bool):
    """An op with at least one input-dependent argument."""
    x = args[0] if args else None
    if name in ("tanh", "sigmoid", "exp", "log", "sin", "cos", "sqrt", "abs", "pow",
                "__pow__", "gelu", "silu", "elu", "softplus") or fn in NOT_PL_FUNCTIONS:
        raise InputError(f"{label} is not piecewise linear, so its regions are not defined: "
                         f"only ReLU-like activations can be counted")
    if name in ("max_pool1d", "max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"):
        return _max_pool_call(b, name, label, args, kwargs)
    if name in ("maximum", "max", "min", "minimum"):
        y = args[1] if len(args) > 1 else kwargs.get("other")
        if not isinstance(y, (Value, torch.Tensor)) or not isinstance(x, (Value, torch.Tensor)):
            raise InputError(f"{label}(x) or {label}(x, dim) of an input-dependent value (a "
                             f"reduction) cannot be read: use torch.maximum(a, b) / "
                             f"torch.minimum(a, b) or max-pooling")
        return elementwise_max(b, x, y, label, -1.0 if name in ("min", "minimum") else 1.0)
    if name in ("amax", "amin", "max_pool3d", "adaptive_max_pool3d"):
        raise InputError(f"{label} of an input-dependent value cannot be read: use "
                         f"torch.maximum(a, b) or 1D / 2D max-pooling")
    if name == "size" or (name == "getattr" and args[1] == "shape"):
        full = (BATCH, *x.shape)
        if name == "size" and len(args) > 1:
            return full[args[1]]
        return full
    if name in ("softmax", "log_softmax"):
        if final:
            b.notes.append(f"the final {label} is dropped: it changes no region and no argmax")
            return x
        raise InputError(f"{label} inside the model is not piecewise linear: only a final "
                         f"softmax can be dropped")
    if name == "dropout":
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        if training and p > 0:
            raise InputError("dropout is called in training mode: call model.eval() (or pass "
                             "training=self.training) before counting")
        return x
    if name in ("relu", "relu_"):
        return b.relu(x)
    if name == "leaky_relu":
        return b.relu(x, float(kwargs.get("negative_slope", args[1] if len(args) > 1 else .01)))
    if name in ("hardtanh", "relu6", "clamp", "clip", "clamp_"):
        if name == "relu6":
            lo, hi = 0.0, 6.0
        elif name == "hardtanh":
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        else:
            lo = kwargs.get("min", args[1] if len(args) > 1 else None)
            hi = kwargs.get("max", args[2] if len(args) > 2 else None)
        if isinstance(lo, (torch.Tensor, Value)) or isinstance(hi, (torch.Tensor, Value)):
            raise InputError(f"{label} with tensor bounds is not supported: use numbers")
        if lo is not None and hi is not None:
            return b.hardtanh(x, float(lo), float(hi))
        if lo is not None:  # lo + relu(x - lo)
            u = b.relu(Value(x.lin, x.const - lo))
            return Value(u.lin, u.const + lo)
        if hi is not None:  # hi - relu(hi - x)
            u = b.relu(Value(-x.lin, hi - x.const))
            return Value(-u.lin, hi - u.const)
        return x
    if name in ("add", "sub", "__add__", "__sub__", "__radd__", "__rsub__", "add_", "iadd"):
        y = args[1] if len(args) > 1 else kwargs.get("other")
        if "alpha" in kwargs:
            y = _scale(y, kwargs["alpha"])
        if name in ("sub", "__sub__"):
            y = _scale(y, -1.0)
        if name == "__rsub__":
            x, y = y, _scale(x, -1.0)
        return _add(x, y, label)
    if name in ("mul", "__mul__", "__rmul__", "mul_", "div", "__truediv__", "truediv"):
        y = args[1] if len(args) > 1 else kwargs.get("other")
        if isinstance(x, Value) and isinstance(y, Value):
            raise InputError(f"{label} of two input-dependent values (x * y) is not piecewise "
                             f"linear: only products by constants can be counted")
        if name in ("div", "__truediv__", "truediv"):
            if not isinstance(x, Value):
                raise InputError(f"{label} by an input-dependent value is not piecewise linear")
            return _scale(x, 1.0 / y if not isinstance(y, torch.Tensor) else 1.0 / y)
        return _scale(y, x) if isinstance(y, Value) else _scale(x, y)
    if name == "neg":
        return _scale(x, -1.0)
    if name == "matmul":
        y = args[1]
        if isinstance(y, Value):
            raise InputError("@ with an input-dependent right side is not supported: write "
                             "x @ W with W constant")
        return Value(x.lin @ y, (x.const[None] @ y)[0])
    if name == "linear":
        w = args[1] if len(args) > 1 else kwargs["weight"]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        if isinstance(w, Value) or isinstance(bias, Value):
            raise InputError("linear with an input-dependent weight is not piecewise linear")
        return Value(functional.linear(x.lin, w), functional.linear(x.const[None], w, bias)[0])
    if name in ("cat", "concat"):
        parts, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not all(isinstance(p, Value) for p in parts):
            raise InputError("cat of input-dependent values with constants is not supported")
        if dim == 0 or dim < -parts[0].lin.dim() + 1 - 1:
            raise InputError("cat along the batch dimension cannot be read: use dim >= 1")
        return Value(torch.cat([p.lin for p in parts], dim),
                     torch.cat([p.const[None] for p in parts], dim)[0])
    if name == "pad":
        pad = args[1] if len(args) > 1 else kwargs["pad"]
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None) or 0.0
        extra = {"value": value} if mode == "constant" else {}
        return Value(functional.pad(x.lin, pad, mode=mode),
                     functional.pad(x.const[None], pad, mode=mode, **extra)[0])
    if isinstance(x, OpValue) and name in ("view", "reshape", "flatten", "contiguous"):
        out = _call(fn, name, x.const[None], args, kwargs, 1)
        if out.dim() and out.shape[0] == 1:
            return x.then({"op": "reshape", "shape": tuple(out.shape[1:])},
                          lambda t: _call(fn, name, t, args, kwargs, t.shape[0]))
    if name in _SHAPE_OPS or (fn is not None and name in ("flatten", "reshape", "mean", "sum")):
        if name == "getitem":
            index = args[1]
            if not (isinstance(index, tuple) and index and index[0] == slice(None)):
                raise InputError("indexing an input-dependent tensor must keep the batch "
                                 "dimension: write x[:, ...]")
        return _batched(x, label, lambda t, batch: _call(fn, name, t, args, kwargs, batch))
    raise InputError(f"{label} on an input-dependent value cannot be read: use layers or "
                     f"ops listed in docs/models.md")


def _max_pool_call(b: Builder, name: str, label: str, args, kwargs) -> Value:
    """``F.max_pool1d/2d`` and ``F.adaptive_max_pool1d/2d`` by their arguments."""
    names = (("output_size", "return_indices") if name.startswith("adaptive") else
             ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"))
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                "return_indices": False}
    given = {**defaults, **dict(zip(names, args[1:], strict=False)), **kwargs}
    if not isinstance(args[0], Value) or any(isinstance(v, Value) for v in given.values()):
        raise InputError(f"{label} takes one input-dependent tensor, its first argument")
    dims = int(name[-2])
    if name.startswith("adaptive"):
        return adaptive_max_pool(b, args[0], label, dims, given["output_size"],
                                 given["return_indices"])
    return max_pool(b, args[0], label, dims, *(given[k] for k in names[:-1]),
                    given["return_indices"])


def _call(fn, name, t, args, kwargs, batch):
    rest = [batch if a is BATCH else a for a in args[1:]]
    if name == "getitem":
        return t[rest[0]]
    if fn is not None:
        return fn(t, *rest, **kwargs)
    return getattr(t, name)(*rest, **kwargs)


def _batched(v: Value, label: str, fn) -> Value:
    """A per-sample linear op applied to ``lin`` (batch n) and ``const`` (batch 1)."""
    n = v.lin.shape[0]
    lin, const = fn(v.lin, n), fn(v.const[None], 1)
    if (lin.dim() == 0 or const.dim() == 0 or lin.shape[0] != n or const.shape[0] != 1
            or lin.shape[1:] != const.shape[1:]):
        raise InputError(f"{label} mixes samples of the batch (its batch dimension is not kept):"
                         f" only per-sample operations can be read")
    return Value(lin, const[0])


def _scale(v, c):
    if not isinstance(v, Value):
        return v * c
    if isinstance(c, Value):
        raise InputError("a product of two input-dependent values is not piecewise linear")
    const = v.const[None] * c
    if const.shape[0] != 1:
        raise InputError("a product by a constant mixes samples of the batch")
    lin = (v.lin * c).expand(v.lin.shape[0], *const.shape[1:])
    return Value(lin, const[0])


def _add(x, y, label: str) -> Value:
    if not isinstance(x, Value):
        x, y = y, x
    if isinstance(y, Value):
        if len(x.shape) != len(y.shape):
            raise InputError(f"{label} of input-dependent values of shapes {x.shape} and "
                             f"{y.shape} broadcasts across the batch: give them equal ranks")
        return Value(x.lin + y.lin, x.const + y.const)
    const = x.const[None] + y
    if const.shape[0] != 1:
        raise InputError(f"{label} of a constant mixes samples of the batch")
    return Value(x.lin.expand(x.lin.shape[0], *const.shape[1:]), const[0])
