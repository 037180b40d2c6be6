"""The detector reference (docs/detectors.md), generated from the registry.

``python -m detectors.reference`` rewrites docs/detectors.md; ``--check`` exits 1 when the
committed file differs from what the registry generates (tests/unit/test_registry.py checks it too).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from detectors.engine import EngineLimits
from detectors.families import REGISTRY
from detectors.registry import Family, Registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "detectors.md"


def _options(config: type) -> list[str]:
    out = ["| option | default | what it sets |", "| --- | --- | --- |"]
    out += [f"| `{f.name}` | `{f.default!r}` | {f.metadata.get('doc', '')} |" for f in dataclasses.fields(config)]
    return out


def _family(f: Family) -> list[str]:
    out = [f"## Family `{f.name}` ({f.kind})", "", f.doc, ""]
    if f.switch:
        out += [f"Optional: on when `{f.switch}` is true.", ""]
    for d in f.detectors:
        on = "on by default" if d.default_on else f"optional (`{f.switch}`)"
        where = "" if d.engine else "; raised by the worker's correlator, not the engine"
        out += [f"### `{d.name}`", "", f"**{d.title}.** Entity: {d.entity_type}; {on}; one alert per episode, "
                f"cooldown {d.cooldown_s:,} s{where}. Tags: {', '.join(f'`{t}`' for t in d.tags)}.", "",
                d.decides, ""]
    if f.config is not None:
        out += ["### Options", "", *_options(f.config), ""]
    if f.columns or f.novelty or f.tables:
        out += ["### State", "", "| state | what it holds | how it is bounded |", "| --- | --- | --- |"]
        out += [f"| column `{c.namespace}.{c.name}` | {c.doc} | {c.eviction} |" for c in f.columns]
        out += [f"| novelty set `{s.name}` | {s.doc} | {s.eviction} |" for s in f.novelty]
        out += [f"| table `{t.name}` | {t.doc} | {t.eviction} |" for t in f.tables]
        out.append("")
    return out


def render(registry: Registry = REGISTRY, limits: type = EngineLimits) -> str:
    """The reference of every family of ``registry`` (``limits``: the engine's own options)."""
    out = ["# Detector reference", "",
           "Generated from the detector registry (`detectors/families/`) by `python -m detectors.reference`; "
           "do not edit by hand.", "",
           "Each family reads one event kind and raises several detectors over one shared feature stage. "
           "Every option below is a field of `detectors.engine.EngineConfig`.", "",
           "| detector | family | kind | entity | default |", "| --- | --- | --- | --- | --- |"]
    for f in registry.families:
        for d in f.detectors:
            default = "on" if d.default_on else "optional"
            out.append(f"| `{d.name}` | {f.name} | {f.kind} | {d.entity_type} | "
                       f"{default if d.engine else 'correlator'} |")
    out += ["", "## Engine options", "", *_options(limits), ""]
    for f in registry.families:
        out += _family(f)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/detectors.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m detectors.reference", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
