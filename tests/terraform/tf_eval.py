"""Evaluate the names that Terraform gives AWS resources, offline, per environment.

``tf_hcl.Scope.resolve`` follows a value only when it is one reference.
Names are usually templates (``"${local.name}-worker"``) that reach through
module calls, ``count`` and a few functions, so ``Evaluator`` interprets the
small part of HCL that names are written in:

- literals, lists, objects and string templates;
- ``var.``, ``local.``, ``module.<name>[0].<output>`` and
  ``module.<name>[*].<output>`` references, with ``.attribute`` and ``[key]``;
- the data sources that name the account, region and partition;
- the attributes of AWS resources that follow from their names, the way AWS
  forms them: an SQS queue's URL and ARN, an IAM role's ARN, an S3 bucket's
  ARN, an ECR repository's URL;
- ``cond ? a : b``, ``one()``, ``concat()``, and ``{for k, v in c : k => ...}``.

Anything else, such as a value that AWS assigns during an apply (a KMS key
ARN, the cluster's OIDC issuer), raises ``UnresolvedValue``, so a test fails
instead of comparing against a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tf_hcl import Scope, UnresolvedValue, as_list, module_instances

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FOR_OBJECT = re.compile(
    r"^\{\s*for\s+(\w+)\s*,\s*(\w+)\s+in\s+(.+?)\s*:\s*(\w+)\s*=>\s*(.+)\}$", re.DOTALL
)
_POLICY_REFERENCE = re.compile(r"^\$\{data\.aws_iam_policy_document\.(\w+)(?:\[0\])?\.json\}$")


@dataclass(frozen=True)
class Account:
    """Where an environment runs: the facts that Terraform reads from data sources."""

    account_id: str
    region: str
    partition: str = "aws"

    def data_sources(self) -> dict[str, object]:
        return {
            "data.aws_caller_identity.current.account_id": self.account_id,
            "data.aws_region.current.name": self.region,
            "data.aws_partition.current.partition": self.partition,
        }


# Scanning -------------------------------------------------------------------------------------


def _closing(text: str, start: int) -> int:
    """Return the index of the bracket that closes the one at ``start``, skipping strings."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack = [pairs[text[start]]]
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            index = _string_end(text, index)
        elif char in pairs:
            stack.append(pairs[char])
        elif char == stack[-1]:
            stack.pop()
            if not stack:
                return index
        index += 1
    raise UnresolvedValue(f"unbalanced brackets in {text!r}")


def _string_end(text: str, start: int) -> int:
    """Return the index of the quote that closes the string starting at ``start``."""
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == "$" and text[index + 1 : index + 2] == "{":
            index = _closing(text, index + 1) + 1
            continue
        if text[index] == '"':
            return index
        index += 1
    raise UnresolvedValue(f"unterminated string in {text!r}")


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split ``text`` at each ``separator`` that is outside brackets and strings."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char == '"':
            index = _string_end(text, index)
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            start = index + len(separator)
            index = start
            continue
        index += 1
    parts.append(text[start:])
    return parts


def _template_parts(text: str) -> list[tuple[bool, str]]:
    """Split a template into (is_expression, text) parts at each ``${...}``."""
    parts, index, literal_start = [], 0, 0
    while index < len(text):
        if text.startswith("${", index):
            end = _closing(text, index + 1)
            parts.append((False, text[literal_start:index]))
            parts.append((True, text[index + 2 : end]))
            index = literal_start = end + 1
            continue
        index += 1
    parts.append((False, text[literal_start:]))
    return [part for part in parts if part[0] or part[1]]


# Evaluation -----------------------------------------------------------------------------------


