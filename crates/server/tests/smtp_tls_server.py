"""An SMTP server that takes mail only after STARTTLS and AUTH (aiosmtpd, from PyPI).

Usage: smtp_tls_server.py PORT CERT KEY USER PASSWORD OUT
Each message is appended to OUT with a line saying who logged in and whether the session
was encrypted; "ready" is printed once it listens.
"""
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password, out = sys.argv[1:7]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a", encoding="utf-8") as f:
            d = session.auth_data
            login = d.login.decode() if isinstance(d, LoginPassword) else None
            f.write(f"LOGIN {login} TLS {session.ssl is not None}\n")
            f.write(envelope.content.decode("utf-8", "replace"))
            f.write("\n--\n")
        return "250 OK"


def authenticate(server, session, envelope, mechanism, data):
    ok = (
        isinstance(data, LoginPassword)
        and data.login == user.encode()
        and data.password == password.encode()
    )
    # handled=False: aiosmtpd answers a failure itself (535); with the default it says nothing.
    return AuthResult(success=ok, handled=False, auth_data=data)


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=ctx,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
)
c.start()
print("ready", flush=True)
threading.Event().wait()
