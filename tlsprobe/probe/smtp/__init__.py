"""The SMTP dialogues, sans-IO: the probe's client, the reply parser, and the receiver's server.
No sockets here: the transport (`probe.transport`, `probe.send.receiver`) feeds them bytes."""
