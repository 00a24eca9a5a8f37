"""The width-4 MLP whose weights are computed from the construction's derived parameters.

Built on ``torch.nn.utils.parametrize``: every ``nn.Linear`` of a plain Linear/ReLU stack gets a
parametrization for its weight and one for its bias that read them off a shared
:class:`~relu_regions.construction.Construction`. ``release()`` returns the same Linear/ReLU stack
without parametrizations — a plain ``nn.Sequential`` with trainable weights computing the identical
function (what ``remove_parametrizations(..., leave_parametrized=True)`` leaves) — the switch from
phase 1 to phase 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .construction import DEFAULT_MARGIN, Construction
from .reader import Affine, ReLU


class DerivedTensor(nn.Module):
    """Parametrization: layer ``index``'s weight (``part=0``) or bias (``part=1``) of the
    construction.

    The tensor it is registered on is ignored (kept frozen as ``original`` by PyTorch); the value
    comes from the construction, which is held by reference, not registered here, so its
    parameters appear once in the owning network's ``state_dict``.
    """

    def __init__(self, construction: Construction, index: int, part: int):
        super().__init__()
        object.__setattr__(self, "construction", construction)
        self.index, self.part = index, part

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.construction.weights()[self.index][self.part]


def linear_relu_stack(widths: Sequence[int], dtype: torch.dtype = torch.float64,
                      device: str | torch.device = "cpu") -> nn.Sequential:
    """Linear(w0, w1), ReLU, ..., Linear(w_{L-1}, w_L): the plain MLP the counters read."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out, dtype=dtype, device=device))
    return nn.Sequential(*layers)


def derived_layers(construction: Construction) -> nn.Sequential:
    """The Linear/ReLU stack of ``construction``'s width-4 network, each weight and bias a
    :class:`DerivedTensor` parametrization (the tensors under them are frozen and unused)."""
    p = construction.lo
    layers = linear_relu_stack([1] + [4] * construction.depth + [1], p.dtype, p.device)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for index, linear in enumerate(linears):
        for part, name in enumerate(("weight", "bias")):
            getattr(linear, name).requires_grad_(False)
            parametrize.register_parametrization(
                linear, name, DerivedTensor(construction, index, part), unsafe=True)
    return layers


class ConstructionNet(nn.Module):
    """Width-4, depth-d ReLU MLP (input 1, output 1) forced to have 2^d linear pieces.

    ``net.layers`` is an ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` whose weights are computed
    from ``net.construction`` (a, s, c0, c1). ``net(x)`` runs the raw layers; ``net.derived(x)``
    the direct composition of triangle maps — the same function. Train ``net.construction`` in
    phase 1, then ``net.release()`` for phase 2.

    ``pickle``, ``torch.save`` (read back by ``torch.load`` with ``weights_only=False``) and
    ``copy.deepcopy`` keep the construction and rebuild the layers from it (hooks on
    ``net.layers`` are not kept); :func:`relu_regions.checkpoint.save` writes a file that loads
    without running pickled code.
    """

    def __init__(self, construction: Construction):
        super().__init__()
        self.construction = construction
        self.layers = derived_layers(construction)

    @classmethod
    def build(cls, depth: int, peaks: float | Sequence[float] = 0.5, *, thm31: bool = True,
              s0: float = 0.25, scales: Sequence[float] | None = None, c0: float = 0.0,
              c1: float = 0.0, interval: Sequence[float] = (0.0, 1.0),
              concave: bool = False, margin: float = DEFAULT_MARGIN,
              dtype: torch.dtype = torch.float64,
              device: str | torch.device = "cpu") -> ConstructionNet:
        """``ConstructionNet(Construction(depth, peaks, thm31=..., ...))``: the arguments are
        :class:`~relu_regions.nets.construction.Construction`'s.

        The width-4 net of arXiv:2311.18022 with ``depth`` hidden layers; ``F`` has 2^depth pieces.
        ``peaks``: a_0..a_{d-1} (with ``thm31`` one more, the tail peak), or one value for all;
        ``thm31``: scales coupled by Theorem 3.1 from ``s0``, else the ``d`` free ``scales``;
        ``F = c0 + c1 u - sign * sum s_i W_i(u)`` on u = (x - lo) / (hi - lo) for
        ``interval=(lo, hi)``; ``concave``: sign = -1; peaks stay in (margin, 1 - margin).

        >>> import torch
        >>> net = ConstructionNet.build(6, peaks=0.4, thm31=True)
        >>> x = torch.linspace(0, 1, 9, dtype=torch.float64).unsqueeze(1)
        >>> bool((net(x) - net.derived(x)).abs().max() < 1e-12)  # raw layers = direct composition
        True
        >>> plain = net.release()  # phase 2 starts from a plain nn.Sequential, same function
        >>> bool(torch.equal(plain(x), net(x)))
        True
        >>> ConstructionNet.build(3, thm31=False, scales=[0.5, 0.1, 0.02], interval=(-1, 1),
        ...                       concave=True).construction
        Construction(depth=3, thm31=False, interval=(-1, 1), concave)
        """
        return cls(Construction(depth, peaks, thm31=thm31, s0=s0, scales=scales, c0=c0, c1=c1,
                                interval=interval, concave=concave, margin=margin, dtype=dtype,
                                device=device))

    def __getstate__(self):
        # PyTorch refuses to pickle a parametrized module (the Parametrized* class it generates
        # raises in __getstate__). The layers hold nothing of their own but the frozen, unused
        # tensors under the parametrizations, so pickle (torch.save) keeps those and the
        # construction, and __setstate__ registers the parametrizations again.
        state = super().__getstate__()
        modules = dict(state["_modules"])
        state["_modules"] = modules
        state["_layers_state"] = modules.pop("layers").state_dict()
        return state

    def __setstate__(self, state):
        state = dict(state)
        layers_state = state.pop("_layers_state")
        super().__setstate__(state)
        with torch.random.fork_rng(devices=[]):  # unpickling leaves the global RNG alone
            layers = derived_layers(self.construction)
        layers.load_state_dict(layers_state)
        self.layers = layers.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Compute the derived weights once per forward, not once per tensor access.
        with parametrize.cached():
            return self.layers(x)

    def derived(self, x: torch.Tensor) -> torch.Tensor:
        return self.construction(x)

    def region_ops(self) -> list:
        """The net as the region counters read it (:class:`~relu_regions.nets.reader.Affine`
        and :class:`~relu_regions.nets.reader.ReLU` ops), from ``construction.weights()`` in one
        call: through the parametrized layers every tensor would recompute all of them."""
        with torch.no_grad():
            pairs = self.construction.weights()
        ops = []
        for w, b in pairs:
            ops += [Affine(w, b), ReLU()]
        return ops[:-1]

    def as_sequential(self) -> nn.Sequential:
        """The live (still parametrized) Linear/ReLU stack, for tools that read layers."""
        return self.layers

    def release(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` with trainable weights equal to the current derived ones.

        Built fresh rather than by ``remove_parametrizations`` on a deep copy: a copy shares
        PyTorch's generated ``ParametrizedLinear`` class, and removal edits that class, which would
        break this network too.
        """
        c = self.construction
        plain = linear_relu_stack([1] + [4] * c.depth + [1], c.lo.dtype, c.lo.device)
        with torch.no_grad():
            linears = (m for m in plain if isinstance(m, nn.Linear))
            for (w, b), layer in zip(c.weights(), linears, strict=True):
                layer.weight.copy_(w)
                layer.bias.copy_(b)
        return plain
