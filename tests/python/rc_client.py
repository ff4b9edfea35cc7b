#!/usr/bin/env python3
"""Drive orchestrator.v1.RcService from Python and print what happened as JSON.

Creates an RC from the same YAML an operator gives `orchestrator rc create`,
scales it, lists it by a label selector, sends an RC without replicas_desired
(which must be refused), watches its status until the initial listing is
complete, and reads its audit trail.

Generates the stubs from proto/ with grpc_tools into a temporary directory, so
the test always uses the protos as they are in the tree. Needs the PyPI
packages grpcio and grpcio-tools.

    python3 tests/python/rc_client.py --proto-dir proto --server 127.0.0.1:7400
"""

import argparse
import json

import grpc

from stubs import generated

RC_YAML = """\
id: {id}
labels: {{ lang: python }}
replicas_desired: 2
node_selector: ''
manifest:
  id: {id}
  launchables: {{ server: {{ type: process, command: /usr/bin/{id} }} }}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--rc-id", default="py-web")
    args = parser.parse_args()
    rc_id = args.rc_id

    with generated(args.proto_dir) as load:
        rc_pb2 = load("orchestrator.v1.rc_pb2")
        rc_pb2_grpc = load("orchestrator.v1.rc_pb2_grpc")
        with grpc.insecure_channel(args.server) as channel:
            stub = rc_pb2_grpc.RcServiceStub(channel)
            created = stub.CreateRc(
                rc_pb2.CreateRcRequest(yaml=RC_YAML.format(id=rc_id)), timeout=args.timeout
            ).rc
            scaled = stub.ScaleRc(
                rc_pb2.ScaleRcRequest(id=rc_id, replicas=4), timeout=args.timeout
            ).rc
            listed = stub.ListRcs(
                rc_pb2.ListRcsRequest(selector="lang=python"), timeout=args.timeout
            ).rcs

            without_replicas = RC_YAML.format(id=rc_id + "-bad").replace(
                "replicas_desired: 2\n", ""
            )
            try:
                stub.CreateRc(rc_pb2.CreateRcRequest(yaml=without_replicas), timeout=args.timeout)
                refused = None
            except grpc.RpcError as e:
                refused = {"code": e.code().name, "message": e.details()}

            # No farm has reported on the RC, so the initial listing holds
            # no status: read until the SYNCED marker, then hang up.
            watch = stub.WatchRcs(rc_pb2.WatchRcsRequest(id=rc_id), timeout=args.timeout)
            existing = []
            synced_revision = None
            for message in watch:
                if message.kind == rc_pb2.WatchRcsResponse.KIND_SYNCED:
                    synced_revision = message.revision
                    break
                existing.append(message.id)
            watch.cancel()

            audit = stub.ListAudit(
                rc_pb2.ListAuditRequest(rc_id=rc_id, limit=10), timeout=args.timeout
            ).records

    print(
        json.dumps(
            {
                "created": {
                    "id": created.spec.id,
                    "replicas_desired": created.spec.replicas_desired,
                    "revision": created.revision,
                    "manifest_sha": created.spec.manifest_sha,
                    "has_status": created.HasField("status"),
                },
                "scaled": {
                    "replicas_desired": scaled.spec.replicas_desired,
                    "revision": scaled.revision,
                },
                "listed": [
                    {"id": rc.spec.id, "labels": dict(rc.spec.labels)} for rc in listed
                ],
                "refused": refused,
                "watch": {"existing": existing, "synced_revision": synced_revision},
                "audit": [
                    {
                        "action": rc_pb2.AuditAction.Name(record.action),
                        "who": record.who,
                        "rc_ids": list(record.rc_ids),
                        "after": json.loads(record.after_json) if record.after_json else None,
                    }
                    for record in audit
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
