"""The project's RabbitMQ node: run, configured and provisioned idempotently.

Theory of operation. The switch does not reuse the machine's RabbitMQ node (plain AMQP,
guest login); it runs a node of its own, `rtpswitch@localhost`, whose every file lives
under one base directory (`var/rabbitmq`: configuration, Mnesia data, logs), with its
own distribution port. That node has no plain listener at all: one TLS listener that
demands a client certificate from the scheme CA (`verify_peer`,
`fail_if_no_peer_cert`), checks it against the CA's CRL at every handshake, and offers
the EXTERNAL login only, the user being the certificate's common name. So a bank's
identity on the broker is its certificate; there are no passwords (users have none).

`ensure_node` writes the configuration and starts the node when it is not running, or
restarts it when what runs is not what the configuration and TLS files say now (a
fingerprint of both is recorded at each start, with the node's OS pid); a running node
with the right fingerprint is left alone. `ensure_definitions` compares the node's
definitions (users, permissions, exchanges, queues, bindings, policies) with what the
scheme needs, imports the difference in one `rabbitmqctl import_definitions`, and
deletes users that should not be there (the default `guest`, participants no longer
provisioned). Both report what they changed; a second run changes nothing.

Revocation. A certificate revoked in the PKI is refused at the next TLS handshake: the
node reads the CRL through a hashed-name link (`crl/<hash>.r0`) on every connection, so
no restart is needed. A connection opened before the revocation stays open, though:
`cut_off` deletes the bank's user, and the broker then closes its connections at once and
refuses its logins even with a valid certificate (a bank signed off, or stopped by the
operator at the broker).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from switch.transport.amqp import (
    INBOUND_EXCHANGE,
    INBOUND_ROUTING_KEY,
    OUTBOUND_EXCHANGE,
    SWITCH_QUEUE,
    UNATTRIBUTED_EXCHANGE,
    UNATTRIBUTED_QUEUE,
    VHOST,
    participant_queue,
)

__all__ = [
    "DEFAULT_BIN_DIR",
    "BrokerError",
    "BrokerNode",
    "BrokerTLS",
    "cut_off",
    "definitions",
    "ensure_broker",
    "ensure_definitions",
    "ensure_node",
    "node_status",
    "stop_node",
]

DEFAULT_BIN_DIR: Final = Path("/usr/lib/rabbitmq/bin")
"""The RabbitMQ scripts themselves (the /usr/sbin wrappers would switch to the rabbitmq user)."""

_HASHING: Final = "rabbit_password_hashing_sha256"
_PLUGINS: Final = ("rabbitmq_auth_mechanism_ssl",)


class BrokerError(Exception):
    """The broker cannot be brought up or provisioned; the message says why and where."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerNode:
    """The project's node: its name, where its files live, where it listens."""

    base: Path
    nodename: str = "rtpswitch@localhost"
    host: str = "127.0.0.1"
    port: int = 5671
    dist_port: int = 25671
    vhost: str = VHOST
    bin_dir: Path = DEFAULT_BIN_DIR
    max_message_size: int = 4 << 20
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", Path(self.base).resolve())
        if "@" not in self.nodename:
            raise ValueError(f"node name must be name@host: {self.nodename!r}")
        for name in ("port", "dist_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"{name} out of range: {getattr(self, name)}")

    @property
    def conf_file(self) -> Path:
        return self.base / "rabbitmq.conf"

    @property
    def advanced_file(self) -> Path:
        return self.base / "advanced.config"

    @property
    def plugins_file(self) -> Path:
        return self.base / "enabled_plugins"

    @property
    def env_file(self) -> Path:
        return self.base / "rabbitmq-env.conf"

    @property
    def crl_dir(self) -> Path:
        return self.base / "crl"

    @property
    def mnesia_dir(self) -> Path:
        return self.base / "mnesia"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbitmq.pid"

    @property
    def state_file(self) -> Path:
        """What was started last: the node's OS pid and the fingerprint of its setup."""
        return self.base / "started.json"

    @property
    def definitions_file(self) -> Path:
        return self.base / "definitions.json"

    @property
    def address(self) -> str:
        return f"amqps://{self.host}:{self.port}/{self.vhost}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerTLS:
    """The listener's TLS files: the scheme CA, the server pair, and the CA's CRL."""

    ca_cert: Path
    cert: Path
    key: Path
    crl: Path | None = None
    """PEM CRL of the CA; None turns revocation checking off."""

    def __post_init__(self) -> None:
        # Absolute: the node runs elsewhere, and the same files must fingerprint the same.
        for name in ("ca_cert", "cert", "key", "crl"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).resolve())


