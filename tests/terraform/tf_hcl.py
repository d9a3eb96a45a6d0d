"""Read Terraform configurations with python-hcl2 and resolve simple values.

``load_module`` merges every ``*.tf`` file of a directory into one
``ModuleConfig``. ``module_instances`` walks the module calls from a root
configuration down, so that a test can ask what value an argument has in one
environment: ``resolve`` follows ``var.`` and ``local.`` references through the
callers' arguments and the variables' defaults. Expressions that are more than
a single reference stay as text (``${...}``), which the tests match with
regular expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import hcl2
from hcl2 import SerializationOptions

_OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)
_REFERENCE = re.compile(r"^\$\{(var|local)\.([A-Za-z0-9_-]+)\}$")


class UnresolvedValue(Exception):
    """A reference has no value in this scope: a variable without default and without argument."""


@dataclass
class ModuleConfig:
    """The blocks of one Terraform module directory, merged over its files."""

    path: Path
    files: list[str] = field(default_factory=list)
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, object] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    module_calls: dict[str, dict] = field(default_factory=dict)
    providers: list[dict] = field(default_factory=list)
    terraform_blocks: list[dict] = field(default_factory=list)

    def resources_of_type(self, resource_type: str) -> dict[str, dict]:
        return {
            name: body for (kind, name), body in self.resources.items() if kind == resource_type
        }

    def data_of_type(self, data_type: str) -> dict[str, dict]:
        return {name: body for (kind, name), body in self.data.items() if kind == data_type}


def _labelled(blocks: list[dict]) -> list[tuple[str, dict]]:
    return [(label, body) for block in blocks for label, body in block.items()]


@cache
def load_module(path: Path) -> ModuleConfig:
    """Parse and merge every ``*.tf`` file in ``path`` (not the tests' ``.tftest.hcl``)."""
    config = ModuleConfig(path=path)
    for tf_file in sorted(path.glob("*.tf")):
        config.files.append(tf_file.name)
        document = hcl2.loads(tf_file.read_text(), serialization_options=_OPTIONS)

        for name, body in _labelled(document.get("variable", [])):
            config.variables[name] = body
        for name, body in _labelled(document.get("output", [])):
            config.outputs[name] = body
        for block in document.get("locals", []):
            config.locals.update(block)
        for resource_type, instances in _labelled(document.get("resource", [])):
            for name, body in instances.items():
                config.resources[(resource_type, name)] = body
        for data_type, instances in _labelled(document.get("data", [])):
            for name, body in instances.items():
                config.data[(data_type, name)] = body
        for name, body in _labelled(document.get("module", [])):
            config.module_calls[name] = body
        config.providers.extend(document.get("provider", []))
        config.terraform_blocks.extend(document.get("terraform", []))
    return config


@dataclass
class Scope:
    """One module instance: its configuration, the arguments its caller passed, the caller's scope."""

    module: ModuleConfig
    address: str
    arguments: dict | None = None
    parent: Scope | None = None

    def resolve(self, value: object) -> object:
        """Follow a value that is a single ``var.`` or ``local.`` reference to a literal.

        Values that are not such a reference come back unchanged.

        Raises:
            UnresolvedValue: a variable has neither an argument nor a default.
        """
        if not isinstance(value, str):
            return value
        match = _REFERENCE.match(value)
        if match is None:
            return value

        kind, name = match.groups()
        if kind == "local":
            return self.resolve(self.module.locals[name])
        if self.arguments is not None and name in self.arguments:
            return self.parent.resolve(self.arguments[name])
        variable = self.module.variables.get(name)
        if variable is None or "default" not in variable:
            raise UnresolvedValue(f"var.{name} has no value in {self.address}")
        return variable["default"]


def module_instances(root: Path) -> dict[str, Scope]:
    """Return every module instance under the root configuration at ``root``, by address."""
    root_scope = Scope(module=load_module(root.resolve()), address="root")
    instances = {"root": root_scope}
    pending = [root_scope]
    while pending:
        scope = pending.pop()
        for name, call in scope.module.module_calls.items():
            source = call["source"]
            if not source.startswith("."):
                raise ValueError(
                    f"module {name} in {scope.module.path} has a non-local source {source!r}"
                )
            address = name if scope.address == "root" else f"{scope.address}.{name}"
            child = Scope(
                module=load_module((scope.module.path / source).resolve()),
                address=address,
                arguments=call,
                parent=scope,
            )
            instances[address] = child
            pending.append(child)
    return instances


def instances_of(root: Path, module_dir: Path) -> list[Scope]:
    """Return the instances of the module in ``module_dir`` under the root configuration at ``root``."""
    wanted = module_dir.resolve()
    return [scope for scope in module_instances(root).values() if scope.module.path == wanted]


def as_list(value: object) -> list:
    """Return a block or attribute that python-hcl2 may give as one item or as a list, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def policy_statements(document: dict) -> list[dict]:
    """Return the statements of an ``aws_iam_policy_document`` data block."""
    return as_list(document.get("statement"))
