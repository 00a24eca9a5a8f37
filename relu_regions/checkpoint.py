"""Safe checkpoints: tensors plus a JSON config in one file, loaded with ``weights_only=True``.

Format (``relu-regions/1``): ``torch.save`` of a plain dict

    {"format": "relu-regions/1", "config": "<JSON text>", "state_dict": {name: tensor}}

where the JSON config has at least ``"model"``: either ``{"kind": "mlp", "widths": [1, 4, .., 1]}``
(an ``nn.Sequential`` of Linear/ReLU) or ``{"kind": "construction", "depth": .., "thm31": ..,
"margin": .., "interval": [lo, hi], "concave": ..}`` (a ConstructionNet), plus whatever the caller
adds (method, target, seed, versions...). Only tensors, strings and dicts are stored, so
``torch.load(weights_only=True)`` reads it without unpickling any code; anything else is refused.
Writes go to a temporary file in the same folder, then ``os.replace``: a crash never leaves half a
checkpoint under the final name.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .errors import InputError
from .nets.construction import Construction
from .nets.parametrize import ConstructionNet, linear_relu_stack
from .nets.reader import relu_layers
from .validation import is_int, one_line

FORMAT = "relu-regions/1"


def model_config(model: nn.Module) -> dict:
    """Architecture description enough to rebuild ``model`` before loading its state_dict."""
    if isinstance(model, ConstructionNet):
        return {"kind": "construction", **model.construction.config()}
    if isinstance(model, nn.Sequential):
        layers = relu_layers(model)  # validates the Linear/ReLU structure
        return {"kind": "mlp", "widths": [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]}
    raise InputError(f"cannot checkpoint a {type(model).__name__}: expected a ConstructionNet "
                     f"or an nn.Sequential of nn.Linear/nn.ReLU")


def build_model(config: dict) -> nn.Module:
    kind = config.get("kind")
    if kind == "mlp":
        widths = config.get("widths")
        if not (isinstance(widths, list) and len(widths) >= 2
                and all(is_int(w) and w >= 1 for w in widths)):
            raise InputError(f"checkpoint has a malformed model config: widths={widths!r}")
        return linear_relu_stack(widths)
    if kind == "construction":
        args = {k: config[k] for k in ("thm31", "margin", "interval", "concave") if k in config}
        return ConstructionNet(Construction(config.get("depth"), **args))
    raise InputError(f"checkpoint has an unknown model kind {kind!r}")


def save(model: nn.Module, path: Path | str, extra: dict | None = None) -> Path:
    """Write ``model`` and a JSON config (``extra`` merged in) to ``path`` atomically."""
    config = {"model": model_config(model), **(extra or {})}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError,
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
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path} has a malformed config or weights "
                         f"({str(e).splitlines()[0][:200]})") from None
    return model.to(device), config