# --- running rabbitmqctl --------------------------------------------------------------------


def node_env(node: BrokerNode) -> dict[str, str]:
    """The environment of the node and of the CLI tools talking to it."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_", "NODENAME"))
    }
    if "HOME" not in env:  # where Erlang keeps the cookie the node and the CLI share
        import pwd

        env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    env.update(
        RABBITMQ_NODENAME=node.nodename,
        RABBITMQ_CONF_ENV_FILE=str(node.env_file),
        RABBITMQ_CONFIG_FILE=str(node.conf_file),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(node.advanced_file),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(node.plugins_file),
        RABBITMQ_MNESIA_BASE=str(node.mnesia_dir),
        RABBITMQ_LOG_BASE=str(node.log_dir),
        RABBITMQ_PID_FILE=str(node.pid_file),
        RABBITMQ_DIST_PORT=str(node.dist_port),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        ERL_EPMD_ADDRESS="127.0.0.1",
    )
    return env


def _tool(node: BrokerNode, name: str) -> str:
    path = node.bin_dir / name
    if not os.access(path, os.X_OK):
        raise BrokerError(
            f"{path} not found: is RabbitMQ installed (Debian package rabbitmq-server)?"
        )
    return str(path)


def _run_ctl(
    node: BrokerNode, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    cmd = [_tool(node, "rabbitmqctl"), "-n", node.nodename, *args]
    try:
        return subprocess.run(
            cmd, env=node_env(node), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BrokerError(f"rabbitmqctl {' '.join(args)}: no answer in {timeout} s") from None


def ctl(node: BrokerNode, *args: str, timeout: float = 60.0) -> str:
    """Run `rabbitmqctl -n <node> ARGS`; its stdout, or BrokerError with its stderr."""
    done = _run_ctl(node, args, timeout)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BrokerError(f"rabbitmqctl {' '.join(args)}: " + " / ".join(detail[-3:]))
    return done.stdout


def node_status(node: BrokerNode) -> dict[str, Any] | None:
    """The node's status (pid, listeners, config files...), or None if it does not answer."""
    cmd = [_tool(node, "rabbitmqctl"), "-n", node.nodename, "-q", "status", "--formatter", "json"]
    try:
        done = subprocess.run(
            cmd, env=node_env(node), capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    try:
        status = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


# --- configuration --------------------------------------------------------------------------


def _erl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _crl_hash(ca_cert: Path) -> str:
    """OpenSSL's subject-name hash of the CA: the file name Erlang's CRL lookup expects."""
    try:
        done = subprocess.run(
            ["openssl", "x509", "-noout", "-hash", "-in", str(ca_cert)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise BrokerError("openssl not found: needed to name the CRL for the broker") from None
    value = done.stdout.strip()
    if done.returncode != 0 or not value:
        raise BrokerError(f"openssl x509 -hash {ca_cert}: {done.stderr.strip()}")
    return value


def render(node: BrokerNode, tls: BrokerTLS) -> dict[Path, str]:
    """The node's configuration files and their contents."""
    conf = f"""\
# Generated by switch.deploy.broker: change the code, not this file.
# Mutual TLS only: no plain listener, client certificates from the scheme CA, the
# certificate's common name is the user (EXTERNAL), no password login at all.
listeners.tcp = none
listeners.ssl.default = {node.host}:{node.port}
auth_mechanisms.1 = EXTERNAL
ssl_cert_login_from = common_name
max_message_size = {node.max_message_size}
log.console = false
log.file.level = info
"""
    ssl_options = [
        f"{{cacertfile, {_erl_string(str(tls.ca_cert))}}}",
        f"{{certfile, {_erl_string(str(tls.cert))}}}",
        f"{{keyfile, {_erl_string(str(tls.key))}}}",
        "{verify, verify_peer}",
        "{fail_if_no_peer_cert, true}",
        "{versions, ['tlsv1.3', 'tlsv1.2']}",
        "{honor_cipher_order, true}",
    ]
    if tls.crl is not None:
        ssl_options += [
            "{crl_check, true}",
            "{crl_cache, {ssl_crl_hash_dir, {internal, "
            f"[{{dir, {_erl_string(str(node.crl_dir))}}}]}}}}}}",
        ]
    options = ",\n    ".join(ssl_options)
    advanced = f"""\
%% Generated by switch.deploy.broker: change the code, not this file.
%% The TLS options live here (not in rabbitmq.conf) because the CRL cache needs a term.
[{{rabbit, [{{ssl_options, [
    {options}
]}}]}}].
"""
    return {
        node.conf_file: conf,
        node.advanced_file: advanced,
        node.plugins_file: "[" + ",".join(_PLUGINS) + "].\n",
        node.env_file: "# Empty on purpose: the node's settings are in its environment.\n",
    }


def _fingerprint(files: dict[Path, str], tls: BrokerTLS) -> str:
    """What a running node must have been started with to be left alone."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{files[path]}\0".encode())
    for path in (tls.ca_cert, tls.cert, tls.key):
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise BrokerError(f"TLS file unreadable: {path}: {exc.strerror}") from None
    return digest.hexdigest()


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _link_crl(node: BrokerNode, tls: BrokerTLS) -> bool:
    """`crl/<hash>.r0` -> the PKI's CRL (read at each handshake); stale links removed."""
    node.crl_dir.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    if tls.crl is not None:
        wanted[f"{_crl_hash(tls.ca_cert)}.r0"] = tls.crl.resolve()
    changed = False
    for entry in node.crl_dir.iterdir():
        if (
            entry.name not in wanted
            or not entry.is_symlink()
            or entry.readlink() != wanted[entry.name]
        ):
            entry.unlink()
            changed = True
    for name, target in wanted.items():
        link = node.crl_dir / name
        if not link.is_symlink():
            link.symlink_to(target)
            changed = True
    return changed


# --- the node -------------------------------------------------------------------------------


def _read_state(node: BrokerNode) -> dict[str, Any]:
    try:
        state = json.loads(node.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _is_our_beam(node: BrokerNode, pid: int) -> bool:
    """Whether process `pid` is a node started with this node's name and Mnesia base."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        f"RABBITMQ_NODENAME={node.nodename}".encode() in environ
        and f"RABBITMQ_MNESIA_BASE={node.mnesia_dir}".encode() in environ
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid)


def _kill(pid: int) -> None:
    """Stop process `pid` (a node of ours that does not answer): TERM, then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 15.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def _stale_pid(node: BrokerNode) -> int | None:
    try:
        pid = int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) and _is_our_beam(node, pid) else None


def stop_node(node: BrokerNode) -> bool:
    """Stop the node if it runs (gracefully, else by its pid); whether it was running."""
    status = node_status(node)
    if status is not None:
        pid = int(status.get("pid", 0))
        _run_ctl(node, ["stop"], 60.0)
        if pid and not _wait_gone(pid, 30.0):
            _kill(pid)
        return True
    stale = _stale_pid(node)
    if stale is not None:
        _kill(stale)
        return True
    return False


def _log_tail(node: BrokerNode, lines: int = 15) -> str:
    out: list[str] = []
    for path in (node.base / "startup.log", node.log_dir / f"{node.nodename}.log"):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()
            out += [f"  {path.name}: {line}" for line in text[-lines:] if line.strip()]
    return "\n".join(out)


def _start(node: BrokerNode) -> dict[str, Any]:
    """Start the node in the background and wait until its TLS listener answers."""
    if _listening(node.host, node.port):
        raise BrokerError(
            f"{node.host}:{node.port} is taken by another process, and node {node.nodename} "
            "does not answer: stop that process, or choose another port"
        )
    for path in (node.mnesia_dir, node.log_dir):
        path.mkdir(parents=True, exist_ok=True)
    log = (node.base / "startup.log").open("ab")
    try:
        proc = subprocess.Popen(
            [_tool(node, "rabbitmq-server")],
            env=node_env(node),
            cwd=node.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the bring-up, immune to its terminal's signals
        )
    finally:
        log.close()
    _STARTED.append(proc)
    deadline = time.monotonic() + node.start_timeout
    while not _listening(node.host, node.port):
        if proc.poll() is not None:
            raise BrokerError(
                f"node {node.nodename} exited during start-up (status {proc.returncode}):\n"
                + _log_tail(node)
            )
        if time.monotonic() > deadline:
            raise BrokerError(
                f"node {node.nodename} not listening on {node.host}:{node.port} after "
                f"{node.start_timeout:.0f} s:\n" + _log_tail(node)
            )
        time.sleep(0.2)
    status = node_status(node)
    if status is None:
        raise BrokerError(f"node {node.nodename} started but does not answer rabbitmqctl")
    return status


_STARTED: list[subprocess.Popen[bytes]] = []
"""Nodes started by this process (kept so that they are not reaped as abandoned children)."""


def _as_expected(node: BrokerNode, status: dict[str, Any]) -> list[str]:
    """How the running node differs from what this configuration asks for (empty: fine)."""
    problems = []
    if sorted(status.get("config_files", [])) != sorted(
        map(str, (node.conf_file, node.advanced_file))
    ):
        problems.append(f"config files {status.get('config_files')}")
    listeners = {
        (str(x.get("protocol")), str(x.get("interface")), int(x.get("port", 0)))
        for x in status.get("listeners", [])
        if isinstance(x, dict)
    }
    if ("amqp/ssl", node.host, node.port) not in listeners:
        problems.append(f"no TLS listener on {node.host}:{node.port}")
    plain = sorted(f"{i}:{p}" for proto, i, p in listeners if proto == "amqp")
    if plain:
        problems.append(f"plain AMQP listeners {plain}")
    if not set(_PLUGINS) <= set(status.get("active_plugins", [])):
        problems.append(f"plugins {status.get('active_plugins')}")
    return problems


def ensure_node(node: BrokerNode, tls: BrokerTLS) -> str:
    """Make the node run with this configuration: 'running', 'started' or 'restarted (why)'."""
    node.base.mkdir(parents=True, exist_ok=True)
    files = render(node, tls)
    for path, text in files.items():
        _write_if_changed(path, text)
    _link_crl(node, tls)
    fingerprint = _fingerprint(files, tls)
    state = _read_state(node)
    status = node_status(node)
    action = "started"
    if status is not None:
        problems = _as_expected(node, status)
        if state.get("fingerprint") != fingerprint:
            problems.append("configuration or TLS files changed since it started")
        if state.get("pid") != status.get("pid"):
            problems.append("not the process this bring-up started")
        if not problems:
            return "running"
        stop_node(node)
        action = f"restarted ({'; '.join(problems)})"
    else:
        pid = _stale_pid(node)
        if pid is not None:  # the process is there but does not answer: stale
            _kill(pid)
            action = "restarted (it did not answer)"
    status = _start(node)
    problems = _as_expected(node, status)
    if problems:
        raise BrokerError(f"node {node.nodename} started but " + "; ".join(problems))
    node.state_file.write_text(json.dumps({"pid": status.get("pid"), "fingerprint": fingerprint}))
    return action


# --- definitions ----------------------------------------------------------------------------


def _user(name: str) -> dict[str, Any]:
    # An empty hash: no password can ever match, so EXTERNAL is the only way in.
    return {"name": name, "password_hash": "", "hashing_algorithm": _HASHING, "tags": []}


def _exact(name: str) -> str:
    return "^" + name.replace(".", r"\.") + "$"


def definitions(vhost: str, switch_id: str, participants: Sequence[str]) -> dict[str, Any]:
    """The broker definitions the scheme needs (RabbitMQ's JSON definitions format)."""
    if switch_id in participants:
        raise BrokerError(f"the switch id {switch_id} is also listed as a participant")
    perms = [
        {
            "user": switch_id,
            "vhost": vhost,
            "configure": "^$",
            "write": _exact(OUTBOUND_EXCHANGE),
            "read": "^switch\\.(inbound|unattributed)$",
        }
    ]
    exchange = {"vhost": vhost, "durable": True, "auto_delete": False, "internal": False}
    queue = {"vhost": vhost, "durable": True, "auto_delete": False}
    classic = {"x-queue-type": "classic"}
    exchanges = [
        {"name": INBOUND_EXCHANGE, "type": "direct", **exchange, "arguments": {}},
        {"name": OUTBOUND_EXCHANGE, "type": "direct", **exchange, "arguments": {}},
        {"name": UNATTRIBUTED_EXCHANGE, "type": "fanout", **exchange, "arguments": {}},
    ]
    queues = [
        {"name": SWITCH_QUEUE, **queue, "arguments": classic},
        {"name": UNATTRIBUTED_QUEUE, **queue, "arguments": classic},
    ]
    binding = {"vhost": vhost, "destination_type": "queue", "arguments": {}}
    bindings = [
        {
            "source": INBOUND_EXCHANGE,
            "destination": SWITCH_QUEUE,
            "routing_key": INBOUND_ROUTING_KEY,
            **binding,
        },
        {
            "source": UNATTRIBUTED_EXCHANGE,
            "destination": UNATTRIBUTED_QUEUE,
            "routing_key": "",
            **binding,
        },
    ]
    for p in participants:
        perms.append(
            {
                "user": p,
                "vhost": vhost,
                "configure": "^$",
                "write": _exact(INBOUND_EXCHANGE),
                "read": _exact(participant_queue(p)),
            }
        )
        queues.append({"name": participant_queue(p), **queue, "arguments": classic})
        bindings.append(
            {
                "source": OUTBOUND_EXCHANGE,
                "destination": participant_queue(p),
                "routing_key": p,
                **binding,
            }
        )
    policies = [
        {
            "vhost": vhost,
            "name": "switch-inbound-dead-letters",
            "pattern": _exact(SWITCH_QUEUE),
            "apply-to": "queues",
            "priority": 0,
            "definition": {"dead-letter-exchange": UNATTRIBUTED_EXCHANGE},
        }
    ]
    return {
        "vhosts": [{"name": vhost}],
        "users": [_user(u) for u in (switch_id, *participants)],
        "permissions": perms,
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": policies,
    }


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


_KEYS: Final = {
    "vhosts": ("name",),
    "users": ("name", "password_hash", "tags"),
    "permissions": ("user", "vhost", "configure", "write", "read"),
    "exchanges": ("vhost", "name", "type", "durable", "auto_delete", "arguments"),
    "queues": ("vhost", "name", "durable", "auto_delete", "arguments"),
    "bindings": ("vhost", "source", "destination", "destination_type", "routing_key", "arguments"),
    "policies": ("vhost", "name", "pattern", "apply-to", "priority", "definition"),
}
_NAMES: Final = {
    "vhosts": ("vhost", "name"),
    "users": ("user", "name"),
    "permissions": ("permissions of", "user"),
    "exchanges": ("exchange", "name"),
    "queues": ("queue", "name"),
    "bindings": ("binding", "destination"),
    "policies": ("policy", "name"),
}


def _missing(wanted: dict[str, Any], actual: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The wanted definitions the node does not have exactly, by kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, keys in _KEYS.items():
        have = {_canon([item.get(k) for k in keys]) for item in actual.get(kind, [])}
        lacking = [
            item for item in wanted.get(kind, []) if _canon([item.get(k) for k in keys]) not in have
        ]
        if lacking:
            out[kind] = lacking
    return out


def _export(node: BrokerNode) -> dict[str, Any]:
    text = ctl(node, "-q", "export_definitions", "-", "--format", "json")
    try:
        data = json.loads(text[text.index("{") :])
    except ValueError:
        raise BrokerError(
            f"rabbitmqctl export_definitions: unreadable output {text[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise BrokerError("rabbitmqctl export_definitions: not a JSON object")
    return data


def _describe(kind: str, item: dict[str, Any]) -> str:
    label, key = _NAMES[kind]
    if kind == "bindings":
        return f"binding {item['source']} -> {item['destination']} ({item['routing_key'] or '*'})"
    return f"{label} {item[key]}"


def ensure_definitions(node: BrokerNode, switch_id: str, participants: Sequence[str]) -> list[str]:
    """Provision users, permissions and topology on the running node; the changes made."""
    wanted = definitions(node.vhost, switch_id, participants)
    actual = _export(node)
    changes: list[str] = []
    missing = _missing(wanted, actual)
    if missing:
        node.definitions_file.write_text(json.dumps(wanted, indent=1, sort_keys=True))
        ctl(node, "-q", "import_definitions", str(node.definitions_file))
        deadline = time.monotonic() + 30.0
        while True:  # the import is asynchronous: wait until everything is there
            actual = _export(node)
            still = _missing(wanted, actual)
            if not still:
                break
            if time.monotonic() > deadline:
                lacking = [_describe(k, i) for k, items in still.items() for i in items]
                raise BrokerError("definitions import incomplete: " + ", ".join(lacking[:10]))
            time.sleep(0.2)
        changes += [f"set {_describe(k, i)}" for k, items in missing.items() for i in items]
    users = {u["name"] for u in wanted["users"]}
    for extra in sorted({str(u.get("name")) for u in actual.get("users", [])} - users):
        changes += cut_off(node, extra, reason="not provisioned")
    return changes


def cut_off(node: BrokerNode, user: str, *, reason: str = "revoked") -> list[str]:
    """Delete `user`: the broker closes its open connections and refuses new logins."""
    if _run_ctl(node, ["-q", "delete_user", user], 60.0).returncode != 0:
        return []  # no such user
    return [f"deleted user {user} ({reason})"]


# --- all of it ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(node: BrokerNode) -> Iterator[None]:
    """One bring-up at a time per node directory."""
    node.base.mkdir(parents=True, exist_ok=True)
    with (node.base / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_broker(
    node: BrokerNode, tls: BrokerTLS, switch_id: str, participants: Iterable[str]
) -> list[str]:
    """The node running and provisioned for `switch_id` and `participants`; the changes made."""
    with _locked(node):
        action = ensure_node(node, tls)
        changes = [] if action == "running" else [f"node {node.nodename} {action}"]
        return changes + ensure_definitions(node, switch_id, sorted(set(participants)))
