"""Sphinx configuration of the sb3_gitstorm documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (``pip install -e ".[docs]"``).
The build needs no network: the Stable-Baselines3 inventory for intersphinx is written locally (see below).
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout, not whichever sb3_gitstorm is installed
sys.path.insert(0, str(DOCS / "_ext"))

import sb3_gitstorm  # noqa: E402

project = "sb3_gitstorm"
author = "sb3_gitstorm contributors"
copyright = "2026, sb3_gitstorm contributors"
release = version = sb3_gitstorm.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "gitstorm_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
suppress_warnings = ["myst.header"]  # pages moved from the README start below h1 in places

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on GitHub

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True  # show `1e-4`, not `0.0001`
autodoc_inherit_docstrings = False  # gymnasium.Env docstrings are not numpy-style
autodoc_default_options = {"show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True  # dataclass Attributes as a field list, not a second object description

# Intersphinx to SB3 without the network: CI reaches package registries only. Each mapping lists its
# inventories in order and uses the first that loads, so the local one below is read and the site
# (None = <url>/objects.inv) is only tried if it is missing. The local inventory holds the SB3 objects
# and pages these docs refer to, with their addresses on the SB3 site.
SB3_URL = "https://stable-baselines3.readthedocs.io/en/master/"
SB3_OBJECTS = {
    ("py:class", "stable_baselines3.common.base_class.BaseAlgorithm"): "modules/base.html#$",
    ("py:class", "stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm"): "modules/base.html#$",
    ("py:class", "stable_baselines3.common.callbacks.BaseCallback"): "guide/callbacks.html#$",
    ("py:class", "stable_baselines3.common.callbacks.CheckpointCallback"): "guide/callbacks.html#$",
    ("py:class", "stable_baselines3.common.callbacks.EvalCallback"): "guide/callbacks.html#$",
    ("py:class", "stable_baselines3.common.vec_env.VecEnv"): "guide/vec_envs.html#$",
    ("py:class", "stable_baselines3.common.vec_env.VecNormalize"): "guide/vec_envs.html#$",
    ("py:function", "stable_baselines3.common.evaluation.evaluate_policy"): "common/evaluation.html#$",
    ("std:doc", "guide/rl_zoo"): "guide/rl_zoo.html",
    ("std:doc", "guide/callbacks"): "guide/callbacks.html",
    ("std:doc", "guide/vec_envs"): "guide/vec_envs.html",
    ("std:doc", "guide/save_format"): "guide/save_format.html",
    ("std:doc", "guide/tensorboard"): "guide/tensorboard.html",
    ("std:doc", "guide/checking_nan"): "guide/checking_nan.html",
}


def write_inventory(objects: dict[tuple[str, str], str], name: str) -> str:
    """Write a Sphinx v2 ``objects.inv`` of ``objects`` ((role, name) -> uri) to the temporary folder; return its path."""
    lines = "".join(f"{target} {role} 1 {uri} -\n" for (role, target), uri in objects.items())
    header = f"# Sphinx inventory version 2\n# Project: {name}\n# Version: \n# The rest of this file is compressed with zlib.\n"
    path = Path(tempfile.gettempdir()) / f"sb3-gitstorm-docs-{name}-objects.inv"
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as file:  # renamed into place: builds may run side by side
        file.write(header.encode() + zlib.compress(lines.encode()))
    os.replace(file.name, path)
    return str(path)


intersphinx_mapping = {"sb3": (SB3_URL, (write_inventory(SB3_OBJECTS, "stable-baselines3"), None))}
intersphinx_timeout = 5

html_theme = "sphinx_rtd_theme"
html_title = f"sb3_gitstorm {release}"
html_show_sourcelink = False
