"""Geometric parameterization (GmP) of ReLU layers and input mean normalization (IMN).

Chen & Ge, "Neural Characteristic Activation Analysis and Geometric Parameterization for ReLU
Networks" (arXiv:2305.15912), Section 3. A unit ``relu(w^T x + b)`` is written with a radius
``r``, a direction ``u(theta)`` on the unit sphere in hyperspherical coordinates and an offset
``lambda``::

    w = r * u(theta),   b = r * lambda,   so   relu(w^T x + b) = r * relu(u^T x + lambda)  (r > 0)

The characteristic activation boundary ``u^T x + lambda = 0`` and its active side then depend on
``theta`` and ``lambda`` only, and a step of size ``eps`` in ``theta`` turns it by at most ``eps``
(``u`` is 1-Lipschitz from Euclidean ``theta`` to the geodesic metric on the sphere). With a
1D input the sphere is ``{-1, +1}``: the sign is fixed at initialization and only ``r`` and
``lambda`` train.

``r`` is a free parameter. While ``r > 0`` (every layer starts so) the drop-in layer followed by
a ReLU and the paper's unit ``r * relu(u^T x + lambda)`` are the same function with the same
gradients. If training drives ``r`` below zero they differ: the paper's unit flips its *output*
sign, the drop-in flips its *active side* (``relu(r z) = |r| relu(-z)``), i.e. turns its CAB
normal by ``pi``. :class:`GmPLinearReLU` is the paper's fused unit exactly (used by the studies);
:class:`GmPLinear` is the drop-in with the literal ``w = r u``, ``b = r lambda``.
(Reflecting the radius, ``|r|``, was measured and rejected: units whose ``r`` reaches 0 get stuck
there, and the Levy training loss ended 2-5x higher on two of four seeds.)
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn import functional
from torch.nn.modules.utils import _pair

from ..errors import InputError
from ..nets.reader import Affine, ReLU
from ..validation import check_int


# --------------------------------------------------------------------------------------------
# Hyperspherical coordinates (Chen & Ge, Section 3, eq. for u(theta))
# --------------------------------------------------------------------------------------------
def direction_from_angles(theta: Tensor) -> Tensor:
    """Unit vector ``u(theta)`` from ``d - 1`` hyperspherical angles (last dim of ``theta``).

    ``u_1 = cos t_1``, ``u_k = (prod_{i<k} sin t_i) cos t_k``, ``u_d = prod_{i<d} sin t_i``
    (Chen & Ge, Section 3). Leading dimensions are batch dimensions. With zero angles
    (``d = 1``) the result is ``[1]``: the 1D sign lives outside the angles.
    """
    ones = theta.new_ones(theta.shape[:-1] + (1,))
    prefix = torch.cat([ones, torch.cumprod(torch.sin(theta), dim=-1)], dim=-1)  # prod_{i<k} sin
    factor = torch.cat([torch.cos(theta), ones], dim=-1)
    return prefix * factor


def angles_from_direction(u: Tensor) -> Tensor:
    """Hyperspherical angles of the direction of ``u`` (last dim ``d``); inverse of
    :func:`direction_from_angles`.

    ``t_k = atan2(||u_{k+1:}||, u_k)`` in ``[0, pi]`` for ``k < d - 1`` and
    ``t_{d-1} = atan2(u_d, u_{d-1})`` in ``(-pi, pi]``. ``u`` need not be normalized (atan2 is
    scale-free). Returns ``d - 1`` angles; for ``d = 1`` an empty last dimension.
    """
    d = u.shape[-1]
    if d < 2:
        return u[..., :0].clone()
    # tail[k] = ||u_{k+1:}||, via a reversed cumulative sum of squares, scaled to avoid underflow.
    scale = u.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    v = u / scale
    tail = torch.flip(torch.cumsum(torch.flip(v * v, dims=[-1]), dim=-1), dims=[-1])
    tail = torch.sqrt(tail[..., 1:])  # tail[..., k] = ||v_{k+1:}|| for k = 0..d-2
    theta = torch.atan2(tail[..., : d - 2], v[..., : d - 2])
    last = torch.atan2(v[..., d - 1 : d], v[..., d - 2 : d - 1])
    return torch.cat([theta, last], dim=-1)


def to_hyperspherical(w: Tensor) -> tuple[Tensor, Tensor]:
    """Split vectors ``w`` (last dim ``d``) into radius and angles: ``w = r * u(theta)``.

    For ``d >= 2``, ``r = ||w|| >= 0``. For ``d = 1`` the sphere ``{-1, +1}`` has no angles, so the
    sign stays in ``r`` (``r = w``) and ``theta`` is empty; :func:`from_hyperspherical` inverts
    both cases exactly.
    """
    if w.shape[-1] == 1:
        return w[..., 0].clone(), w[..., :0].clone()
    return torch.linalg.vector_norm(w, dim=-1), angles_from_direction(w)


def from_hyperspherical(r: Tensor, theta: Tensor) -> Tensor:
    """``w = r * u(theta)``; inverse of :func:`to_hyperspherical`."""
    return r.unsqueeze(-1) * direction_from_angles(theta)


def _glorot_uniform(shape, fan_in, fan_out, generator, dtype, device) -> Tensor:
    # Keras' default Dense/Conv init, used by the paper for every parameterization.
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    w = torch.rand(shape, generator=generator, dtype=dtype, device="cpu") * 2 - 1
    return (w * bound).to(device)


# --------------------------------------------------------------------------------------------
# GmP layers
# --------------------------------------------------------------------------------------------
class _GmPBase(nn.Module):
    """Shared storage: per unit angles ``theta`` (``fan_in - 1``), radius ``r``, offset ``lam``.

    For ``fan_in == 1`` a buffer ``sign`` holds the fixed direction (Chen & Ge, Section 3:
    1D inputs keep the sign).
    """

    theta: nn.Parameter
    r: nn.Parameter
    lam: nn.Parameter | None
    sign: Tensor | None

    def _init_storage(self, units: int, fan_in: int, bias: bool, device, dtype) -> None:
        kw = {"device": device, "dtype": dtype}
        self.theta = nn.Parameter(torch.zeros(units, max(fan_in - 1, 0), **kw))
        self.r = nn.Parameter(torch.ones(units, **kw))
        self.register_parameter("lam", nn.Parameter(torch.zeros(units, **kw)) if bias else None)
        self.register_buffer("sign", torch.ones(units, 1, **kw) if fan_in == 1 else None)

    def _set_from_flat(self, w: Tensor, b: Tensor | None) -> None:
        """Set ``(theta, r, lam)`` so that the flat weight rows ``w`` and bias ``b`` are
        reproduced."""
        r = torch.linalg.vector_norm(w, dim=-1)
        if bool((r == 0).any()):
            unit = int(torch.nonzero(r == 0)[0, 0])
            raise InputError(f"weight row {unit} is zero: GmP needs a nonzero weight per unit")
        with torch.no_grad():
            self.r.copy_(r)
            self.theta.copy_(angles_from_direction(w))
            if self.sign is not None:
                self.sign.copy_(torch.sign(w))
            if self.lam is not None:
                self.lam.copy_(b / r if b is not None else torch.zeros_like(r))

    def flat_direction(self) -> Tensor:
        """Unit directions ``u(theta)`` as rows, shape ``(units, fan_in)``."""
        u = direction_from_angles(self.theta)
        return u * self.sign if self.sign is not None else u

    def flat_weight(self) -> Tensor:
        """``w = r u(theta)`` as rows, shape ``(units, fan_in)``."""
        return self.r.unsqueeze(-1) * self.flat_direction()

    @property
    def bias(self) -> Tensor | None:
        """``b = r * lambda`` (None when built without bias)."""
        return None if self.lam is None else self.r * self.lam


class GmPLinear(_GmPBase):
    """Drop-in for ``nn.Linear`` under the geometric parameterization (Chen & Ge, Section 3).

    Parameters: ``theta`` (out, in - 1), ``r`` (out,), ``lam`` (out,). The forward computes
    ``x W^T + b`` with ``W = r u(theta)``, ``b = r lam``; follow it with a ReLU. Initialized from
    a Glorot-uniform draw of ``W`` (theta from its direction, ``r = ||w||``, ``lam = 0``), seeded
    by ``generator``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            check_int(value, name, low=1)
        self.in_features, self.out_features = in_features, out_features
        self._init_storage(out_features, in_features, bias, device, dtype)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw from Glorot uniform: theta from the direction, r = ||w||, lam = 0."""
        w = _glorot_uniform(
            (self.out_features, self.in_features), self.in_features, self.out_features,
            generator, self.r.dtype, self.r.device,
        )
        w = torch.where(w == 0, torch.full_like(w, 1e-12), w)  # a zero row has no direction
        self._set_from_flat(w, None)

    @property
    def weight(self) -> Tensor:
        """``W = r u(theta)``, shape (out, in), computed on every access."""
        return self.flat_weight()

    def forward(self, x: Tensor) -> Tensor:
        return functional.linear(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> GmPLinear:
        """The GmP layer computing exactly ``linear`` (``lam = b / r``); raises on a zero row."""
        if not isinstance(linear, nn.Linear):
            raise InputError(f"from_linear got {type(linear).__name__}: pass an nn.Linear")
        w = linear.weight.detach()
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device=w.device, dtype=w.dtype)
        out._set_from_flat(w, None if linear.bias is None else linear.bias.detach())
        return out

    def _plain_linear(self) -> nn.Linear:
        """A new ``nn.Linear`` holding this layer's ``weight`` / ``bias`` (whatever the subclass
        reports as its pre-activation), same dtype and device. Shared by :meth:`to_linear` and
        :meth:`GmPLinearReLU.split`."""
        w = self.weight.detach()
        out = nn.Linear(self.in_features, self.out_features, bias=self.lam is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(w)
            if out.bias is not None:
                out.bias.copy_(self.bias.detach())
        return out

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the same function (same dtype and device)."""
        return self._plain_linear()

    def region_ops(self) -> list:
        """Its exact plain form, as the region counters read it."""
        bias = self.bias
        return [Affine(self.weight.detach(), None if bias is None else bias.detach())]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.lam is not None}")


