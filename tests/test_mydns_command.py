"""The ``mydns`` command: its subcommands (``lab``, ``put``, ``query``,
``keygen``, ``resolver``), ``python -m mydns_lab`` with flags alone still
running the lab, and the console script pip installs.

The resolver tests write under ``tmp_path`` (the hidden ``--root``), never
under the real ``/etc``; the one test of the real root's privilege check
stops before anything is written.
"""

from __future__ import annotations

import base64
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mydns_lab.__main__ import COMMANDS, main
from mydns_lab.clients import resolver
from mydns_lab.clients.keygen import SECRET_BYTES
from mydns_lab.dns.tsig import KeyRing
from mydns_lab.experiments.labprocess import REPO, free_port_range


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``mydns argv...`` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_error_line(status: int, err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and all(w in lines[0] for w in words), err
    assert "Traceback" not in err
    return lines[0]


# --- the dispatcher -----------------------------------------------------------------------

@pytest.mark.parametrize("command, usage", [
    ("lab", "usage: sh run_dns.sh"), ("put", "usage: mydns put"),
    ("query", "usage: mydns query"), ("keygen", "usage: mydns keygen"),
    ("resolver", "usage: mydns resolver")])
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], command: str,
                                   usage: str) -> None:
    status, out, err = _run(capsys, command, "--help")
    assert status == 0 and out.startswith(usage) and not err, out + err


def test_help_without_a_command_lists_the_commands_and_the_labs_flags() -> None:
    proc = subprocess.run([sys.executable, "-m", "mydns_lab", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    for command in COMMANDS:
        assert f"\n  {command} " in proc.stdout
    for flag in ("--nservers", "--dnsDuration", "--crash", "--zone", "--keys"):
        assert flag in proc.stdout


@pytest.mark.parametrize("argv", [["--nservers", "0"], ["lab", "--nservers", "0"]])
def test_flags_alone_and_lab_run_the_lab(capsys: pytest.CaptureFixture[str],
                                         argv: list[str]) -> None:
    """The lab's own parser answers (it refuses before starting anything)."""
    status, _, err = _run(capsys, *argv)
    _one_error_line(status, err, "sh run_dns.sh: error: argument --nservers")


def test_an_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "serve")
    _one_error_line(status, err, "mydns: error: unknown command 'serve'", "resolver")


@pytest.mark.parametrize("argv, words", [
    (["put", "--bogus"], ["mydns put: error: unrecognized arguments: --bogus"]),
    (["query"], ["mydns query: error:", "NAME"]),
    (["put", "laptop", "--interval", "0"], ["--interval"]),
])
def test_clients_keep_their_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                         words: list[str]) -> None:
    status, _, err = _run(capsys, *argv)
    _one_error_line(status, err, *words)


# --- keygen -------------------------------------------------------------------------------

def test_keygen_prints_a_keys_file_line_with_a_fresh_32_byte_secret(
        capsys: pytest.CaptureFixture[str]) -> None:
    secrets_seen = set()
    for _ in range(5):
        status, out, err = _run(capsys, "keygen", "laptop")
        assert status == 0 and not err
        comment, line = out.splitlines()
        ring = KeyRing.parse(out)
        key = ring.get("laptop")
        assert len(ring) == 1 and key is not None and key.grants == ()
        assert len(key.secret) == SECRET_BYTES == 32
        encoded = base64.b64encode(key.secret).decode()
        assert line == f"laptop {encoded}"
        assert comment.startswith("# key laptop may change laptop.mydns.;")
        assert f"nsupdate -y hmac-sha256:laptop:{encoded}" in comment
        secrets_seen.add(key.secret)
    assert len(secrets_seen) == 5


def test_keygen_grants_and_zone(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "keygen", "Lab-Admin", "gpu1.lab", "*.lab",
                          "--zone", "Home.Example")
    assert status == 0
    key = KeyRing.parse(out).get("lab-admin")
    assert key is not None and key.grants == ("gpu1.lab", "*.lab")
    assert key.grants_name("x.lab", "home.example.") and not key.grants_name("lab", "home.example.")
    assert ("may change gpu1.lab.home.example., every name below lab.home.example.;"
            in out.splitlines()[0])


