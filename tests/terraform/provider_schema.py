"""Provider schemas read from the .jsii manifests of the prebuilt CDK-for-Terraform bindings (npm), and a checker of
the arguments, blocks and attribute references a module writes against them.

Each binding generates, per resource and data source, a class (``tfResourceType`` documented in its summary link) whose
``config`` struct lists the arguments and blocks (a property is required unless ``optional``; the Terraform name is the
anchor of its registry link) and whose getters are the readable attributes. Nested blocks are structs of their own.
The manifests carry no ``deprecated`` flag, so deprecation is read from the descriptions ("Deprecated", "deprecated:",
"will be removed") where the provider states it there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_DIR = Path(__file__).with_name("provider-schemas")
PACKAGES = {"aws": "@cdktf/provider-aws", "azurerm": "@cdktf/provider-azurerm", "google": "@cdktf/provider-google"}
BASES = ("cdktf.TerraformResource", "cdktf.TerraformDataSource")
PROVIDER_BASE = "cdktf.TerraformProvider"
META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
_LINK = re.compile(r"registry\.terraform\.io/providers/hashicorp/(\w+)/([\w.]+)/docs/(resources|data-sources)/(\w+)")
_ANCHOR = re.compile(r"#(\w+)[ }]")
_DEPRECATED = re.compile(r"\bdeprecated\b(?! python)|will be removed in", re.IGNORECASE)


def snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


@dataclass
class Block:
    """Arguments (name -> required) and nested blocks of a resource, data source or block."""

    arguments: dict[str, bool] = field(default_factory=dict)
    blocks: dict[str, tuple[bool, Block]] = field(default_factory=dict)
    deprecated: set[str] = field(default_factory=set)


@dataclass
class Kind:
    tf_type: str
    config: Block
    attributes: dict[str, str | None]  # readable attribute -> fqn of its element type when it is nested, else None


class ProviderSchema:
    """One provider's resources and data sources from its binding's .jsii manifest."""

    def __init__(self, provider: str, jsii_path: Path):
        manifest = json.loads(jsii_path.read_text())
        self.provider = provider
        self.package_version = manifest["version"]
        self._types: dict[str, dict] = manifest["types"]
        self.provider_version = ""
        self.resources: dict[str, Kind] = {}
        self.data_sources: dict[str, Kind] = {}
        self.provider_config = Block()  # the arguments and blocks of the provider block itself
        for t in self._types.values():
            if t.get("kind") == "class" and t.get("base") == PROVIDER_BASE:
                config_fqn = next(p["type"]["fqn"] for p in t["initializer"]["parameters"] if p["name"] == "config")
                self.provider_config = self._block(config_fqn, set())
            if t.get("kind") != "class" or t.get("base") not in BASES:
                continue
            link = _LINK.search(t.get("docs", {}).get("summary", ""))
            if not link:
                continue
            self.provider_version = link.group(2)
            tf_type = f"{provider}_{link.group(4)}"
            config_fqn = next(p["type"]["fqn"] for p in t["initializer"]["parameters"] if p["name"] == "config")
            kind = Kind(tf_type, self._block(config_fqn, set()), self._getters(t))
            (self.resources if link.group(3) == "resources" else self.data_sources)[tf_type] = kind

    def _struct_fqn(self, type_ref: dict) -> str | None:
        """The struct fqn of a block-typed property (a struct, or a list of structs, maybe IResolvable-unioned)."""
        candidates = type_ref.get("union", {}).get("types", [type_ref])
        for c in candidates:
            fqn = c.get("fqn") or c.get("collection", {}).get("elementtype", {}).get("fqn")
            if fqn and fqn in self._types and self._types[fqn].get("datatype"):
                return fqn
        return None

    def _block(self, fqn: str, seen: set[str]) -> Block:
        block = Block()
        for prop in self._types[fqn].get("properties", []):
            docs = prop.get("docs", {})
            text = " ".join((docs.get("summary", ""), docs.get("remarks", "")))
            anchor = _ANCHOR.findall(text)
            name = anchor[0] if anchor else snake(prop["name"])
            required = not prop.get("optional", False)
            if _DEPRECATED.search(text):
                block.deprecated.add(name)
            struct = self._struct_fqn(prop["type"])
            if struct and struct not in seen:
                block.blocks[name] = (required, self._block(struct, seen | {struct}))
            else:
                block.arguments[name] = required
        return block

    def _getters(self, cls: dict) -> dict[str, str | None]:
        found = {}
        for prop in cls.get("properties", []):
            if prop.get("static") or prop["name"].endswith("Input") or prop["name"].startswith("terraform"):
                continue
            found[snake(prop["name"])] = self._element_fqn(prop["type"])
        return found

    def _element_fqn(self, type_ref: dict) -> str | None:
        """For a nested attribute (a *List / *OutputReference class), the class holding its element's getters."""
        fqn = type_ref.get("fqn")
        if not fqn or fqn not in self._types:
            return None
        t = self._types[fqn]
        for method in t.get("methods", []):
            if method["name"] == "get" and "returns" in method:
                return method["returns"]["type"].get("fqn")
        return fqn if t.get("kind") == "class" else None

    def element_attributes(self, fqn: str) -> set[str]:
        return set(self._getters(self._types[fqn]))