class GmPLinearReLU(GmPLinear):
    """The paper's fused GmP unit layer: ``r * relu(u(theta)^T x + lambda)`` (Chen & Ge, Section 3;
    the ReLU is inside, so do not add another).

    Same parameters, initialization and conversion as :class:`GmPLinear`. The CAB is
    ``u^T x + lambda = 0`` with active side ``u^T x + lambda > 0`` whatever the sign of ``r``; a
    negative ``r`` flips only the output's sign. ``weight`` / ``bias`` therefore report the
    effective pre-activation ``(|r| u, |r| lambda)`` of the ReLU, so that
    ``forward(x) == sign(r) * relu(x W^T + b)`` (see :meth:`split`) and CAB analysis reads the
    true boundaries.
    """

    @property
    def weight(self) -> Tensor:
        """Effective pre-activation weight ``|r| u(theta)``, shape (out, in)."""
        return self.r.abs().unsqueeze(-1) * self.flat_direction()

    @property
    def bias(self) -> Tensor | None:
        """Effective pre-activation bias ``|r| lambda``."""
        return None if self.lam is None else self.r.abs() * self.lam

    @property
    def output_sign(self) -> Tensor:
        """``sign(r)`` per unit (0 only if ``r`` is exactly 0, where the unit outputs 0)."""
        return torch.sign(self.r)

    def forward(self, x: Tensor) -> Tensor:
        z = functional.linear(x, self.flat_direction(), self.lam)
        return self.r * torch.relu(z)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> GmPLinearReLU:
        """The fused layer computing exactly ``relu(linear(x))`` (``lam = b / r``)."""
        return super().from_linear(linear)

    def split(self) -> tuple[nn.Linear, Tensor]:
        """``(linear, sign)`` with ``forward(x) == sign * relu(linear(x))`` exactly: a plain
        ReLU layer whose output signs the next layer can absorb (scale its columns by ``sign``)."""
        return self._plain_linear(), self.output_sign.detach().clone()

    def region_ops(self) -> list:
        """``sign * relu(linear(x))`` as ops: the ReLU of its pre-activation, then the diagonal
        of output signs (the counters fold it into the next layer)."""
        return [*super().region_ops(), ReLU(), Affine(torch.diag(self.output_sign.detach()))]

    def to_linear(self) -> nn.Linear:
        raise InputError("GmPLinearReLU includes its ReLU: use split() to get (nn.Linear, output "
                         "sign)")


