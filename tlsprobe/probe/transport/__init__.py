"""The probe's connection: the socket and pyOpenSSL connection (`sockconn`), the STARTTLS
exchange that captures the chain (`starttls`) and the reader of a raw Certificate message
(`certmsg`). The only socket code of the server probe."""
