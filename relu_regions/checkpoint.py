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
import os
import pickle
import stat
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .nets.construction import Construction
from .errors import InputError
from .validation import is_int
from .nets.parametrize import ConstructionNet, linear_relu_stack

FORMAT = "relu-regions/1"


def model_config(model: nn.Module) -> dict:
    """Architecture description enough to rebuild ``model`` before loading its state_dict."""
    if isinstance(model, ConstructionNet):
        return {"kind": "construction", **model.construction.config()}
    if isinstance(model, nn.Sequential):
        from .analysis.regions import relu_layers  # validates the Linear/ReLU structure

        layers = relu_layers(model)
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


def save(model: nn.Module, path, extra: dict | None = None) -> Path:
    """Write ``model`` and a JSON config (``extra`` merged in) to ``path`` atomically."""
    config = {"model": model_config(model), **(extra or {})}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": json.dumps(config), "state_dict": state}
    path = Path(path)
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def load(path, device="cpu") -> tuple[nn.Module, dict]:
    """Read a checkpoint written by :func:`save`; returns (model, config). Never runs code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; we refuse them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError,
            AttributeError, ImportError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} is not a readable relu-regions checkpoint ({first[:200]})") from None
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


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plain ``open(path, "w")`` would give it (an existing file's
    mode, else 0o666 minus the umask), not the temporary file's private 0o600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))
