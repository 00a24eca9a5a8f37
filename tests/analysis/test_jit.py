"""The counters' compiled kernels are cached in the user's cache directory, not in the package;
a user's own numba functions keep numba's defaults."""

import json
import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from relu_regions.analysis import jit, regions
    before = jit.is_cached(regions)
    regions._new_state(1)  # compiles (and caches) one small kernel
    sys.path.insert(0, sys.argv[1])
    import users_module
    users_module.twice(2.0)
    print(json.dumps({"before": before, "after": jit.is_cached(regions),
                      "dir": str(jit.cache_dir())}))
""")


def test_kernels_are_cached_in_the_users_cache_directory(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "users_module.py").write_text(
        "from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", CODE, str(user)], env=env, capture_output=True,
                         text=True, check=True)
    seen = json.loads(out.stdout)
    ours = tmp_path / "cache" / "relu-regions" / "numba"
    assert seen == {"before": False, "after": True, "dir": str(ours)}
    assert list(ours.glob("*/analysis/regions._new_state-*.nbi"))  # one folder per copy
    assert list((user / "__pycache__").glob("users_module.twice-*.nbi"))  # numba's own place
    assert not list(ours.rglob("users_module*"))