@dataclass
class Evaluator:
    """Values of one environment's configuration, given its account and region."""

    root: Path
    account: Account
    instances: dict[str, Scope] = field(init=False)

    def __post_init__(self) -> None:
        self.instances = module_instances(self.root)

    # Module instances ------------------------------------------------------------------------

    def count(self, scope: Scope) -> int:
        """Return how many instances the module call of ``scope`` creates (``count``, default 1)."""
        if scope.parent is None:
            return 1
        return self._count_of(scope.parent, scope.arguments)

    def enabled(self, scope: Scope) -> bool:
        """Tell whether ``scope`` and every module call above it create an instance."""
        while scope.parent is not None:
            if self.count(scope) < 1:
                return False
            scope = scope.parent
        return True

    def enabled_scopes(self) -> list[Scope]:
        return [scope for scope in self.instances.values() if self.enabled(scope)]

    def _count_of(self, scope: Scope, body: dict) -> int:
        if "for_each" in body:
            raise UnresolvedValue(f"for_each on a module call is not supported ({scope.address})")
        count = self.value(scope, body.get("count", 1))
        if not isinstance(count, int) or isinstance(count, bool):
            raise UnresolvedValue(f"count {body.get('count')!r} in {scope.address} is not a number")
        return count

    def _child(self, scope: Scope, name: str) -> Scope:
        address = name if scope.address == "root" else f"{scope.address}.{name}"
        if address not in self.instances:
            raise UnresolvedValue(f"module.{name} does not exist in {scope.address}")
        return self.instances[address]

    # Values ----------------------------------------------------------------------------------

    def value(self, scope: Scope, raw: object, bindings: dict | None = None) -> object:
        """Evaluate a value as python-hcl2 returns it (text with ``${...}``, lists, dicts)."""
        bindings = bindings or {}
        if isinstance(raw, dict):
            return {key: self.value(scope, item, bindings) for key, item in raw.items()}
        if isinstance(raw, list):
            return [self.value(scope, item, bindings) for item in raw]
        if not isinstance(raw, str):
            return raw
        return self._template(scope, raw, bindings)

    def output(self, scope: Scope, name: str) -> object:
        """Return the value of output ``name`` of the module instance ``scope``."""
        outputs = scope.module.outputs
        if name not in outputs:
            raise UnresolvedValue(f"{scope.address} has no output {name}")
        return self.value(scope, outputs[name]["value"])

    def _template(self, scope: Scope, text: str, bindings: dict) -> object:
        parts = _template_parts(text)
        if len(parts) == 1 and parts[0][0]:
            return self.expression(scope, parts[0][1], bindings)
        pieces = []
        for is_expression, part in parts:
            if not is_expression:
                pieces.append(part)
                continue
            value = self.expression(scope, part, bindings)
            if value is None or isinstance(value, dict | list):
                raise UnresolvedValue(f"${{{part}}} in {text!r} is {value!r}, not a string")
            pieces.append(str(value).lower() if isinstance(value, bool) else str(value))
        return "".join(pieces)

    def expression(self, scope: Scope, text: str, bindings: dict | None = None) -> object:
        """Evaluate one HCL expression (the text inside ``${...}``) in ``scope``."""
        bindings = bindings or {}
        text = text.strip()

        condition = _split_top_level(text, "?")
        if len(condition) == 2:
            branches = _split_top_level(condition[1], " : ")
            if len(branches) != 2:
                raise UnresolvedValue(f"cannot read the conditional {text!r}")
            chosen = branches[0] if self.expression(scope, condition[0], bindings) else branches[1]
            return self.expression(scope, chosen, bindings)

        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if _NUMBER.match(text):
            return float(text) if "." in text else int(text)
        if text.startswith('"') and _string_end(text, 0) == len(text) - 1:
            return self._template(scope, text[1:-1], bindings)
        if text.startswith("[") and _closing(text, 0) == len(text) - 1:
            items = [item for item in _split_top_level(text[1:-1], ",") if item.strip()]
            return [self.expression(scope, item, bindings) for item in items]
        if text.startswith("{") and _closing(text, 0) == len(text) - 1:
            return self._object(scope, text, bindings)

        call = re.match(r"^(\w+)\(", text)
        if call and _closing(text, call.end() - 1) == len(text) - 1:
            return self._function(scope, call.group(1), text[call.end() : -1], bindings)
        return self._reference(scope, text, bindings)

    def _object(self, scope: Scope, text: str, bindings: dict) -> dict:
        loop = _FOR_OBJECT.match(text)
        if loop:
            key_name, value_name, collection, key_expression, value_expression = loop.groups()
            if key_expression != key_name:
                raise UnresolvedValue(f"only {{for k, v in c : k => ...}} is supported: {text!r}")
            items = self.expression(scope, collection, bindings)
            if not isinstance(items, dict):
                raise UnresolvedValue(f"{collection} is not a map in {text!r}")
            return {
                key: self.expression(
                    scope, value_expression, {**bindings, key_name: key, value_name: item}
                )
                for key, item in items.items()
            }

        result = {}
        for entry in _split_top_level(text[1:-1].replace("\n", ","), ","):
            if not entry.strip():
                continue
            key, separator, item = entry.partition("=")
            if not separator:
                raise UnresolvedValue(f"cannot read the object entry {entry!r}")
            result[key.strip().strip('"')] = self.expression(scope, item, bindings)
        return result

    def _function(self, scope: Scope, name: str, arguments: str, bindings: dict) -> object:
        values = [
            self.expression(scope, argument, bindings)
            for argument in _split_top_level(arguments, ",")
            if argument.strip()
        ]
        if name == "one":
            (items,) = values
            if len(items) > 1:
                raise UnresolvedValue(f"one() of {len(items)} items")
            return items[0] if items else None
        if name == "concat":
            return [item for items in values for item in items]
        raise UnresolvedValue(f"function {name}() is not supported")

    # References ------------------------------------------------------------------------------

    def _reference(self, scope: Scope, text: str, bindings: dict) -> object:
        steps = self._traversal(text)
        head = steps[0]

        if head in bindings:
            return self._traverse(bindings[head], steps[1:], scope, bindings, text)
        if head == "each":
            raise UnresolvedValue(f"{text} is used outside a for_each")
        if head == "var":
            return self._traverse(self._variable(scope, steps[1]), steps[2:], scope, bindings, text)
        if head == "local":
            if steps[1] not in scope.module.locals:
                raise UnresolvedValue(f"local.{steps[1]} does not exist in {scope.address}")
            value = self.value(scope, scope.module.locals[steps[1]], bindings)
            return self._traverse(value, steps[2:], scope, bindings, text)
        if head == "module":
            return self._module_reference(scope, steps[1:], bindings, text)
        if head == "data":
            name = ".".join(str(step) for step in steps[:4])
            sources = self.account.data_sources()
            if name not in sources:
                raise UnresolvedValue(f"{name} is assigned by AWS, not by the configuration")
            return self._traverse(sources[name], steps[4:], scope, bindings, text)
        if head.startswith("aws_"):
            return self._resource_reference(scope, steps, bindings, text)
        raise UnresolvedValue(f"cannot evaluate {text!r} in {scope.address}")

    def _variable(self, scope: Scope, name: str) -> object:
        if scope.arguments is not None and name in scope.arguments:
            return self.value(scope.parent, scope.arguments[name])
        variable = scope.module.variables.get(name)
        if variable is None or "default" not in variable:
            raise UnresolvedValue(f"var.{name} has no value in {scope.address}")
        return self.value(scope, variable["default"])

    def _module_reference(self, scope: Scope, steps: list, bindings: dict, text: str) -> object:
        child = self._child(scope, steps[0])
        rest = steps[1:]
        if rest and rest[0] == ("*",):
            outputs = [self.output(child, rest[1])] if self.count(child) > 0 else []
            return self._traverse(outputs, rest[2:], scope, bindings, text)
        if rest and isinstance(rest[0], tuple):
            if self.count(child) < 1:
                raise UnresolvedValue(f"{text}: module.{steps[0]} has no instances")
            rest = rest[1:]
        return self._traverse(self.output(child, rest[0]), rest[1:], scope, bindings, text)

    def _traverse(self, value, steps: list, scope: Scope, bindings: dict, text: str) -> object:
        for step in steps:
            if isinstance(step, tuple):
                key = self.expression(scope, step[0], bindings)
            else:
                key = step
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError) as error:
                raise UnresolvedValue(f"{text}: no {key!r} in {value!r}") from error
        return value

    @staticmethod
    def _traversal(text: str) -> list:
        """Split ``a.b["c"][0].d`` into ``["a", "b", ('"c"',), ("0",), "d"]``."""
        steps, index = [], 0
        match = _IDENTIFIER.match(text)
        if match is None:
            raise UnresolvedValue(f"cannot read the reference {text!r}")
        steps.append(match.group())
        index = match.end()
        while index < len(text):
            if text[index] == ".":
                match = _IDENTIFIER.match(text, index + 1)
                if match is None:
                    raise UnresolvedValue(f"cannot read the reference {text!r}")
                steps.append(match.group())
                index = match.end()
            elif text[index] == "[":
                end = _closing(text, index)
                inner = text[index + 1 : end].strip()
                steps.append(("*",) if inner == "*" else (inner,))
                index = end + 1
            else:
                raise UnresolvedValue(f"cannot read the reference {text!r}")
        return steps

    # Resources -------------------------------------------------------------------------------

    def resource_instances(self, scope: Scope, resource_type: str, name: str) -> dict:
        """Return the instances of a resource by key (None without count or for_each)."""
        body = scope.module.resources.get((resource_type, name))
        if body is None:
            raise UnresolvedValue(f"{resource_type}.{name} does not exist in {scope.address}")
        if "for_each" in body:
            collection = self.value(scope, body["for_each"])
            if isinstance(collection, list):
                collection = {item: item for item in collection}
            return {key: {"each.key": key, "each.value": item} for key, item in collection.items()}
        if "count" in body:
            return {index: {"count.index": index} for index in range(self._count_of(scope, body))}
        return {None: {}}

    def resource_attribute(
        self, scope: Scope, resource_type: str, name: str, key, attribute: str | None
    ) -> object:
        """Return an attribute of one resource instance, derived from its name as AWS does.

        With ``attribute`` None, return every attribute that follows from the name, as a map.
        """
        body = scope.module.resources[(resource_type, name)]
        instances = self.resource_instances(scope, resource_type, name)
        if key not in instances:
            raise UnresolvedValue(
                f"{resource_type}.{name}[{key!r}] does not exist in {scope.address}"
            )
        each = instances[key]
        bindings = {"each": {"key": each["each.key"], "value": each["each.value"]}} if each else {}

        account, region, partition = (
            self.account.account_id,
            self.account.region,
            self.account.partition,
        )
        rules = {
            "aws_sqs_queue": {
                "name": lambda n: n,
                "arn": lambda n: f"arn:{partition}:sqs:{region}:{account}:{n}",
                "url": lambda n: f"https://sqs.{region}.amazonaws.com/{account}/{n}",
                "id": lambda n: f"https://sqs.{region}.amazonaws.com/{account}/{n}",
            },
            "aws_iam_role": {
                "name": lambda n: n,
                "id": lambda n: n,
                "arn": lambda n: f"arn:{partition}:iam::{account}:role/{n}",
            },
            "aws_s3_bucket": {
                "bucket": lambda n: n,
                "id": lambda n: n,
                "arn": lambda n: f"arn:{partition}:s3:::{n}",
            },
            "aws_ecr_repository": {
                "name": lambda n: n,
                "repository_url": lambda n: f"{account}.dkr.ecr.{region}.amazonaws.com/{n}",
                "arn": lambda n: f"arn:{partition}:ecr:{region}:{account}:repository/{n}",
            },
            "aws_eks_cluster": {"name": lambda n: n, "id": lambda n: n},
        }
        if resource_type not in rules:
            raise UnresolvedValue(
                f"{resource_type}.{name} has no attribute that follows from its name"
            )
        if attribute is None:
            attributes = list(rules[resource_type])
        elif attribute in rules[resource_type]:
            attributes = [attribute]
        else:
            raise UnresolvedValue(
                f"{resource_type}.{name}.{attribute} is assigned by AWS, not by the configuration"
            )
        if resource_type == "aws_iam_role" and body.get("path", "/") != "/":
            raise UnresolvedValue(f"role {name} in {scope.address} has a path")
        name_argument = "bucket" if resource_type == "aws_s3_bucket" else "name"
        resource_name = self.value(scope, body[name_argument], bindings)
        values = {item: rules[resource_type][item](resource_name) for item in attributes}
        return values if attribute is None else values[attribute]

    def _resource_reference(self, scope: Scope, steps: list, bindings: dict, text: str) -> object:
        resource_type, name, rest = steps[0], steps[1], steps[2:]
        key = None
        if rest and isinstance(rest[0], tuple):
            key = self.expression(scope, rest[0][0], bindings)
            rest = rest[1:]
        if not rest and key is None:
            # A whole resource, as in {for key, bucket in aws_s3_bucket.data : key => bucket.id}.
            return {
                instance: self.resource_attribute(scope, resource_type, name, instance, None)
                for instance in self.resource_instances(scope, resource_type, name)
            }
        if not rest:
            return self.resource_attribute(scope, resource_type, name, key, None)
        value = self.resource_attribute(scope, resource_type, name, key, rest[0])
        return self._traverse(value, rest[1:], scope, bindings, text)

    # IAM -------------------------------------------------------------------------------------

    def policy_document(self, scope: Scope, reference: str) -> dict:
        """Return the ``aws_iam_policy_document`` block that ``${data.….json}`` names."""
        match = _POLICY_REFERENCE.match(reference)
        if match is None:
            raise UnresolvedValue(f"{reference!r} in {scope.address} is not a policy document")
        return scope.module.data[("aws_iam_policy_document", match.group(1))]

    def statements(self, scope: Scope, document: dict) -> list[dict]:
        """Return a policy document's statements with every value evaluated.

        Values that AWS assigns during an apply (KMS key ARNs, the OIDC
        provider) stay as text, so a test can still compare the actions and
        the resources that do evaluate.
        """
        evaluated = []
        for statement in as_list(document.get("statement")):
            evaluated.append(
                {
                    "sid": statement.get("sid", ""),
                    "effect": statement.get("effect", "Allow"),
                    "actions": as_list(statement.get("actions")),
                    "resources": self._lenient_list(scope, statement.get("resources")),
                    "principals": [
                        {
                            "type": principal["type"],
                            "identifiers": self._lenient_list(scope, principal["identifiers"]),
                        }
                        for principal in as_list(statement.get("principals"))
                    ],
                    "conditions": [
                        {
                            "test": condition["test"],
                            "variable": str(self._lenient(scope, condition["variable"])),
                            "values": self._lenient_list(scope, condition["values"]),
                        }
                        for condition in as_list(statement.get("condition"))
                    ],
                }
            )
        return evaluated

    def _lenient(self, scope: Scope, raw: object) -> object:
        try:
            return self.value(scope, raw)
        except UnresolvedValue:
            return raw

    def _lenient_list(self, scope: Scope, raw: object) -> list:
        value = self._lenient(scope, raw)
        items = []
        for item in as_list(value):
            items.extend(as_list(self._lenient(scope, item)))
        return items
