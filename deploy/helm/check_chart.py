"""Static checks of a Helm chart where no `helm` binary is available (scripts/dev/check-deploy.sh).

Not a renderer: it catches what breaks charts most often without one. Chart.yaml and values.yaml must
parse; every `.Values.a.b` path a template uses must exist in values.yaml; and every template must be
YAML once its template actions are blanked out (indentation, lists, flow mappings, stray colons).
"""

import re
import sys
from pathlib import Path

import yaml

ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
VALUES_PATH = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def strip_defines(text: str) -> str:
    """Removes `define` blocks (fragments spliced elsewhere with nindent), nested if/range/with included."""
    out, pos, depth, start = [], 0, 0, 0
    for m in ACTION.finditer(text):
        word = (m.group(1).split() or [""])[0]
        if depth == 0 and word == "define":
            out.append(text[pos : m.start()])
            depth, start = 1, m.start()
        elif depth and word in ("if", "range", "with", "define", "block"):
            depth += 1
        elif depth and word == "end":
            depth -= 1
            if depth == 0:
                pos = m.end()
    out.append(text[pos:] if depth == 0 else text[pos:start])
    return "".join(out)


def blank_actions(text: str) -> str:
    """Lines holding only actions go; an action inside a line becomes a plain scalar."""
    out = []
    for line in text.splitlines():
        stripped = ACTION.sub("", line).strip()
        if not stripped:
            continue  # control flow, include ... | nindent, toYaml ... | nindent
        out.append(ACTION.sub("x", line))
    return "\n".join(out) + "\n"


def main(chart: Path) -> int:
    errors = []
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for key in ("apiVersion", "name", "version"):
        if not meta.get(key):
            errors.append(f"Chart.yaml: {key} missing")
    if meta.get("apiVersion") != "v2":
        errors.append("Chart.yaml: apiVersion must be v2")
    values = yaml.safe_load((chart / "values.yaml").read_text())

    checked = 0
    for path in sorted((chart / "templates").glob("*")):
        text = path.read_text()
        for expr in ACTION.findall(text):
            for ref in VALUES_PATH.findall(expr):
                node = values
                for part in ref.strip(".").split("."):
                    if not isinstance(node, dict) or part not in node:
                        errors.append(f"{path.name}: .Values{ref} is not in values.yaml")
                        break
                    node = node[part]
        if path.suffix != ".yaml":
            continue
        # `define` blocks are fragments spliced elsewhere with nindent: parse them on their own.
        body = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.S)
        body = strip_defines(body)
        try:
            docs = [d for d in yaml.safe_load_all(blank_actions(body)) if d is not None]
        except yaml.YAMLError as e:
            errors.append(f"{path.name}: not YAML once actions are blanked: {e}")
            continue
        for d in docs:
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                errors.append(f"{path.name}: a document without kind/apiVersion")
        checked += len(docs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not errors:
        print(f"chart {meta['name']} {meta['version']}: {checked} manifests parse, all .Values paths exist")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/helm/novapay")))
