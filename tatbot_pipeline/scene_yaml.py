"""Read tatbot's scene.yaml safely.

tatbot dumps its pydantic Scene with `yaml.dump`, so the file holds Python tags
(`!!python/object/apply:pathlib.PosixPath`, `!!python/tuple`). Loading it with `yaml.load(..., Loader=Loader)`
would execute arbitrary constructors; the loader below maps those tags to plain values instead. The scene also
holds camera credentials and serial numbers, which `scrub` removes before anything reaches logs or metadata.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REDACTED = "***"
_SECRET_KEY_RE = re.compile(r"pass(word)?|secret|token|api_?key|serial|username|user$|^ip$|ip_address|credential", re.I)


class SceneLoader(yaml.SafeLoader):
    """SafeLoader that turns Python tags into plain lists/strings/dicts instead of objects."""


def _construct_python(loader: SceneLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        # PosixPath('a', 'b') is dumped as apply:pathlib.PosixPath with its parts as arguments.
        if "Path" in tag_suffix:
            return str(Path(*items)) if items else ""
        return list(items)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


SceneLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_python)


def load_scene(path: Path) -> dict[str, Any]:
    """Parse a scene.yaml into plain Python values (no objects constructed). Raises yaml.YAMLError on bad YAML."""
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=SceneLoader)  # noqa: S506 - SceneLoader is a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def scrub(value: Any) -> Any:
    """Copy of `value` with credentials, serials and addresses replaced by '***'."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY_RE.search(str(k)) and v is not None else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def secret_values(scene: dict[str, Any]) -> set[str]:
    """Every string the scrubber would hide, so tests and output filters can prove none leaks."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if _SECRET_KEY_RE.search(str(k)) and isinstance(v, (str, int)) and str(v):
                    found.add(str(v))
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(scene)
    return found
