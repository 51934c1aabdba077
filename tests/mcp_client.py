"""Drives `wcp-hall mcp` with the official MCP Python SDK (the `mcp` package) and prints one
JSON object describing what happened; tests/mcp.rs asserts on it.

usage: mcp_client.py WCP_HALL_BIN SOCKET TENANT TAMPER_FILE

TAMPER_FILE is a file of the enrolled doc_chunker package: the script appends to it after calling
the chunker once, to show that a worker tampered with after tools/list is denied at call time.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
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
            args=["mcp", "--socket", sock, "--tenant-id", tenant_id, "--timeout", "60", *extra],
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
        await s.initialize()
        tools = await s.list_tools()
        out["restricted_tools"] = {t.name: tool_info(t) for t in tools.tools}
        pending = summary(await s.call_tool("cap_hello_greet", {"name": "Lin"}))
        out["restricted_hello"] = pending
        out["restricted_approvals"] = summary(await s.call_tool("wcp_approvals_list", {}))
        hall = (pending["meta"] or {}).get("wcp-hall/dispatch") or {}
        approval_id = (hall.get("pending_approval") or {}).get("pending_approval_id")
        if approval_id:
            out["restricted_resolve"] = summary(
                await s.call_tool(
                    "wcp_approval_resolve", {"id": approval_id, "action": "approve", "note": "mcp test"}
                )
            )

    await session(server(socket, "--data-label", "RESTRICTED"), restricted)

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
