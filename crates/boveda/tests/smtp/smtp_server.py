"""A real SMTP server for the e-mail tests: aiosmtpd, on loopback, with
STARTTLS required (a certificate made for 127.0.0.1) and AUTH PLAIN/LOGIN
checked against one user. Every message it accepts is written to OUT as
<n>.eml. Prints "ready PORT" when it listens; runs until killed.

  python smtp_server.py OUT CERT KEY USER PASSWORD
"""

import socket
import ssl
import sys
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keep:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        head = f"X-Envelope-From: {envelope.mail_from}\nX-Envelope-To: {', '.join(envelope.rcpt_tos)}\n"
        (self.out / f"{self.n}.eml").write_bytes(head.encode() + envelope.content)
        return "250 kept"


def main():
    out, cert, key, user, password = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    out.mkdir(parents=True, exist_ok=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False)

    # a free port (aiosmtpd's own start-up check cannot use port 0)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Keep(out), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
                            authenticator=check, auth_required=True, server_hostname="127.0.0.1")
    controller.start()
    print(f"ready {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
