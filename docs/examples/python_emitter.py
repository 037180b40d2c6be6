"""Send one event of each kind to Spyglass with the Python emitter (streams.emitter).

Run it against the local stack (``spyglass stack up``) or any broker the SPYGLASS_KAFKA_* settings describe:

    python docs/examples/python_emitter.py

It prints where the broker stored each event, shows that an invalid event is refused before anything is sent,
and exits non-zero if any delivery failed.
"""

from __future__ import annotations

import sys

from streams.emitter import Delivery, Emitter, InvalidEvent, agent_execution, api_usage, data_access


def report(d: Delivery) -> None:
    """Delivery callback: runs on the producer's I/O thread once the broker has answered."""
    where = f"{d.topic}[{d.partition}]@{d.offset}" if d.ok else f"FAILED: {d.error}"
    print(f"{d.kind:16} {d.event_id} -> {where}")


def main() -> int:
    with Emitter(client_id="example-service", on_delivery=report) as emitter:
        emitter.send(api_usage(api_key_id="key-billing-1", principal="svc-billing", client_ip="10.1.2.3",
                               method="POST", endpoint="/v1/chat/completions", status=200, auth_result="ok",
                               model="llm-large-2026", tokens_in=812, tokens_out=240, source="example"))
        emitter.send(data_access(principal="ana@acme.example", principal_department="finance",
                                 dataset="finance/ledger", dataset_owner_department="finance",
                                 sensitivity="confidential", operation="read", granted=True, rows=120,
                                 source="example"))
        emitter.send(agent_execution(agent_id="agt-support-1", agent_type="support-assistant", session_id="s-42",
                                     principal="ana@acme.example", action="search_kb", target_system="kb",
                                     privilege="read", approval="not_required", triggered_by="user",
                                     outcome="success", source="example"))
        try:  # validation happens before anything is sent, and names every bad field
            emitter.send(api_usage(api_key_id="key-billing-1", principal="svc-billing", client_ip="10.1.2.3",
                                   method="GET", endpoint="/v1/models", status=700, auth_result="fine"))
        except InvalidEvent as exc:
            print(f"refused before sending: {exc}")
        failed = emitter.flush()
    print(f"{emitter.sent} events sent, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
