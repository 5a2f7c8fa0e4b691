"""Sphinx configuration of the hrflow documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (or
``tox -e docs``). ``HRFLOW_QUICK=1`` makes every gallery example shrink its
training budget and sample sizes (the examples read the variable themselves),
so the whole site builds in minutes on a CPU.
"""

from __future__ import annotations

import os
import pkgutil
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not

import hrflow  # noqa: E402

QUICK = os.environ.get("HRFLOW_QUICK", "0").strip() not in ("", "0")

# -- project -------------------------------------------------------------------
project = "hrflow"
author = "the hrflow developers"
copyright = "2025, the hrflow developers"  # noqa: A001
version = release = hrflow.__version__

# -- extensions ----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "examples",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "api/generated/_optional_stubs.rst",
]
default_role = "code"  # `x` in prose is inline code, never a broken cross-reference

# -- API reference: autosummary + numpydoc ---------------------------------------
#: modules listed by hand in api/index.rst (the estimator module is documented
#: through hrflow.HRFEstimator, the command line in the installation page)
CORE_MODULES = (
    "hierarchy", "sampling", "density", "divergence", "fields", "sources", "time_samplers",
    "losses", "analytic", "datasets", "metrics",
)
_UNLISTED = {"estimator", "cli"}
#: every other public module present at build time (coupling, persistence,
#: distributed, ... as the project adds them) gets its page automatically
PRESENT_OPTIONAL = sorted(
    f"hrflow.{info.name}"
    for info in pkgutil.iter_modules(hrflow.__path__)
    if not info.name.startswith("_") and info.name not in CORE_MODULES + tuple(_UNLISTED)
)

def _autosummary_block(modules, toctree):
    lines = [".. autosummary::", f"   :toctree: {toctree}", "   :template: module.rst", ""]
    return "\n".join(lines + [f"   {m}" for m in modules]) + "\n"


# Stub pages of the optional modules are generated from this helper file (its
# ``:toctree: .`` is relative to api/generated); api/index.rst shows the same
# table through the "source-read" hook below.
_OPTIONAL_STUBS = DOCS / "api" / "generated" / "_optional_stubs.rst"
_OPTIONAL_STUBS.parent.mkdir(parents=True, exist_ok=True)
_OPTIONAL_STUBS.write_text(
    ":orphan:\n\n" + (_autosummary_block(PRESENT_OPTIONAL, ".") if PRESENT_OPTIONAL else "")
)
autosummary_generate = ["api/index.rst", "api/generated/_optional_stubs.rst"]
autosummary_generate_overwrite = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a module's public names are its __all__

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc docstrings state the types
autodoc_inherit_docstrings = True

numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

intersphinx_mapping = {}  # no network at build time: no cross-project links
nitpicky = False

# -- sphinx-gallery ------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("hrflow",),
    "backreferences_dir": "gen_modules/backreferences",
    "remove_config_comments": True,
    "download_all_examples": False,
    "min_reported_time": 1,
    "write_computation_times": False,  # no sg_execution_times.rst in the source tree
    "show_memory": False,
    "only_warn_on_example_error": False,  # a failing example fails the build
    "plot_gallery": "True",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "capture_repr": ("_repr_html_", "__repr__"),
}

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"hrflow {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False


#: pages written elsewhere in the project: listed in the main toctree if present
OPTIONAL_PAGES = [p for p in ("distributed",) if (DOCS / f"{p}.rst").is_file()]


def _insert_optional_content(app, docname, source):
    """Fill in the parts of index.rst and api/index.rst that depend on what exists."""
    if docname == "index":
        entries = "".join(f"   {p}\n" for p in OPTIONAL_PAGES)
        source[0] = source[0].replace("   changelog\n", entries + "   changelog\n")
        return
    if docname != "api/index":
        return
    marker = ".. optional-modules-marker"
    block = (
        _autosummary_block(PRESENT_OPTIONAL, "generated")
        if PRESENT_OPTIONAL
        else "(None of them is present in this build.)\n"
    )
    source[0] = source[0].replace(marker, block)


_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")
_STRAY_STAR = re.compile(r"(?<![\\*\w`])\*(?=[A-Za-z_]\w*(?![\w*]))")


def _escape_stray_stars(app, what, name, obj, options, lines):
    """Escape the ``*`` of shapes such as ``(n, *e)`` written outside literals.

    Docstrings state shapes like ``(n, *event_shape)``; where the backticks were
    left out, docutils reads a lone ``*`` as the start of emphasis and warns. Text
    inside inline literals, doctest lines and real ``*emphasis*`` is left alone.
    """
    for i, line in enumerate(lines):
        if line.lstrip().startswith((">>>", "...")):
            continue
        parts = _LITERAL.split(line)
        parts[::2] = [_STRAY_STAR.sub(r"\\*", part) for part in parts[::2]]
        lines[i] = "".join(parts)


def _skip_metadata_routing(app, what, name, obj, skip, options):
    """Leave out scikit-learn's metadata-routing plumbing inherited by the estimator."""
    if name == "get_metadata_routing" or re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _escape_stray_stars)
    app.connect("autodoc-skip-member", _skip_metadata_routing)
    app.connect("source-read", _insert_optional_content)
    if QUICK:
        print("hrflow docs: HRFLOW_QUICK=1, gallery examples run with reduced budgets")
