"""Build flowsim's API reference (HTML) from its docstrings with pdoc.

    pip install -e ".[docs]"
    python docs/build_api.py [OUT_DIR]        # default: build/api/ (git-ignored); open OUT_DIR/index.html

Documents every public module of the package (no name component starting with ``_``; ``flowsim.__main__`` is
never imported, since importing it runs the CLI). pdoc alone (``pdoc flowsim``) would follow only the submodules
named in ``flowsim.__all__``. Exits with status 1, listing them, if any module failed to import.
"""

from __future__ import annotations

import pkgutil
import sys
import traceback
import warnings
from pathlib import Path

# pdoc's warnings when a module cannot be imported or found
IMPORT_FAILURES = ("Couldn't import", "Error loading", "Cannot find spec", "does not resolve")


def public_modules(package: str = "flowsim") -> list[str]:
    """Dotted names of ``package`` and its public submodules, parents before children."""
    root = __import__(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def build(out_dir: Path) -> list[str]:
    """Write the HTML reference to ``out_dir``; return pdoc's import-failure warnings (empty on success)."""
    import pdoc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pdoc.pdoc(*public_modules(), "!flowsim.__main__", output_directory=Path(out_dir))
        except RuntimeError as error:  # pdoc: a named module failed to import
            cause = "".join(traceback.format_exception(error.__cause__)) if error.__cause__ else ""
            return [f"{error}\n{cause}"]
    return [str(w.message) for w in caught if str(w.message).startswith(IMPORT_FAILURES)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "build" / "api"
    failures = build(out_dir)
    for message in failures:
        print(message, file=sys.stderr)
    print(f"API reference: {out_dir / 'index.html'}" if not failures else f"{len(failures)} module(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
