"""Drives Segment's official Python SDK (segment-analytics-python) against a Leadscore server.

Usage: segment_sdk.py <host> <write key> <prefix>

Sends track, page, identify, alias and screen calls and a stream of tracks big enough to be
flushed as several /v1/batch requests (one gzipped), then flushes. Exits 1 if the SDK
reported any error: the caller then checks what was scored.
"""
import sys

from segment.analytics import Client

host, write_key, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []


def on_error(error, batch):
    errors.append(f"{error} ({len(batch)} messages)")


for gzip in (False, True):
    client = Client(write_key=write_key, host=host, on_error=on_error, gzip=gzip, upload_size=100, max_retries=2)
    user = f"{prefix}-user-{'gz' if gzip else 'plain'}"
    anonymous = f"{prefix}-anon-{'gz' if gzip else 'plain'}"
    client.page(anonymous_id=anonymous, name="Pricing", properties={"path": "/pricing"})
    client.identify(user_id=user, anonymous_id=anonymous, traits={"email": "ada@example.com", "name": "Ada"})
    client.alias(previous_id=anonymous, user_id=user)
    client.track(user_id=user, event="Demo Request", properties={"plan": "pro"})
    client.screen(user_id=user, name="Home")
    for i in range(250):
        client.track(user_id=user, event="Email Open", properties={"n": i})
    client.flush()
    client.join()

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("sent")
