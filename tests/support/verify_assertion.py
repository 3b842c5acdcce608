"""Verifies a Portcullis-Assertion with PyJWT, as an internal app would.

Usage: verify_assertion.py JWKS_FILE AUDIENCE LEEWAY < TOKEN
Prints the verified claims as JSON, or `refused: ErrorName` and exits 1.
"""
import json
import sys

import jwt

jwks = jwt.PyJWKSet.from_json(open(sys.argv[1]).read())
token = sys.stdin.read().strip()
try:
    kid = jwt.get_unverified_header(token).get("kid")
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=sys.argv[2],
        issuer="portcullis",
        leeway=int(sys.argv[3]),
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
except (jwt.PyJWTError, StopIteration) as error:
    print(f"refused: {type(error).__name__}")
    sys.exit(1)
print(json.dumps(claims))
