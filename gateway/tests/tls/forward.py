"""A TLS-terminating TCP forwarder for the gateway's tests: an https backend in front of
a plain mcp-mock. Prints `listening on https://localhost:PORT/mcp`.

    forward.py CERT KEY UPSTREAM_HOST UPSTREAM_PORT
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def main():
    cert, key, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on https://localhost:{bound}/mcp", flush=True)
    await server.serve_forever()


asyncio.run(main())
