"""Give a hardware profile written before the zero-moment step was timed that measurement, from a
newer calibration of the same machine, so that runs measured against the older profile can be
predicted again with the idle elements' cost (docs/cost-model.md 3.4):

    simtune calibrate --gpus 2 --quick --no-engines --name now --out /tmp/now
    python benchmarks/carry_zero_state.py OLD.json /tmp/now/now.json NEW.json

Each optimizer fit of OLD that NEW times with moments at 0 gets a ``zero_state`` point at OLD's
largest size. A VM's speed drifts between days, so what carries over is the ratio NEW measured
side by side, (zero-moment step - ordinary step) / ordinary step at its largest size, applied to
OLD's ordinary step at its largest size. Prints each fit's carried cost per element.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simtune.hardware import load_profile


def carried(old: dict, new: dict) -> list[str]:
    """Adds the zero-moment points to ``old`` in place; returns the fits given one."""
    names = []
    for name, fit in old["optimizer"]["fits"].items():
        source = new["optimizer"]["fits"].get(name, {})
        zero = source.get("zero_state")
        ordinary = next((p for p in source.get("points", ()) if zero and p["size"] == zero["size"]), None)
        if ordinary is None:
            continue
        ratio = max(0.0, zero["stats"]["min_s"] / ordinary["stats"]["min_s"] - 1.0)
        largest = max(fit["points"], key=lambda p: p["size"])
        seconds = largest["stats"]["min_s"] * (1.0 + ratio)
        fit["zero_state"] = {"size": largest["size"],
                             "stats": {"min_s": seconds, "median_s": seconds, "max_s": seconds, "repeats": 1}}
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the profile the runs were predicted with")
    parser.add_argument("new", type=Path, help="a newer calibration of the same machine")
    parser.add_argument("out", type=Path, help="where to write the old profile with the carried points")
    args = parser.parse_args(argv)
    old, new = (json.loads(path.read_text()) for path in (args.old, args.new))
    names = carried(old, new)
    if not names:
        print(f"{args.new} times no optimizer step with moments at 0.", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=1) + "\n")
    fits = load_profile(args.out).optimizer.fits
    for name in names:
        print(f"{name}: {fits[name].zero_state_s_per_param * 1e9:.2f} ns per element with moments at 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
