"""Write docs/status-page.png: a lab of 3 servers and 2 front ends, a few
names (claimed with a token, open, IPv4 and IPv6), a few seconds of updates
and queries so the rates show, then front end 0's status page in headless
chromium at 1280x800.

    .venv/bin/python scripts/status_page_screenshot.py [--out PATH] [--seed N]

Everything it starts (the lab, the browser) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mydns_lab.experiments.browser import find_chromium, screenshot  # noqa: E402
from mydns_lab.experiments.labprocess import LabProcess  # noqa: E402

NAMES: list[tuple[str, str | list[str], str | None]] = [
    ("gpu1", "10.1.2.3", "t-gpu"), ("build-02", ["10.1.2.17", "2001:db8:0:1::17"], "t-build"),
    ("nas", ["10.1.4.2", "2001:db8:0:4::2"], "t-nas"), ("printer", "10.1.2.40", None),
    ("alice-laptop", "192.168.7.23", "t-alice"), ("camera-lobby", "10.1.9.8", None),
    ("ci-runner-1", "10.1.3.11", "t-ci1"), ("ci-runner-2", "10.1.3.12", "t-ci2")]
TRAFFIC_S = 6.0  # how long updates and queries run before the shot, so both rates show


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "status-page.png")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mydns-shot-") as tmp:
        with LabProcess(Path(tmp) / "data", nservers=3, nclerks=2, seed=args.seed) as lab:
            for name, value, token in NAMES:
                request: dict[str, object] = {"Type": "Put", "Key": name, "Value": value}
                if token:
                    request["Token"] = token
                reply = lab.call(0, request)
                if reply.get("Type") != "PutOk":
                    print(f"put {name} failed: {reply}", file=sys.stderr)
                    return 1
            until = time.monotonic() + TRAFFIC_S
            while time.monotonic() < until:  # the traffic itself, not a wait
                lab.call(0, {"Type": "Put", "Key": "gpu1", "Value": "10.1.2.3", "Token": "t-gpu"})
                for name, _, _ in NAMES[:4]:
                    lab.call(0, {"Type": "Query", "Key": name})
            shot = screenshot(f"http://127.0.0.1:{lab.http_port}/", args.out, binary=chromium)
    print(f"wrote {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
