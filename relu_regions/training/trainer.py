"""The trainer's old single module, kept for one release: every name it had, re-exported from
the modules of ``relu_regions.training`` (config, functional, jacobians, coordinates, optim,
stages, growth, fitting, result, run_folder)."""

from .config import (DEFAULT_PHASE1, DEFAULT_PHASE2, GROW_STARTS, METHODS, OPTIMIZERS,  # noqa: F401
                     PAPER_PHASE1, PAPER_PHASE2, PARAMETERIZATIONS, PICK_SHARE, STARTS,
                     FitConfig, Phase, parse_phase)
from .coordinates import GmPLayout  # noqa: F401
from .fitting import count_pieces as _pieces, fit  # noqa: F401
from .functional import (flatten_layers, mlp_forward, mlp_jacobian, random_theta,  # noqa: F401
                         raw_shapes, shapes_of, to_module as _to_module, unflatten_layers)
from .growth import INSERT_PATHS, best_rows as _best_rows, grow, insert_layer  # noqa: F401
from .jacobians import (RunProjection, Runs, chain_jacobian, derived_jacobian_runs,  # noqa: F401
                        jvp_jacobian, lm_jacobian, mlp_jacobian_runs)
from .optim import MU_MAX, MU_MIN, per_seed_mse as _per_seed_mse, run_adam, run_lm  # noqa: F401
from .result import FitResult  # noqa: F401
from .run_folder import load_run, provenance  # noqa: F401
from .stages import (TRAIN_STATE_FORMAT, Stages, load_train_state, optimize,  # noqa: F401
                     pick_rows as _pick_rows)
