"""Read YAML as kubectl and the API server do.

PyYAML follows YAML 1.1, where `1e-06` (no dot, as kustomize writes floats) is a string; Go's
YAML reads it as a number. Tests that read kustomize output use this loader so they see the
numbers the API server would see.
"""

import re

import yaml


class Yaml12Loader(yaml.SafeLoader):
    pass


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def load_all(text: str) -> list:
    return [d for d in yaml.load_all(text, Loader=Yaml12Loader) if d is not None]
