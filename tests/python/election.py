#!/usr/bin/env python3
"""Run a leader election and a lock through etcd's Election and Lock services
served by `orchestrator serve`, from Python, and print what happened as JSON.

Two candidates on their own leases: the first leads, the second waits until
the first resigns; the leader proclaims a new value that Leader and Observe
report; then two lock holders exclude each other the same way. Generates the
stubs from proto/ (see stubs.py). Needs grpcio and grpcio-tools.

    python3 tests/python/election.py --proto-dir proto --server 127.0.0.1:7400 --name /demo/election
"""

import argparse
import json
import time

import grpc

from stubs import generated

RPC = "etcd.api.etcdserverpb.rpc_pb2"
ELECTION = "etcd.server.etcdserver.api.v3election.v3electionpb.v3election_pb2"
LOCK = "etcd.server.etcdserver.api.v3lock.v3lockpb.v3lock_pb2"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--name", required=True, help="election name (locks use NAME-lock)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    t = args.timeout
    report = {}

    with generated(args.proto_dir) as load:
        rpc, rpc_grpc = load(RPC), load(RPC + "_grpc")
        epb, epb_grpc = load(ELECTION), load(ELECTION + "_grpc")
        lpb, lpb_grpc = load(LOCK), load(LOCK + "_grpc")
        with grpc.insecure_channel(args.server) as channel:
            leases = rpc_grpc.LeaseStub(channel)
            election = epb_grpc.ElectionStub(channel)
            lock = lpb_grpc.LockStub(channel)
            name = args.name.encode()

            a = leases.LeaseGrant(rpc.LeaseGrantRequest(TTL=60), timeout=t).ID
            b = leases.LeaseGrant(rpc.LeaseGrantRequest(TTL=60), timeout=t).ID

            first = election.Campaign(epb.CampaignRequest(name=name, lease=a, value=b"alpha"), timeout=t)
            observe = election.Observe(epb.LeaderRequest(name=name), timeout=t)
            seen = [next(observe).kv.value.decode()]
            second = election.Campaign.future(epb.CampaignRequest(name=name, lease=b, value=b"beta"), timeout=t)

            election.Proclaim(epb.ProclaimRequest(leader=first.leader, value=b"alpha-2"), timeout=t)
            seen.append(next(observe).kv.value.decode())
            leader = election.Leader(epb.LeaderRequest(name=name), timeout=t)
            report["leader_after_proclaim"] = leader.kv.value.decode()
            report["second_waited_while_first_led"] = not second.done()

            election.Resign(epb.ResignRequest(leader=first.leader), timeout=t)
            won = second.result(timeout=t)
            seen.append(next(observe).kv.value.decode())
            observe.cancel()
            report["observed"] = seen
            report["first_key"] = first.leader.key.decode()
            report["second_key"] = won.leader.key.decode()
            report["leader_after_resign"] = election.Leader(epb.LeaderRequest(name=name), timeout=t).kv.value.decode()
            election.Resign(epb.ResignRequest(leader=won.leader), timeout=t)
            try:
                election.Leader(epb.LeaderRequest(name=name), timeout=t)
                report["no_leader_error"] = None
            except grpc.RpcError as e:
                report["no_leader_error"] = [e.code().name, e.details()]

            lock_name = name + b"-lock"
            held = lock.Lock(lpb.LockRequest(name=lock_name, lease=a), timeout=t)
            queued = lock.Lock.future(lpb.LockRequest(name=lock_name, lease=b), timeout=t)
            # Wait (bounded) until the queued lock's key exists, then check
            # that it has not been granted.
            end = lock_name + b"0"
            for _ in range(600):
                keys = rpc_grpc.KVStub(channel).Range(rpc.RangeRequest(key=lock_name + b"/", range_end=end), timeout=t)
                if keys.count == 2:
                    break
                time.sleep(0.05)
            report["second_lock_waited"] = not queued.done()
            lock.Unlock(lpb.UnlockRequest(key=held.key), timeout=t)
            report["lock_keys"] = [held.key.decode(), queued.result(timeout=t).key.decode()]

            for lease in (a, b):
                leases.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease), timeout=t)
            report["leases"] = [format(a, "x"), format(b, "x")]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
