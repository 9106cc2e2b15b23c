"""``put.py --install-service``: the systemd unit it writes runs the same
command line for good, and a unit written by hand is left alone."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mydns_lab.clients.put import main
from mydns_lab.clients.putservice import MARKER, _systemd_word
from mydns_lab.experiments.labprocess import free_port_range

REPO = Path(__file__).resolve().parents[1]


def exec_start(unit: Path) -> list[str]:
    """The unit's command, as systemd reads it (no specifier in ours but %%)."""
    line = next(l for l in unit.read_text().splitlines() if l.startswith("ExecStart="))
    return [word.replace("%%", "%").replace("$$", "$")
            for word in shlex.split(line.removeprefix("ExecStart="))]


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out, err = io.StringIO(), io.StringIO()
    code = main(["gpu1", "--install-service", "user", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_user_unit_runs_the_same_command_line(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_range(1, 47000)   # nothing listens there
    tokens = tmp_path / "my tokens %d.json"
    code, out, _ = install(tmp_path, monkeypatch, "--server", f"127.0.0.1:{port}",
                           "--ip", "10.1.2.3", "--token-file", str(tokens), "--interval", "30")
    unit = tmp_path / "config" / "systemd" / "user" / "mydns-put-gpu1.service"
    assert code == 0 and out.strip() == (
        f"wrote {unit}; start it now and at every boot with: systemctl --user daemon-reload "
        "&& systemctl --user enable --now mydns-put-gpu1.service")
    text = unit.read_text()
    assert text.startswith(MARKER + "\n[Unit]\n") and "WantedBy=default.target" in text
    assert "Restart=on-failure" in text and "After=network-online.target" in text
    command = exec_start(unit)
    assert command == [sys.executable, "-m", "mydns_lab", "put", "gpu1",
                       "--server", f"127.0.0.1:{port}", "--ip", "10.1.2.3", "--zone", "mydns.",
                       "--interval", "30", "--token-file", str(tokens)]
    # The command runs: once, against a port nobody listens on, it says so.
    done = subprocess.run([*command, "--once", "--deadline", "0.5"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no front end answered the upload of gpu1.mydns." in \
        done.stderr, done.stderr
    assert not (tmp_path / "config" / "mydns").exists(), "installing uploads nothing"


def test_a_unit_written_by_hand_is_left_alone(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    unit = tmp_path / "config" / "systemd" / "user" / "mydns-put-gpu1.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    code, _, err = install(tmp_path, monkeypatch)
    assert code == 2 and "was not written by put.py --install-service" in err
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    unit.unlink()
    assert install(tmp_path, monkeypatch)[0] == 0
    assert install(tmp_path, monkeypatch, "--interval", "90")[0] == 0, "its own: replaced"
    assert "--interval 90" in unit.read_text()


@pytest.mark.parametrize("word, written", [
    ("plain/path", "plain/path"), ("a b", '"a b"'), ("50%", "50%%"), ("$HOME", "$$HOME"),
    ('say "hi"', '"say \\"hi\\""')])
def test_words_are_written_as_systemd_reads_them(word: str, written: str) -> None:
    assert _systemd_word(word) == written