class GmPConv2d(_GmPBase):
    """Drop-in for ``nn.Conv2d`` under GmP: each output channel is a unit whose flattened kernel
    (``in_channels / groups * kh * kw`` entries) is ``r u(theta)``; bias ``r lam``.

    Chen & Ge apply GmP to convolutions the same way (Section 5, VGG / ResNet experiments).
    ``padding_mode`` other than ``"zeros"`` is not supported.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups)):
            check_int(value, name, low=1)
        if in_channels % groups or out_channels % groups:
            raise InputError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.groups = groups
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self._init_storage(out_channels, fan_in, bias, device, dtype)
        self.reset_parameters(generator)

    @property
    def _kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw from Glorot uniform (fans include the receptive field), lam = 0."""
        rf = self.kernel_size[0] * self.kernel_size[1]
        fan_in = self.in_channels // self.groups * rf
        fan_out = self.out_channels // self.groups * rf
        w = _glorot_uniform((self.out_channels, fan_in), fan_in, fan_out, generator,
                            self.r.dtype, self.r.device)
        w = torch.where(w == 0, torch.full_like(w, 1e-12), w)
        self._set_from_flat(w, None)

    @property
    def weight(self) -> Tensor:
        """Kernel ``r u(theta)`` reshaped to ``(out, in / groups, kh, kw)``."""
        return self.flat_weight().reshape(self._kernel_shape)

    def forward(self, x: Tensor) -> Tensor:
        return functional.conv2d(x, self.weight, self.bias, self.stride, self.padding,
                                 self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GmPConv2d:
        """The GmP convolution computing exactly ``conv``; raises on a zero kernel."""
        if not isinstance(conv, nn.Conv2d):
            raise InputError(f"from_conv got {type(conv).__name__}: pass an nn.Conv2d")
        if conv.padding_mode != "zeros":
            raise InputError(f"padding_mode={conv.padding_mode!r} is not supported: use 'zeros'")
        w = conv.weight.detach()
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, bias=conv.bias is not None, device=w.device,
                  dtype=w.dtype)
        out._set_from_flat(w.reshape(w.shape[0], -1),
                           None if conv.bias is None else conv.bias.detach())
        return out

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same function."""
        w = self.weight.detach()
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                        self.padding, self.dilation, self.groups, bias=self.lam is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(w)
            if out.bias is not None:
                out.bias.copy_(self.bias.detach())
        return out

    def region_ops(self) -> list:
        """Its plain ``nn.Conv2d``, which the reader lowers with the input's shape."""
        return [self.to_conv()]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.lam is not None}")


