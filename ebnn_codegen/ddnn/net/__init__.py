"""A DDNN across a real network: every tier a process, talking through an MQTT broker.

Modules (each imports only downward; nothing here imports paho-mqtt but
:mod:`.transport`'s MQTT class, at call time):

* :mod:`.wire` -- topics, the control payloads (view, request, job, answer)
  around the unchanged DDNN messages, and 16-bit sequence unwrapping;
* :mod:`.tiers` -- the tiers' logic, transport-agnostic: a device (its section
  as generated C or PyTorch -> SCORES, FEATURES on request), the gateway
  (aggregate + local exit by the generated gateway C, per-sample deadline,
  duplicate drop) and the cloud (classify); the offline staged runtime uses
  the same functions;
* :mod:`.transport` -- the object handed to a tier: an in-memory broker
  (tests, in-process runs) or a paho-mqtt client (QoS 1, persistent session,
  manual acknowledgement, TLS and credentials);
* :mod:`.serve` -- the loop of one tier process (SIGTERM: finish in-flight
  work, disconnect cleanly);
* :mod:`.system` -- ``ebnn-gen ddnn system``: every tier its own OS process, a
  source and a sink, the report;
* :mod:`.broker` -- a mosquitto config (listener, persistence, credentials,
  ACL) and a runner, for tests, benchmarks and users.

See docs/ddnn.md, section "Deployment over MQTT".
"""