@pytest.mark.parametrize("argv, words", [
    (["keygen"], ["the following arguments are required: NAME"]),
    (["keygen", "bad name"], ["key name 'bad name'"]),
    (["keygen", "laptop", "gpu_1"], ["granted name 'gpu_1'"]),
    (["keygen", "laptop", "--zone", "."], ["--zone must not be empty"]),
])
def test_keygen_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture[str],
                                              argv: list[str], words: list[str]) -> None:
    status, out, err = _run(capsys, *argv)
    _one_error_line(status, err, "mydns keygen: error:", *words)
    assert not out


# --- resolver -----------------------------------------------------------------------------

SYSTEMD_FILE = "etc/systemd/resolved.conf.d/mydns-mydns.conf"
MACOS_FILE = "etc/resolver/mydns"


def _systemd_root(tmp_path: Path) -> Path:
    """A root where systemd-resolved runs."""
    (tmp_path / "run/systemd/resolve").mkdir(parents=True)
    return tmp_path


def _resolver(capsys: pytest.CaptureFixture[str], root: Path, *argv: str
              ) -> tuple[int, str, str]:
    return _run(capsys, "resolver", *argv, "--root", str(root))


@pytest.mark.parametrize("layout, relative, text", [
    ("systemd", SYSTEMD_FILE, "[Resolve]\nDNS=127.0.0.1:9876\nDomains=~mydns\n"),
    ("macos", MACOS_FILE, "nameserver 127.0.0.1\nport 9876\n")])
def test_resolver_install_then_uninstall(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         layout: str, relative: str, text: str) -> None:
    root = _systemd_root(tmp_path)
    path = root / relative
    status, out, err = _resolver(capsys, root, "install", "--server", "127.0.0.1:9876",
                                 "--layout", layout)
    assert status == 0 and not err, err
    assert path.read_text() == resolver.MARKER + "\n" + text
    assert path.stat().st_mode & 0o777 == 0o644
    assert f"wrote {path}" in out
    if layout == "systemd":  # a test root: it says what to run rather than running it
        assert "now run: systemctl restart systemd-resolved" in out
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left

    status, out, _ = _resolver(capsys, root, "install", "--server", "127.0.0.1:9876",
                               "--layout", layout)
    assert status == 0 and "unchanged" in out

    status, out, err = _resolver(capsys, root, "uninstall", "--layout", layout)
    assert status == 0 and not err and f"removed {path}" in out
    assert not path.exists() and path.parent.is_dir()

    status, out, _ = _resolver(capsys, root, "uninstall", "--layout", layout)
    assert status == 0 and "nothing to remove" in out


@pytest.mark.parametrize("layout, relative", [("systemd", SYSTEMD_FILE),
                                              ("macos", MACOS_FILE)])
def test_resolver_dry_run_changes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          layout: str, relative: str) -> None:
    root = _systemd_root(tmp_path)
    path = root / relative
    status, out, _ = _resolver(capsys, root, "install", "--server", "127.0.0.1:9876",
                               "--layout", layout, "--dry-run")
    assert status == 0
    assert out.startswith(f"would write {path}:\n{resolver.MARKER}\n")
    assert not path.parent.exists()

    _resolver(capsys, root, "install", "--server", "127.0.0.1:9876", "--layout", layout)
    before = path.read_text()
    status, out, _ = _resolver(capsys, root, "install", "--server", "10.0.0.5:53",
                               "--layout", layout, "--dry-run")
    assert status == 0 and "10.0.0.5" in out and path.read_text() == before
    status, out, _ = _resolver(capsys, root, "uninstall", "--layout", layout, "--dry-run")
    assert status == 0 and f"would remove {path}" in out and path.read_text() == before


