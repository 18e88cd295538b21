"""ZeroMQ CURVE on tcp edges: encryption, and only authorized clients get through.

On an edge with CURVE keys the side that **binds** is the CURVE server: it holds the server
key pair (``server_secret_key_file``) and accepts a connecting peer only if that peer's public
key is one of the ``*.key`` files in ``authorized_clients_dir``. The side that **connects** is
the client: it holds a client key pair (``client_secret_key_file``) and the server's public key
(``server_public_key_file``), so it also knows it talks to the right server. Key files are
pyzmq's `zmq.auth.create_certificates` format (``edgestream keys generate DIR`` writes them).

The server side checks clients through one ZAP authenticator thread per process (pyzmq's
`zmq.auth.thread.ThreadAuthenticator`, started with the first CURVE server socket; the edge's
name is its ZAP domain). A handshake with a key that is not authorized is refused and counted
per edge (`refused`, in the stage's stats as ``transport.auth_refused``); the first refusal of
each (edge, key) is logged as a warning with the peer's address. The authorized keys are read
when the socket opens: a new client key takes effect when the stage restarts. A peer without
CURVE at all, or one holding the wrong server key, fails the handshake inside libzmq before
ZAP is asked: it gets nothing through either, but is not counted.

ipc edges never use CURVE (same host: the socket file's permissions guard them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


class CurveKeyError(ValueError):
    pass


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"cannot read CURVE key file {path}: {e}") from e
    if secret and secret_key is None:
        raise CurveKeyError(f"{path}: holds no secret key (give the .key_secret file)")
    return public, secret_key


@dataclass(frozen=True)
class CurveKeys:
    """The key files of one tcp edge; each side needs only its own two (see the module doc)."""

    server_secret_key_file: Path | None = None
    authorized_clients_dir: Path | None = None
    client_secret_key_file: Path | None = None
    server_public_key_file: Path | None = None
    domain: str = ""
    """The ZAP domain (the edge's name) refusals are counted under; default: the socket's."""

    def missing(self, mode: Literal["bind", "connect"]) -> list[str]:
        """Names of the fields the ``mode`` side needs and does not have."""
        need = (
            ("server_secret_key_file", "authorized_clients_dir")
            if mode == "bind"
            else ("client_secret_key_file", "server_public_key_file")
        )
        return [n for n in need if getattr(self, n) is None]

    def apply(self, sock: zmq.Socket[Any], mode: Literal["bind", "connect"], domain: str) -> None:
        """Sets the CURVE options on ``sock`` (before it binds or connects)."""
        lacking = self.missing(mode)
        if lacking:
            raise CurveKeyError(f"{domain}: the {mode} side of a CURVE edge needs {lacking}")
        domain = self.domain or domain
        if mode == "bind":
            assert self.server_secret_key_file and self.authorized_clients_dir
            public, secret = _load(self.server_secret_key_file, secret=True)
            n = _authorize(domain, self.authorized_clients_dir)
            log.info("%s: CURVE server, %d authorized client key(s)", domain, n)
            sock.zap_domain = domain.encode()
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        else:
            assert self.client_secret_key_file and self.server_public_key_file
            public, secret = _load(self.client_secret_key_file, secret=True)
            server_public, _ = _load(self.server_public_key_file, secret=False)
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = server_public
            log.info("%s: CURVE client", domain)


def authorized_keys(folder: Path) -> set[bytes]:
    """The z85 public keys of the ``*.key`` files in ``folder`` (pyzmq certificate format)."""
    if not folder.is_dir():
        raise CurveKeyError(f"authorized_clients_dir {folder} is not a folder")
    try:
        keys = set(zmq.auth.load_certificates(folder))
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"cannot read client keys in {folder}: {e}") from e
    if not keys:
        log.warning("CURVE: %s holds no client key (*.key): every client is refused", folder)
    return keys


# ------------------------------------------------------------------------- authenticator

_lock = threading.Lock()
_auth: _Authenticator | None = None
_auth_pid = 0
_refused: Counter[str] = Counter()
_logged: set[tuple[str, bytes]] = set()


class _Authenticator(ThreadAuthenticator):
    """A ThreadAuthenticator that counts and logs refused CURVE clients with their address."""

    _address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:  # in the auth thread
        self._address = msg[3].decode("utf8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)


class _Clients:
    """The credentials provider of one edge (ZAP domain): its authorized client keys."""

    def __init__(self, domain: str, keys: set[bytes], auth: _Authenticator) -> None:
        self.domain, self.keys, self.auth = domain, keys, auth

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        with _lock:
            _refused[self.domain] += 1
            first = (self.domain, key) not in _logged
            _logged.add((self.domain, key))
        if first:
            log.warning(
                "%s: refused a peer at %s: its CURVE key %s is not authorized (counted in "
                "transport.auth_refused; logged once per key)",
                self.domain,
                self.auth._address or "?",
                key.decode("ascii", "replace"),
            )
        return False


def _authorize(domain: str, folder: Path) -> int:
    """Starts this process's authenticator (once; again after fork) and lets the clients in
    ``folder`` through on ``domain``. Returns how many keys there are."""
    from pipeline.transport import context

    global _auth, _auth_pid
    keys = authorized_keys(folder)
    with _lock:
        if _auth is None or _auth_pid != os.getpid() or not _auth.is_alive():
            _auth = _Authenticator(context(), log=logging.getLogger(__name__ + ".zap"))
            _auth.start()
            _auth_pid = os.getpid()
        auth = _auth
    auth.configure_curve_callback(domain, credentials_provider=_Clients(domain, keys, auth))
    return len(keys)


def stop_authenticator() -> None:
    """Stops this process's authenticator thread (before its context is destroyed)."""
    global _auth
    with _lock:
        auth, _auth = _auth, None
    if auth is not None and _auth_pid == os.getpid():
        if not auth.is_alive() and auth.pipe is not None:  # died: nobody reads TERMINATE
            auth.pipe.close(linger=0)
            auth.pipe = None  # type: ignore[assignment]
        auth.stop()


def refused() -> dict[str, int]:
    """CURVE handshakes refused by this process, per edge (ZAP domain)."""
    with _lock:
        return dict(_refused)


# ------------------------------------------------------------------------------ key files


def generate(folder: Path, client: str = "client", force: bool = False) -> dict[str, Path]:
    """Writes a server and a client key pair into ``folder`` (secret files mode 0600) and the
    client's public key into ``folder/authorized_clients/``. Refuses to overwrite keys unless
    ``force``. Returns the paths by role."""
    if not client or "/" in client or client.startswith(".") or client == "server":
        raise ValueError(f"client name {client!r}: a plain file name other than 'server'")
    folder.mkdir(parents=True, exist_ok=True)
    authorized = folder / "authorized_clients"
    authorized.mkdir(exist_ok=True)
    paths = {
        "server_secret_key_file": folder / "server.key_secret",
        "server_public_key_file": folder / "server.key",
        "client_secret_key_file": folder / f"{client}.key_secret",
        "client_public_key_file": folder / f"{client}.key",
        "authorized_client_key": authorized / f"{client}.key",
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"keys exist already: {', '.join(existing)} (--force replaces)")
    old = os.umask(0o077)  # secret files are never readable by others, not even for a moment
    try:
        zmq.auth.create_certificates(folder, "server")
        zmq.auth.create_certificates(folder, client)
    finally:
        os.umask(old)
    for p in (paths["server_secret_key_file"], paths["client_secret_key_file"]):
        p.chmod(0o600)
    for p in (paths["server_public_key_file"], paths["client_public_key_file"]):
        p.chmod(0o644)
    paths["authorized_client_key"].write_bytes(paths["client_public_key_file"].read_bytes())
    paths["authorized_client_key"].chmod(0o644)
    return paths


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "keys",
        help="CURVE key pairs for tcp edges between hosts",
        description="Key files for authenticated, encrypted tcp edges (transport.curve).",
    )
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    g = ksub.add_parser(
        "generate",
        help="write a server and a client key pair into DIR",
        description="Writes DIR/server.key(_secret), DIR/CLIENT.key(_secret) (secret files mode "
        "0600) and DIR/authorized_clients/CLIENT.key. The binding host gets server.key_secret "
        "and authorized_clients/; the connecting host gets CLIENT.key_secret and server.key.",
    )
    g.add_argument("dir", type=Path, metavar="DIR", help="folder to write the key files into")
    g.add_argument("--client", default="client", help="client key name (default: client)")
    g.add_argument("--force", action="store_true", help="replace existing key files")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args: Any) -> int:
    paths = generate(args.dir, client=args.client, force=args.force)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0