@dataclass
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    arguments_checked: int = 0
    blocks_checked: int = 0
    references_checked: int = 0


def _dynamic_blocks(body: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in body.get("dynamic", []):
        for name, spec in entry.items():
            out.setdefault(name, []).extend(spec.get("content", [{}]))
    return out


def check_body(body: dict, schema: Block, where: str, report: Report) -> None:
    written = {k: v for k, v in body.items() if k not in META_ARGUMENTS and k != "dynamic"}
    dynamic = _dynamic_blocks(body)
    for name, value in written.items():
        if name in schema.blocks:
            report.blocks_checked += 1
            contents = value if isinstance(value, list) else [value]
            for i, content in enumerate(contents):
                if isinstance(content, dict):
                    check_body(content, schema.blocks[name][1], f"{where}.{name}[{i}]", report)
        elif name in schema.arguments:
            report.arguments_checked += 1
        else:
            report.problems.append(Problem(where, f"unknown argument or block {name!r}"))
        if name in schema.deprecated:
            report.problems.append(Problem(where, f"{name!r} is deprecated"))
    for name, contents in dynamic.items():
        if name not in schema.blocks:
            report.problems.append(Problem(where, f"unknown dynamic block {name!r}"))
            continue
        report.blocks_checked += 1
        for i, content in enumerate(contents):
            check_body(content, schema.blocks[name][1], f"{where}.dynamic.{name}[{i}]", report)
    for name, required in schema.arguments.items():
        if required and name not in written:
            report.problems.append(Problem(where, f"missing required argument {name!r}"))
    for name, (required, _) in schema.blocks.items():
        if required and name not in written and name not in dynamic:
            report.problems.append(Problem(where, f"missing required block {name!r}"))


_REF = re.compile(r"(?<![\w.])(data\.)?([a-z][a-z0-9]*_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")
_FOR = re.compile(r"for (\w+) in (data\.)?([a-z][a-z0-9]*_[a-z0-9_]+)\.([a-z0-9_]+)(?:\.([a-z0-9_]+))?\s*:")
_SPLAT = re.compile(r"(?<![\w.])(data\.)?([a-z][a-z0-9]*_[a-z0-9_]+)\.([a-z0-9_]+)\.([a-z0-9_]+)\[\*\]\.([a-z0-9_]+)")


def _for_body(text: str, start: int) -> str:
    """The text of a for expression's body: up to the line closing it (a line starting with ] or })."""
    end = re.search(r"\n\s*[\]}]", text[start:])
    return text[start:start + (end.start() if end else 400)]


def check_references(text: str, schemas: dict[str, ProviderSchema], declared: set[tuple[str, str, str]],
                     where: str, report: Report) -> None:
    """Attribute references ``[data.]TYPE.NAME.ATTR`` and, in ``for X in ...`` expressions, ``X.ATTR``."""
    def kind_of(is_data: str | None, tf_type: str) -> Kind | None:
        schema = schemas.get(tf_type.split("_", 1)[0])
        if schema is None:
            return None
        return (schema.data_sources if is_data else schema.resources).get(tf_type)

    for m in _REF.finditer(text):
        is_data, tf_type, name, attr = m.groups()
        if ("data" if is_data else "resource", tf_type, name) not in declared:
            continue
        kind = kind_of(is_data, tf_type)
        if kind is None:
            report.problems.append(Problem(where, f"{m.group(0)}: no such {'data source' if is_data else 'resource'}"))
            continue
        report.references_checked += 1
        if attr not in kind.attributes:
            report.problems.append(Problem(where, f"{m.group(0)}: {tf_type} has no attribute {attr!r}"))
    for m in _SPLAT.finditer(text):
        is_data, tf_type, name, attr, sub = m.groups()
        kind = kind_of(is_data, tf_type)
        if kind is None or kind.attributes.get(attr) is None:
            continue
        report.references_checked += 1
        if sub not in schemas[tf_type.split("_", 1)[0]].element_attributes(kind.attributes[attr]):
            report.problems.append(Problem(where, f"{m.group(0)}: an element of {tf_type}.{attr} has no {sub!r}"))
    for m in _FOR.finditer(text):
        var, is_data, tf_type, name, attr = m.groups()
        expr = _for_body(text, m.end())
        kind = kind_of(is_data, tf_type)
        if kind is None or ("data" if is_data else "resource", tf_type, name) not in declared:
            continue
        if attr is None:  # iterating a counted resource: its elements are instances of the kind itself
            readable = set(kind.attributes)
        else:
            fqn = kind.attributes.get(attr)
            if fqn is None:
                continue  # the attribute itself is reported above if unknown
            readable = schemas[tf_type.split("_", 1)[0]].element_attributes(fqn)
        for used in re.findall(rf"\b{var}\.([a-z0-9_]+)", expr):
            report.references_checked += 1
            if used not in readable:
                report.problems.append(Problem(where, f"{var}.{used}: an element of {tf_type}"
                                                      f"{'.' + attr if attr else ''} has no attribute {used!r}"))


def check_module(module: dict, text: str, schemas: dict[str, ProviderSchema], module_name: str) -> Report:
    """Check every resource and data source body of a parsed module (tf_support.load_module) and its references."""
    report = Report()
    declared: set[tuple[str, str, str]] = set()
    for kind_key, label in (("resource", "resource"), ("data", "data")):
        for block in module.get(kind_key, []):
            for tf_type, named in block.items():
                for name, body in named.items():
                    declared.add((label, tf_type, name))
                    schema = schemas.get(tf_type.split("_", 1)[0])
                    where = f"{module_name}: {'data.' if label == 'data' else ''}{tf_type}.{name}"
                    if schema is None:
                        report.problems.append(Problem(where, "no schema for this provider"))
                        continue
                    kinds = schema.data_sources if label == "data" else schema.resources
                    if tf_type not in kinds:
                        what = "data source" if label == "data" else "resource"
                        report.problems.append(Problem(where, f"unknown {what} type"))
                        continue
                    check_body(body, kinds[tf_type].config, where, report)
    check_references(text, schemas, declared, module_name, report)
    return report


def check_providers(module: dict, schemas: dict[str, ProviderSchema], module_name: str) -> Report:
    """Check every ``provider`` block of a parsed module against its provider's own configuration schema."""
    report = Report()
    for block in module.get("provider", []):
        for name, body in block.items():
            where = f"{module_name}: provider.{name}"
            if name not in schemas:
                report.problems.append(Problem(where, "no schema for this provider"))
                continue
            check_body(body, schemas[name].provider_config, where, report)
    return report