def test_resolver_other_zone_ipv6_and_a_new_server(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    root = _systemd_root(tmp_path)
    path = root / "etc/systemd/resolved.conf.d/mydns-home.example.conf"
    argv = ["install", "--zone", "Home.Example.", "--layout", "systemd", "--server"]
    assert _resolver(capsys, root, *argv, "127.0.0.1:9876")[0] == 0
    assert _resolver(capsys, root, *argv, "[::1]:5353")[0] == 0
    assert path.read_text().splitlines()[1:] == ["[Resolve]", "DNS=[::1]:5353",
                                                 "Domains=~home.example"]
    assert _resolver(capsys, root, "install", "--zone", "home.example", "--layout", "macos",
                     "--server", "::1:5353")[0] == 0
    assert (root / "etc/resolver/home.example").read_text().splitlines()[1:] == [
        "nameserver ::1", "port 5353"]


@pytest.mark.parametrize("server, words", [
    ("example.com:53", ["expected ADDR:PORT with an IP address", "'example.com:53'"]),
    ("127.0.0.1", ["expected ADDR:PORT"]),
    ("127.0.0.1:70000", ["expected ADDR:PORT"]),
    ("0.0.0.0:9876", ["every address of a host"]),
])
def test_resolver_refuses_a_bad_address(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        server: str, words: list[str]) -> None:
    status, _, err = _resolver(capsys, _systemd_root(tmp_path), "install", "--server", server,
                               "--layout", "systemd")
    _one_error_line(status, err, "mydns resolver: error: argument --server:", *words)
    assert not (tmp_path / "etc").exists()


def test_resolver_install_needs_a_server(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    status, _, err = _resolver(capsys, tmp_path, "install", "--layout", "macos")
    _one_error_line(status, err, "install needs --server ADDR:PORT")


def test_resolver_needs_systemd_resolved_running(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    for extra in ([], ["--dry-run"]):
        status, _, err = _resolver(capsys, tmp_path, "install", "--server", "127.0.0.1:9876",
                                   "--layout", "systemd", *extra)
        _one_error_line(status, err, "systemd-resolved is not running here",
                        "systemctl enable --now systemd-resolved")
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("layout, relative", [("systemd", SYSTEMD_FILE),
                                              ("macos", MACOS_FILE)])
def test_resolver_leaves_a_file_it_did_not_write_alone(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, layout: str, relative: str) -> None:
    root = _systemd_root(tmp_path)
    path = root / relative
    path.parent.mkdir(parents=True)
    path.write_text("nameserver 192.0.2.1\n")
    for argv in (["install", "--server", "127.0.0.1:9876"], ["uninstall"],
                 ["uninstall", "--dry-run"]):
        status, _, err = _resolver(capsys, root, *argv, "--layout", layout)
        _one_error_line(status, err, str(path), "not written by mydns resolver install")
        assert path.read_text() == "nameserver 192.0.2.1\n"


def test_resolver_on_the_real_root_needs_root(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The check comes before any write (the zone is one nobody installs)."""
    monkeypatch.setattr(resolver.os, "geteuid", lambda: 1000)
    zone = "mydns-root-check.invalid"
    assert not Path("/etc/resolver", zone).exists()
    status, _, err = _run(capsys, "resolver", "install", "--server", "127.0.0.1:9876",
                          "--zone", zone, "--layout", "macos")
    _one_error_line(status, err, f"changing /etc/resolver/{zone} needs root",
                    "sudo", "--dry-run")
    assert not Path("/etc/resolver", zone).exists()


def test_resolver_layout_follows_the_platform() -> None:
    assert resolver.detected_layout("linux") == "systemd"
    assert resolver.detected_layout("darwin") == "macos"
    with pytest.raises(resolver.ResolverError, match="--layout systemd or --layout macos"):
        resolver.detected_layout("win32")


# --- the console script -------------------------------------------------------------------

def test_pyproject_declares_the_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["mydns"].partition(":")
    assert (module, function) == ("mydns_lab.__main__", "main")


def _installed_script() -> Path:
    """``mydns`` beside this python (pip install -e . puts it in .venv/bin)."""
    entry = [e for e in importlib.metadata.entry_points(group="console_scripts")
             if e.name == "mydns"]
    if not entry:
        pytest.skip("the installed mydns_lab predates the mydns script; reinstall it "
                    "(sh run_tests.sh does: scripts/ensure_venv.sh reinstalls when "
                    "pyproject.toml changed)")
    assert entry[0].value == "mydns_lab.__main__:main"
    script = Path(sys.executable).parent / "mydns"
    assert script.exists(), f"{script} is missing though mydns_lab declares it"
    return script


def test_the_installed_console_script_runs() -> None:
    script = _installed_script()
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "resolver" in helped.stdout and "--nservers" in helped.stdout
    made = subprocess.run([script, "keygen", "laptop"], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    key = KeyRing.parse(made.stdout).get("laptop")
    assert key is not None and len(key.secret) == 32


@pytest.mark.lab
def test_the_console_script_runs_the_lab(tmp_path: Path) -> None:
    """The lab spawns its processes; spawned children re-run the main
    module, which is the console script here."""
    script = _installed_script()
    proc = subprocess.run(
        [script, "lab", "--nservers", "3", "--nclerks", "2", "--port",
         str(free_port_range(2, 44000)), "--http-port", "0", "--data-dir",
         str(tmp_path / "data"), "--dnsDuration", "1", "--no-dashboard"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "statistics written to" in proc.stdout
