"""Drives `wcp-hall mcp` with the official MCP Python SDK (the `mcp` package) and prints one
JSON object describing what happened; tests/it/mcp.rs asserts on it.

usage: mcp_client.py WCP_HALL_BIN SOCKET TENANT TAMPER_FILE

TAMPER_FILE is a file of the enrolled doc_chunker package: the script appends to it after calling
the chunker once, to show that a worker tampered with after tools/list is denied at call time.

Lines before the last one are requests to the test: `RESTART <approval id>` asks it to restart
the Hall and then approve that approval, while a call waiting for it stays open. The last line is
the JSON result.
"""

import asyncio
import json
import re
import sys

from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def get(obj, snake, camel):
    """SDK 1.x spells fields in camelCase, 2.x in snake_case."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def tool_info(t):
    meta = getattr(t, "meta", None)
    return {
        "title": t.title,
        "description": t.description,
        "inputSchema": get(t, "input_schema", "inputSchema"),
        "outputSchema": get(t, "output_schema", "outputSchema"),
        "meta": meta if isinstance(meta, dict) else None,
    }


def content_text(result):
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def summary(result):
    structured = get(result, "structured_content", "structuredContent")
    text = content_text(result)
    meta = getattr(result, "meta", None)
    return {
        "is_error": bool(get(result, "is_error", "isError")),
        "text": text,
        "structured": structured,
        # The Hall's side of the call (receipt, decision, error, pending approval).
        "meta": meta if isinstance(meta, dict) else None,
        # MCP: the text block SHOULD be the serialisation of structuredContent.
        "text_is_structured": structured is not None
        and text == [json.dumps(structured, separators=(",", ":"), ensure_ascii=False)],
    }


async def session(params, body):
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            return await body(s)


async def main():
    binary, socket, tenant, tamper_file = sys.argv[1:5]
    out = {}

    def server(sock, *extra, tenant_id=tenant):
        return StdioServerParameters(
            command=binary,
            args=["mcp", "--socket", sock, "--tenant-id", tenant_id, "--timeout", "30", *extra],
            env={"RUST_LOG": "info", "PATH": "/usr/bin:/bin"},
        )

    async def governed(s):
        init = await s.initialize()
        out["server_name"] = get(init, "server_info", "serverInfo").name
        out["protocol_version"] = get(init, "protocol_version", "protocolVersion")
        out["has_tools_capability"] = init.capabilities.tools is not None
        tools = await s.list_tools()
        out["tools"] = {t.name: tool_info(t) for t in tools.tools}
        out["hello"] = summary(await s.call_tool("cap_hello_greet", {"name": "Ada"}))
        out["hello_meta"] = summary(
            await s.call_tool("cap_hello_greet", {"name": "Grace"}, meta={"correlation_id": "mcp-test-corr-1"})
        )
        # The host's W3C trace context in _meta reaches the Hall (and its receipt and worker).
        out["hello_traced"] = summary(
            await s.call_tool(
                "cap_hello_greet",
                {"name": "Lin"},
                meta={"traceparent": "00-5c3f6a0e9d2b4f718a6e2c1d0b9a8f7e-a1b2c3d4e5f60718-01"},
            )
        )
        text = "First paragraph. It has two sentences.\n\nSecond paragraph here."
        out["chunk"] = summary(await s.call_tool("cap_doc_chunk", {"text": text, "max_chars": 50}))
        # The worker's schema requires "name": refused by the Hall before anything runs.
        out["invalid_request"] = summary(await s.call_tool("cap_hello_greet", {"nam": "Ada"}))
        out["approvals"] = summary(await s.call_tool("wcp_approvals_list", {}))
        out["resolve_missing"] = summary(
            await s.call_tool("wcp_approval_resolve", {"id": "no-such-approval", "action": "approve"})
        )
        try:
            # Routed only in prod: not offered to this dev session, so not a tool.
            await s.call_tool("cap_research_register", {})
            out["unknown_tool"] = "no error"
        except Exception as e:  # an MCP error, the session stays usable
            out["unknown_tool"] = "error: " + str(e)
        out["ping_after"] = (await s.send_ping()) is not None
        # The chunker's package changes after it was listed: the Hall denies the next call.
        with open(tamper_file, "a") as f:
            f.write("\n# tampered after tools/list\n")
        out["chunk_tampered"] = summary(await s.call_tool("cap_doc_chunk", {"text": text}))

    await session(server(socket), governed)

    async def restricted(s):
        # RESTRICTED data in dev: the Cedar gate asks a gatekeeper (pol.nonprod.restricted-review).
        # This bridge answers pending at once (--approval-wait 0): the agent collects later.
        await s.initialize()
        tools = await s.list_tools()
        out["restricted_tools"] = {t.name: tool_info(t) for t in tools.tools}
        key = {"correlation_id": "mcp-approval-1"}
        pending = summary(await s.call_tool("cap_hello_greet", {"name": "Lin"}, meta=key))
        out["restricted_hello"] = pending
        hall = (pending["meta"] or {}).get("wcp-hall/dispatch") or {}
        approval_id = (hall.get("pending_approval") or {}).get("pending_approval_id")
        if not approval_id:
            return
        # Nobody decided yet: the outcome tool says so, and the same call again is the same
        # approval (no second one).
        out["outcome_before"] = summary(await s.call_tool("wcp_approval_outcome", {"id": approval_id}))
        out["restricted_repeat"] = summary(await s.call_tool("cap_hello_greet", {"name": "Lin"}, meta=key))
        out["restricted_approvals"] = summary(await s.call_tool("wcp_approvals_list", {}))
        out["restricted_resolve"] = summary(
            await s.call_tool("wcp_approval_resolve", {"id": approval_id, "action": "approve", "note": "mcp test"})
        )
        # The agent collects the worker's result: by id, and by repeating its call.
        out["outcome_after"] = summary(await s.call_tool("wcp_approval_outcome", {"id": approval_id}))
        out["repeat_after"] = summary(await s.call_tool("cap_hello_greet", {"name": "Lin"}, meta=key))

    await session(server(socket, "--data-label", "RESTRICTED", "--approval-wait", "0"), restricted)

    async def run_cli(*args):
        proc = await asyncio.create_subprocess_exec(
            binary, *args, "--socket", socket, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wcp-hall {' '.join(args)} failed: {err.decode()}")

    def waiter(progress, act):
        """A progress callback: on the first notification naming an approval, `act(id)`."""
        started = []

        async def on_progress(value, total, message):
            progress.append({"progress": value, "message": message})
            m = re.search(r"approval ([0-9a-f-]{36})", message or "")
            if m and not started:
                started.append(asyncio.ensure_future(act(m.group(1))))

        return on_progress, started

    async def waiting(s):
        # The call stays open while a human decides; progress notifications name the approval.
        await s.initialize()
        await s.list_tools()
        progress = []
        cb, acts = waiter(progress, lambda aid: run_cli("approvals", "approve", aid))
        out["waited"] = summary(await s.call_tool("cap_hello_greet", {"name": "Wu"}, progress_callback=cb))
        out["waited_progress"] = progress
        if acts:
            await acts[0]
        progress = []
        cb, acts = waiter(progress, lambda aid: run_cli("approvals", "deny", aid, "--note", "not today"))
        out["waited_denied"] = summary(await s.call_tool("cap_hello_greet", {"name": "Eve"}, progress_callback=cb))
        if acts:
            await acts[0]

        # The Hall restarts while the call waits; the test approves after the restart, and the
        # answer still reaches this call.
        async def restart(aid):
            print(f"RESTART {aid}", flush=True)

        progress = []
        cb, acts = waiter(progress, restart)
        out["restarted"] = summary(await s.call_tool("cap_hello_greet", {"name": "Kim"}, progress_callback=cb))
        out["restarted_progress"] = progress

    await session(server(socket, "--data-label", "RESTRICTED", "--approval-wait", "120"), waiting)

    # The current protocol: the SDK's default client probes server/discover (2026-07-28).
    async with Client(server(socket)) as c:
        out["modern_version"] = c.protocol_version
        tools = await c.list_tools()
        out["modern_tools"] = {t.name: tool_info(t) for t in tools.tools}
        out["modern_hello"] = summary(await c.call_tool("cap_hello_greet", {"name": "Mo"}))

    async def wrong_tenant(s):
        await s.initialize()
        try:
            await s.list_tools()
            out["wrong_tenant_list"] = "no error"
        except Exception as e:
            out["wrong_tenant_list"] = "error: " + str(e)

    await session(server(socket, tenant_id="globex"), wrong_tenant)

    async def hall_down(s):
        await s.initialize()
        try:
            await s.list_tools()
            out["down_list"] = "no error"
        except Exception as e:
            out["down_list"] = "error: " + str(e)
        out["down_call"] = summary(await s.call_tool("wcp_approvals_list", {}))
        out["down_ping"] = (await s.send_ping()) is not None

    await session(server(socket + ".absent"), hall_down)
    print(json.dumps(out))


asyncio.run(main())