# --------------------------------------------------------------------------------------------
# Input mean normalization (Chen & Ge, Section 3.3)
# --------------------------------------------------------------------------------------------
class InputMeanNorm(nn.Module):
    """IMN: subtract the per-feature batch mean of a layer's input; no variance scaling, no affine.

    Features are dimension 1 (``(N, C)`` or ``(N, C, *)``, as for BatchNorm). In training mode the
    batch mean is used and a running mean is tracked (``running = (1 - m) running + m mean``); in
    eval mode the running mean is subtracted, so eval is a fixed affine map.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        check_int(num_features, "num_features", low=1)
        if not 0.0 <= momentum <= 1.0:
            raise InputError(f"momentum={momentum!r} is not allowed: use a number in [0, 1]")
        self.num_features, self.momentum = num_features, momentum
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise InputError(f"input shape {tuple(x.shape)} is not allowed: need "
                             f"(N, {self.num_features}, ...)")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
        else:
            mean = self.running_mean
        return x - mean.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"


# --------------------------------------------------------------------------------------------
# Whole-module conversion
# --------------------------------------------------------------------------------------------
def to_gmp(module: nn.Module) -> nn.Module:
    """Copy of ``module`` with every ``nn.Linear`` / ``nn.Conv2d`` replaced by its exact GmP twin.

    A bare ``nn.Linear`` / ``nn.Conv2d`` is converted directly. The original is not modified.
    GmP is Chen & Ge, arXiv:2305.15912, Sec. 3: ``w = r u(theta)``, ``b = r lambda``.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    >>> g = to_gmp(net)
    >>> x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> bool((g(x) - net(x)).abs().max() < 1e-12)  # the same function, new coordinates
    True
    """
    if isinstance(module, nn.Linear):
        return GmPLinear.from_linear(module)
    if isinstance(module, nn.Conv2d):
        return GmPConv2d.from_conv(module)

    out = copy.deepcopy(module)
    for name, child in list(out.named_children()):
        setattr(out, name, to_gmp(child))
    return out


def from_gmp(module: nn.Module) -> nn.Module:
    """Copy of ``module`` with every GmP layer replaced by the plain layer computing the same.

    A :class:`GmPLinearReLU` becomes ``nn.Sequential(nn.Linear, nn.ReLU)`` when all its radii are
    positive; otherwise there is no plain equivalent in place (use its ``split()``).
    """
    if isinstance(module, GmPLinearReLU):
        linear, sign = module.split()
        if not bool((sign > 0).all()):
            raise InputError("a GmPLinearReLU has r <= 0 units: use split() and fold the signs "
                             "into the next layer")
        return nn.Sequential(linear, nn.ReLU())
    if isinstance(module, GmPLinear):
        return module.to_linear()
    if isinstance(module, GmPConv2d):
        return module.to_conv()

    out = copy.deepcopy(module)
    for name, child in list(out.named_children()):
        setattr(out, name, from_gmp(child))
    return out
