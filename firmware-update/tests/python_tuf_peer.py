#!/usr/bin/env python3
"""python-tuf as a real peer for firmware-update's interop tests.

  make-repo OUT        python-tuf (Metadata API) builds a repository in OUT:
                       root v1 -> v2 (timestamp key rotated), targets delegating
                       server/* to role "server", which lists server/confidant.
                       Prints {"target": ..., "content_hex": ..., "custom": ...}.
  consume ROOT REPO TARGET OUT
                       serves REPO over HTTP on 127.0.0.1 and runs python-tuf's
                       ngclient from trusted root ROOT; downloads TARGET to OUT.
                       Prints the target's custom object as JSON.
  serve DIR            serves DIR over HTTP on 127.0.0.1 (any free port),
                       prints the port, serves until killed.
"""

import datetime
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater


def make_repo(out: str) -> None:
    md_dir = os.path.join(out, "metadata")
    os.makedirs(md_dir)
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=30)
    signers = {r: CryptoSigner.generate_ed25519() for r in ("root", "timestamp", "snapshot", "targets")}
    server_signer = CryptoSigner.generate_ed25519()
    ser = JSONSerializer(compact=False)

    def write(md: Metadata, name: str, *roles_signers) -> None:
        md.signatures.clear()
        for s in roles_signers:
            md.sign(s, append=True)
        md.to_file(os.path.join(md_dir, name), ser)

    root = Metadata(Root(expires=expires, consistent_snapshot=True))
    for role, s in signers.items():
        root.signed.add_key(s.public_key, role)
    write(root, "1.root.json", signers["root"])
    shutil.copy(os.path.join(md_dir, "1.root.json"), os.path.join(out, "initial_root.json"))

    # Rotate the timestamp key: root v2 is signed by the (unchanged) root key.
    new_ts = CryptoSigner.generate_ed25519()
    root.signed.revoke_key(signers["timestamp"].public_key.keyid, "timestamp")
    root.signed.add_key(new_ts.public_key, "timestamp")
    root.signed.version = 2
    signers["timestamp"] = new_ts
    write(root, "2.root.json", signers["root"])

    content = b"#!/bin/sh\necho confidant 2.0.0 from python-tuf\n"
    custom = {"version": "2.0.0", "security_counter": 3}
    tf = TargetFile.from_data("server/confidant", content, ["sha256"])
    tf.unrecognized_fields["custom"] = custom
    tdir = os.path.join(out, "targets", "server")
    os.makedirs(tdir)
    with open(os.path.join(tdir, f"{tf.hashes['sha256']}.confidant"), "wb") as f:
        f.write(content)

    server = Metadata(Targets(expires=expires))
    server.signed.targets[tf.path] = tf
    write(server, "1.server.json", server_signer)

    targets = Metadata(Targets(expires=expires))
    role = DelegatedRole("server", [], 1, True, paths=["server/*"])
    targets.signed.delegations = Delegations(keys={}, roles={"server": role})
    targets.signed.add_key(server_signer.public_key, "server")
    write(targets, "1.targets.json", signers["targets"])

    snapshot = Metadata(Snapshot(expires=expires))
    snapshot.signed.meta = {"targets.json": MetaFile(1), "server.json": MetaFile(1)}
    write(snapshot, "1.snapshot.json", signers["snapshot"])

    timestamp = Metadata(Timestamp(expires=expires))
    timestamp.signed.snapshot_meta = MetaFile(1)
    write(timestamp, "timestamp.json", signers["timestamp"])

    print(json.dumps({"target": tf.path, "content_hex": content.hex(), "custom": custom}))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def consume(root: str, repo: str, target: str, out: str) -> None:
    handler = lambda *a, **kw: _Quiet(*a, directory=repo, **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    with tempfile.TemporaryDirectory() as md:
        shutil.copy(root, os.path.join(md, "root.json"))
        with open(root, "rb") as f:
            bootstrap = f.read()
        updater = Updater(md, f"{base}/metadata/", os.path.dirname(out) or ".", f"{base}/targets/", bootstrap=bootstrap)
        updater.refresh()
        info = updater.get_targetinfo(target)
        if info is None:
            raise SystemExit(f"python-tuf: {target} not found")
        updater.download_target(info, out)
        print(json.dumps(info.custom))
    httpd.shutdown()


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "make-repo":
        make_repo(*args)
    elif cmd == "consume":
        consume(*args)
    elif cmd == "serve":
        (directory,) = args
        handler = lambda *a, **kw: _Quiet(*a, directory=directory, **kw)  # noqa: E731
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        print(httpd.server_address[1], flush=True)
        httpd.serve_forever()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
