"""Keys for internal gRPC calls: each calling process signs with its own Ed25519 private key, and each
service trusts only the public keys of the callers it serves.

Asymmetric on purpose: a service holds public keys only, so a compromised booking (which calls no one)
holds nothing that can sign a call, and a compromised notify can sign as notify only, never as the
gateway. With one shared HMAC secret any process could have forged any other's calls.

Settings (CommonSettings): INTERNAL_SIGNING_KEY is base64 of the raw 32-byte private key;
INTERNAL_TRUSTED_KEYS is a comma-separated list of `caller:base64publickey`, a caller listed once per
key it may sign with (twice while a key is rotated).

Operator command, shipped in the image:
  python -m libs.common.internal_keys new gateway   # a key for one process, and where its public half goes
  python -m libs.common.internal_keys suite         # a fresh set for every process, as .env lines
  python -m libs.common.internal_keys public < key  # the public half of a private key (read from stdin)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

# Who calls whom (mirrors gateway/clients.py and services/*/peers.py). A service lists the callers
# it accepts in INTERNAL_TRUSTED_KEYS; iam and booking call no one, so they hold no private key.
CALLEES: Mapping[str, tuple[str, ...]] = {
    "gateway": ("iam", "booking", "billing", "media", "notify", "jobs", "integrations"),
    "notify": ("iam", "booking"),
    "jobs": ("iam", "booking", "billing", "media", "notify", "integrations"),
    "billing": ("iam", "booking", "notify", "media"),
    "media": ("booking", "notify"),
    "integrations": ("booking", "billing", "iam", "notify"),
}
SERVICES = ("iam", "booking", "billing", "media", "notify", "jobs", "integrations")
GATEWAY = "gateway"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def callers_of(service: str) -> tuple[str, ...]:
    """The processes that call `service`, in CALLEES order."""
    return tuple(caller for caller, callees in CALLEES.items() if service in callees)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a process name (lowercase letters, digits and '-')")
    return name


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional: operators paste either."""
    stripped = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_private_key(text: str) -> Ed25519PrivateKey:
    """INTERNAL_SIGNING_KEY's value. The message never repeats the value: it is a secret."""
    try:
        raw = _b64decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            "INTERNAL_SIGNING_KEY must be base64 of a raw 32-byte Ed25519 private key "
            "(python -m libs.common.internal_keys new <process>)"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_trusted_keys(entries: Iterable[str]) -> dict[str, tuple[Ed25519PublicKey, ...]]:
    """INTERNAL_TRUSTED_KEYS' entries (`caller:base64publickey`) by caller."""
    trusted: dict[str, list[Ed25519PublicKey]] = {}
    for entry in entries:
        caller, sep, key = entry.strip().partition(":")
        if not sep or not _NAME.match(caller.strip()):
            raise ValueError(f"INTERNAL_TRUSTED_KEYS: {entry!r} is not caller:base64publickey")
        try:
            raw = _b64decode(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                f"INTERNAL_TRUSTED_KEYS: the key of {caller.strip()!r} is not base64 of a raw 32-byte "
                "Ed25519 public key"
            )
        trusted.setdefault(caller.strip(), []).append(Ed25519PublicKey.from_public_bytes(raw))
    return {caller: tuple(keys) for caller, keys in trusted.items()}


@dataclass(frozen=True)
class CallSigner:
    """A process's own identity for the calls it makes: its name and private key."""

    name: str
    key: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    @property
    def public_text(self) -> str:
        return public_key_text(self.key)

    @classmethod
    def new(cls, name: str) -> CallSigner:
        return cls(check_name(name), new_private_key())


@dataclass(frozen=True)
class Keyring:
    """One private key per calling process, and the env each process gets from it: what `make dev`,
    the tests and the bench generate per run, and what `suite` prints for a first install."""

    private: Mapping[str, str]  # process -> INTERNAL_SIGNING_KEY

    @classmethod
    def generate(cls, given: Mapping[str, str] | None = None) -> Keyring:
        """A key for every caller in CALLEES; `given` keys (by process) are kept as they are."""
        given = given or {}
        return cls({name: given.get(name) or private_key_text(new_private_key()) for name in CALLEES})

    def signer(self, name: str) -> CallSigner:
        return CallSigner(name, load_private_key(self.private[name]))

    def trusted_entry(self, caller: str) -> str:
        return f"{caller}:{public_key_text(load_private_key(self.private[caller]))}"

    def trusted_keys(self, service: str) -> str:
        """INTERNAL_TRUSTED_KEYS for `service`: its callers' public keys."""
        return ",".join(self.trusted_entry(caller) for caller in callers_of(service))

    def env_for(self, process: str) -> dict[str, str]:
        """Only what `process` uses: its own private key if it calls anyone, and the public keys of
        its callers if anyone calls it."""
        env: dict[str, str] = {}
        if process in self.private:
            env["INTERNAL_SIGNING_KEY"] = self.private[process]
        if callers_of(process):
            env["INTERNAL_TRUSTED_KEYS"] = self.trusted_keys(process)
        return env


def _new(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    key = new_private_key()
    print(f"# {name}: its own private key. Give it to the {name} process only (its secret).")
    print(f"INTERNAL_SIGNING_KEY={private_key_text(key)}")
    callees = CALLEES.get(name, ())
    where = ", ".join(callees) if callees else "each service that should accept calls from it"
    print(f"# Append to INTERNAL_TRUSTED_KEYS of {where} (public, but keep its integrity):")
    print(f"{name}:{public_key_text(key)}")
    return 0


def _suite(_: argparse.Namespace) -> int:
    keyring = Keyring.generate()
    print("# A fresh set of internal call keys, named as deploy/env.example and the k8s secret name them:")
    print("# <PROCESS>_INTERNAL_SIGNING_KEY / <PROCESS>_INTERNAL_TRUSTED_KEYS, given to that process only")
    print("# as INTERNAL_SIGNING_KEY / INTERNAL_TRUSTED_KEYS.")
    for process in (GATEWAY, *SERVICES):
        for name, value in keyring.env_for(process).items():
            print(f"{process.upper()}_{name}={value}")
    return 0


def _public(_: argparse.Namespace) -> int:
    # From stdin, not an argument: a private key on a command line lands in shell history and `ps`.
    print(public_key_text(load_private_key(sys.stdin.read())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.common.internal_keys", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="a new private key for one process, and its public entry")
    new.add_argument("name", help="the process that signs with it (gateway, notify, jobs)")
    new.set_defaults(run=_new)
    suite = commands.add_parser("suite", help="fresh keys for every process, as env lines per process")
    suite.set_defaults(run=_suite)
    public = commands.add_parser("public", help="the public key of an INTERNAL_SIGNING_KEY read from stdin")
    public.set_defaults(run=_public)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
