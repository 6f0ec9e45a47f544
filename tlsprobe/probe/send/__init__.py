"""The send side: the receiver that accepts relayed mail and captures the client chain, the
verdict on a sender's session, and the canary that submits test messages."""
