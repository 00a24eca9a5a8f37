"""Safe checkpoints: tensors plus a JSON config in one file, loaded with ``weights_only=True``.

Format (``relu-regions/1``): ``torch.save`` of a plain dict

    {"format": "relu-regions/1", "config": "<JSON text>", "state_dict": {name: tensor}}

where the JSON config has at least ``"model"``: ``{"kind": "mlp", "widths": [1, 4, .., 1]}``
(an ``nn.Sequential`` of Linear/ReLU), ``{"kind": "construction", "depth": .., "thm31": ..,
"margin": .., "interval": [lo, hi], "concave": ..}`` (a ConstructionNet) or ``{"kind": "lowered",
"widths": [..], "input_shape": [..], "notes": [..]}`` (any other model the reader reads, stored
as its chain of (W, b) layers and per-unit slopes ``leak{i}``: a
:class:`~relu_regions.nets.reader.LoweredNet`; a model with max windows adds ``"max_nodes": N``
and an int64 tensor ``max_nodes`` (N, 5) of its tournament nodes), plus whatever the caller
adds (method, target, seed, versions...). Only tensors, strings and dicts are stored, so
``torch.load(weights_only=True)`` reads it without unpickling any code; anything else is refused.
Writes go to a temporary file in the same folder, then ``os.replace``: a crash never leaves half a
checkpoint under the final name.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .errors import InputError
from .nets.construction import Construction
from .nets.operators import check_dense
from .nets.parametrize import ConstructionNet, linear_relu_stack
from .nets.reader import LoweredNet, check_max_nodes, layer_stack, lower
from .validation import is_int, one_line

FORMAT = "relu-regions/1"


def model_config(model: nn.Module) -> dict:
    """Architecture description enough to rebuild ``model`` (or, for kind ``"lowered"``, its
    lowered form) before loading the state_dict."""
    return _stored(model)[0]


def _stored(model: nn.Module) -> tuple[dict, nn.Module]:
    """(config, the module whose state_dict is stored)."""
    if isinstance(model, ConstructionNet):
        return {"kind": "construction", **model.construction.config()}, model
    if _plain_mlp(model):
        layers, _ = layer_stack(model)
        return {"kind": "mlp", "widths": [layers[0][0].shape[1]]
                + [w.shape[0] for w, _ in layers]}, model
    lowered = lower(model)
    check_dense(lowered.layers, "a lowered checkpoint",
                "save the model's own state_dict (torch.save(model.state_dict(), path)) and "
                "count the model itself")
    net = LoweredNet.from_layers(lowered.layers, lowered.leaks, lowered.input_shape,
                                 lowered.max_nodes)
    config = {"kind": "lowered", "widths": net.widths, "input_shape": list(net.input_shape),
              "notes": lowered.notes}
    if lowered.max_nodes is not None:
        config["max_nodes"] = len(lowered.max_nodes)
    return config, net


def _plain_mlp(model: nn.Module) -> bool:
    """An ``nn.Sequential`` laid out as :func:`linear_relu_stack` builds it (same state_dict
    keys): Linear with bias, ReLU, Linear, ..., Linear."""
    if type(model) is not nn.Sequential or len(model) % 2 == 0:
        return False
    return all(type(m) is (nn.Linear if i % 2 == 0 else nn.ReLU)
               and (i % 2 or m.bias is not None) for i, m in enumerate(model))


def build_model(config: dict) -> nn.Module:
    kind = config.get("kind")
    if kind in ("mlp", "lowered"):
        widths = config.get("widths")
        if not (isinstance(widths, list) and len(widths) >= 2
                and all(is_int(w) and w >= 1 for w in widths)):
            raise InputError(f"checkpoint has a malformed model config: widths={widths!r}")
        if kind == "mlp":
            return linear_relu_stack(widths)
        shape = config.get("input_shape")
        if not (isinstance(shape, list) and shape and all(is_int(s) and s >= 1 for s in shape)
                and math.prod(shape) == widths[0]):
            raise InputError(f"checkpoint has a malformed model config: input_shape={shape!r} "
                             f"for {widths[0]} inputs")
        n_max = config.get("max_nodes", 0)
        if not (is_int(n_max) and n_max >= 0):
            raise InputError(f"checkpoint has a malformed model config: max_nodes={n_max!r}")
        return LoweredNet(widths, tuple(shape), n_max)
    if kind == "construction":
        args = {k: config[k] for k in ("thm31", "margin", "interval", "concave") if k in config}
        return ConstructionNet(Construction(config.get("depth"), **args))
    raise InputError(f"checkpoint has an unknown model kind {kind!r}")


def save(model: nn.Module, path: Path | str, extra: dict | None = None) -> Path:
    """Write ``model`` and a JSON config (``extra`` merged in) to ``path`` atomically. A
    ConstructionNet or a plain Linear/ReLU stack is stored as it is; any other model the reader
    reads (conv nets, residual blocks, a user's own class) as its lowered form, which loads as a
    :class:`~relu_regions.nets.reader.LoweredNet` without the original code."""
    stored_config, stored = _stored(model)
    config = {"model": stored_config, **(extra or {})}
    state = {k: v.detach().cpu() for k, v in stored.state_dict().items()}
    payload = {"format": FORMAT, "config": json.dumps(config), "state_dict": state}
    path = Path(path)
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def read_tensors(path: Path, what: str) -> Any:
    """``torch.load`` of ``path`` with ``weights_only=True`` (tensors, strings, numbers and
    containers; never code), on the CPU. An unreadable file is one InputError naming ``what``."""
    try:
        # torch warns about foreign pickle protocols; we refuse them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # not a torch.save file, or one holding code
        raise InputError(f"{path} is not a readable {what}: not a file of tensors written by "
                         f"torch.save (relu_regions.checkpoint.save writes one)") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError,
            AttributeError, ImportError, KeyError, IndexError) as e:
        raise InputError(f"{path} is not a readable {what} ({one_line(e, 200)})") from None


def load(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Read a checkpoint written by :func:`save`; returns (model, config). Never runs code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    payload = read_tensors(path, "relu-regions checkpoint")
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise InputError(f"{path} is not a relu-regions checkpoint (format {FORMAT} expected)")
    try:
        config = json.loads(payload["config"])
        model = build_model(config["model"])
        model.load_state_dict(payload["state_dict"])
        if isinstance(model, LoweredNet) and model.has_max_nodes:
            check_max_nodes(model.max_nodes.numpy(), model.widths[1:-1])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path} has a malformed config or weights "
                         f"({str(e).splitlines()[0][:200]})") from None
    return model.to(device), config
