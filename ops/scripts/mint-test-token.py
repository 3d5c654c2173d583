#!/usr/bin/env python3
"""Mints an ES256 JWT with a throw-away test key (benchmarks only; stdlib + openssl).

    mint-test-token.py KEY.pem KID ISSUER AUDIENCE [EMAIL] [GROUPS]

Also `mint-test-token.py --jwk KEY.pem KID` prints the public JWK set for KEY.pem.
"""
import base64, json, re, subprocess, sys, time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_xy(pem: str):
    out = subprocess.run(["openssl", "ec", "-in", pem, "-text", "-noout"],
                         capture_output=True, text=True, check=True).stdout
    pub = bytes.fromhex(re.sub(r"[^0-9a-f]", "", out.split("pub:")[1].split("ASN1")[0]))
    return pub[1:33], pub[33:65]


def der_to_raw(der: bytes) -> bytes:
    # SEQUENCE { INTEGER r, INTEGER s }
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + n
    return out


def main():
    if sys.argv[1] == "--jwk":
        x, y = public_xy(sys.argv[2])
        print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": sys.argv[3],
                                    "use": "sig", "alg": "ES256", "x": b64(x), "y": b64(y)}]}))
        return
    key, kid, iss, aud = sys.argv[1:5]
    email = sys.argv[5] if len(sys.argv) > 5 else "bench@example.com"
    groups = sys.argv[6].split(",") if len(sys.argv) > 6 else []
    now = int(time.time())
    header = b64(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": kid}).encode())
    claims = b64(json.dumps({"iss": iss, "aud": aud, "sub": email, "email": email,
                             "groups": groups, "iat": now, "exp": now + 3600,
                             "client_id": "bench", "scope": "mcp"}).encode())
    signing_input = f"{header}.{claims}".encode()
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input,
                         capture_output=True, check=True).stdout
    print(f"{header}.{claims}.{b64(der_to_raw(der))}")


if __name__ == "__main__":
    main()
