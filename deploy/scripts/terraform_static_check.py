"""Static checks of deploy/terraform that need no provider (terraform validate needs the AWS
provider, which cannot be downloaded here).

    python deploy/scripts/terraform_static_check.py deploy/terraform

For every module and env directory:
- every variable has a description and a type; every validation condition refers to its own
  variable; every module has at least one validated variable;
- every output has a description;
- every `var.X` and `local.X` used is declared;
- every `module` call points at an existing local module, passes only arguments the module
  declares, passes every variable that has no default, and every `module.M.O` reference names
  an output O the module has (what `terraform validate` would check for module wiring);
- required_providers pin a version for every provider.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2

META_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each", "__is_block__"}


def say(message: str) -> None:
    sys.stdout.write(f"{message}\n")


def unquote(name: str) -> str:
    return name.strip('"')


class Dir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        self.locals: set[str] = set()
        self.providers: dict[str, Any] = {}
        self.text = ""
        for tf in sorted(path.glob("*.tf")):
            raw = tf.read_text()
            self.text += (
                "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in raw.splitlines()) + "\n"
            )
            parsed = hcl2.loads(raw)
            for block in parsed.get("variable", []):
                for name, body in block.items():
                    self.variables[unquote(name)] = body
            for block in parsed.get("output", []):
                for name, body in block.items():
                    self.outputs[unquote(name)] = body
            for block in parsed.get("module", []):
                for name, body in block.items():
                    self.modules[unquote(name)] = body
            for block in parsed.get("locals", []):
                self.locals |= {k for k in block if not k.startswith("__")}
            for block in parsed.get("terraform", []):
                for req in block.get("required_providers", []):
                    self.providers.update({k: v for k, v in req.items() if not k.startswith("__")})


def check(root: Path) -> list[str]:
    problems: list[str] = []
    dirs = sorted(p for p in [*root.glob("modules/*"), *root.glob("envs/*")] if p.is_dir())
    if not dirs:
        return [f"{root}: no modules/ or envs/ directories"]
    loaded = {p.resolve(): Dir(p) for p in dirs}
    for d in loaded.values():
        where = d.path.relative_to(root.parent)
        if not d.providers:
            problems.append(f"{where}: no required_providers")
        for provider, spec in d.providers.items():
            if not (isinstance(spec, dict) and spec.get("version")):
                problems.append(f"{where}: provider {provider} has no version constraint")
        validated = 0
        for name, body in d.variables.items():
            if not unquote(str(body.get("description", ""))).strip():
                problems.append(f"{where}: variable {name} has no description")
            if "type" not in body:
                problems.append(f"{where}: variable {name} has no type")
            for validation in body.get("validation", []):
                validated += 1
                if f"var.{name}" not in str(validation.get("condition", "")):
                    problems.append(f"{where}: validation of {name} does not test var.{name}")
        if d.path.parent.name == "modules" and d.variables and not validated:
            problems.append(f"{where}: no variable has a validation block")
        for name, body in d.outputs.items():
            if not unquote(str(body.get("description", ""))).strip():
                problems.append(f"{where}: output {name} has no description")
        for used in sorted(set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", d.text))):
            if used not in d.variables:
                problems.append(f"{where}: var.{used} is not declared")
        for used in sorted(set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", d.text))):
            if used not in d.locals:
                problems.append(f"{where}: local.{used} is not declared")
        for name, call in d.modules.items():
            source = unquote(str(call.get("source", "")))
            target = (d.path / source).resolve()
            if target not in loaded:
                problems.append(f"{where}: module {name} source {source} is not a module here")
                continue
            module = loaded[target]
            args = {k for k in call if k not in META_ARGS}
            for extra in sorted(args - set(module.variables)):
                problems.append(
                    f"{where}: module {name} passes {extra}, which {source} does not declare"
                )
            required = {v for v, body in module.variables.items() if "default" not in body}
            for missing in sorted(required - args):
                problems.append(f"{where}: module {name} does not pass required variable {missing}")
        for mod, out in sorted(
            set(
                re.findall(r"\bmodule\.([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)", d.text)
            )
        ):
            if mod not in d.modules:
                problems.append(f"{where}: module.{mod} is not declared")
                continue
            target = (d.path / unquote(str(d.modules[mod].get("source", "")))).resolve()
            if target in loaded and out not in loaded[target].outputs:
                problems.append(f"{where}: module.{mod}.{out}: {target.name} has no output {out}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "deploy/terraform")
    problems = check(root)
    for problem in problems:
        say(f"FAIL {problem}")
    count = len(list(root.glob("modules/*"))) + len(list(root.glob("envs/*")))
    say(f"terraform static check: {count} directories, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
