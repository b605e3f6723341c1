"""The simulate endpoint's core: the decision plus every statement that matched or nearly did, as JSON."""

from __future__ import annotations

import json

from tests.controlplane.iam.helpers import allow, deny, policy, request

from nexus.controlplane.iam.evaluate import evaluate
from nexus.controlplane.iam.simulate import StatementMatch, simulate, simulation_to_json

KEY = "nrn:nexus:gateway:org/acme/emea:virtual-key/k1"


def test_lists_every_matching_statement_and_the_near_misses() -> None:
    reader = policy(allow("admin:*.read", Sid="Read"), allow("admin:user.*"), name="reader")
    guarded = policy(allow("admin:virtual-key.*", "*", {"IpAddress": {"nexus:SourceIp": "192.168.0.0/16"}},
                           Sid="OfficeOnly"),
                     deny("admin:virtual-key.read", "nrn:nexus:gateway:org/acme:*", Sid="NoKeyReads"), name="guarded")
    org = policy(allow("*"), name="globex-admin", org_path="globex")
    req = request("admin:virtual-key.read", KEY, ip="10.0.0.1")
    sim = simulate([reader, guarded, org], req)
    assert sim.decision == evaluate([reader, guarded, org], req)
    assert sim.decision.effect == "Deny" and sim.decision.sid == "NoKeyReads"
    assert sim.matched == (
        StatementMatch(reader.id, "reader", 0, "Read", "Allow"),
        StatementMatch(guarded.id, "guarded", 1, "NoKeyReads", "Deny"),
    )
    assert sim.near_misses == (
        StatementMatch(guarded.id, "guarded", 0, "OfficeOnly", "Allow", "condition IpAddress nexus:SourceIp not met"),
        StatementMatch(org.id, "globex-admin", 0, None, "Allow",
                       "the policy belongs to org globex and cannot allow outside it"),
    )


def test_json_shape() -> None:
    p = policy(allow("admin:*.read", Sid="Read"), name="reader")
    out = simulation_to_json(simulate([p], request("admin:virtual-key.read", KEY)))
    assert json.loads(json.dumps(out)) == out
    assert out["decision"] == {"allowed": True, "effect": "Allow", "policy_id": str(p.id), "policy_name": "reader",
                               "statement_index": 0, "sid": "Read", "reason": 'allowed by policy "reader" Statement[0] '
                                                                              '(Sid "Read")'}
    assert out["matched"] == [{"policy_id": str(p.id), "policy_name": "reader", "statement_index": 0, "sid": "Read",
                               "effect": "Allow", "note": None}]
    assert out["near_misses"] == []
    nothing = simulation_to_json(simulate([], request("admin:virtual-key.read", KEY)))
    assert nothing["decision"]["effect"] == "DefaultDeny" and nothing["decision"]["policy_id"] is None
