#!/usr/bin/env python3
"""A minimal MLLP server built on the PyPI `hl7` package (python-hl7), a peer
for the `mllp` benchmark: it parses each message with hl7, answers an AA ACK
whose MSA-2 echoes the message's MSH-10, and stores nothing.

    python3 hl7_peer.py PORT [HOST]

Prints "ready" on stdout once it listens (HOST defaults to 127.0.0.1).
"""

import asyncio
import sys

import hl7
import hl7.mllp


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            try:
                message = await reader.readmessage()
            except asyncio.IncompleteReadError:
                break  # the client closed the connection
            writer.writemessage(message.create_ack("AA"))
            await writer.drain()
    except (ConnectionError, hl7.mllp.InvalidBlockError, hl7.ParseException) as e:
        # Without a readable MSH there is no ACK to build: close instead.
        print(f"hl7_peer: {e!r}", file=sys.stderr)
    finally:
        writer.close()


async def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    server = await hl7.mllp.start_hl7_server(
        handle, host, port, encoding="utf-8", limit=1024 * 1024
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
