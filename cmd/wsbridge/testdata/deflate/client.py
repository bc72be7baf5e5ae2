#!/usr/bin/env python3
"""permessage-deflate client for TestDeflateRealClients: Python's websockets
(Debian's python3-websockets), which offers the extension by default.

    client.py ws://127.0.0.1:PORT/ID

Sends the messages of messages() and checks each echo; prints "ok" and the
negotiated extension, or exits non-zero.
"""
import asyncio
import sys

import websockets


def messages():
    big = "".join('{"id":%d,"user":"user-%d","text":"hello, world"},' % (i, i % 7) for i in range(200))
    return ["hi", big, b"\x00\x01\x02" * 1000, bytes(range(256)) * 400, big * 10]


async def main(url):
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        if "permessage-deflate" not in ext:
            sys.exit("extension not negotiated: %r" % ext)
        for m in messages():
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != m:
                sys.exit("echo differs: sent %d %s, got %d %s" % (len(m), type(m).__name__, len(got), type(got).__name__))
        print("ok", ext)


asyncio.run(main(sys.argv[1]))
